"""record() reads grad mode, the step scope and anomaly mode through one per-thread value
(grad_mode._state.recording): every way of changing them must reach it, per thread."""
import threading

import numpy as np

import autograd_core as ag
from autograd_core.grad_mode import _state


def _node(x):
    return x * 2.0


def test_every_switch_reaches_record_and_is_undone():
    x = ag.Tensor(np.ones(3, np.float32), requires_grad=True)
    assert _state.recording == (None, False)
    with ag.no_grad():
        assert not _node(x).requires_grad
        with ag.enable_grad():
            assert _node(x).requires_grad
        assert not _node(x).requires_grad
    with ag.step_scope(7):
        y = _node(x)
        with ag.no_grad():
            assert not _node(x).requires_grad
        z = _node(x)
    assert y._step == 7 and z._step == 7 and _node(x)._step is None
    with ag.detect_anomaly():
        assert _state.recording[1] is True
        with ag.step_scope(3):
            assert _state.recording == (3, True)
    assert _state.recording == (None, False)
    with ag.set_grad_enabled(False):
        assert _state.recording is None
    assert _state.recording == (None, False)


def test_an_exception_inside_restores_the_mode():
    x = ag.Tensor(np.ones(3, np.float32), requires_grad=True)
    try:
        with ag.step_scope(5), ag.no_grad():
            raise KeyError
    except KeyError:
        pass
    assert _state.recording == (None, False) and _node(x).requires_grad


def test_threads_keep_their_own_mode():
    x = ag.Tensor(np.ones(3, np.float32), requires_grad=True)
    inside, release, seen = threading.Event(), threading.Event(), {}

    def quiet():
        with ag.no_grad(), ag.step_scope(9):
            inside.set()
            release.wait(5)
            seen["quiet"] = _node(x).requires_grad

    t = threading.Thread(target=quiet)
    t.start()
    inside.wait(5)
    y = _node(x)  # this thread records, with no step, while the other is in no_grad
    seen["main"] = (y.requires_grad, y._step)
    fresh = {}
    u = threading.Thread(target=lambda: fresh.update(mode=_state.recording))
    u.start()
    u.join()
    release.set()
    t.join()
    assert seen == {"quiet": False, "main": (True, None)}
    assert fresh["mode"] == (None, False)  # a new thread starts recording, no step


def test_backward_restores_grad_mode_even_when_a_hook_raises():
    x = ag.Tensor(np.ones(3), requires_grad=True)
    y = x * 2.0

    def hook(g):
        raise RuntimeError("stop")

    y.register_hook(hook)
    try:
        y.sum().backward()
    except RuntimeError:
        pass
    assert ag.is_grad_enabled() and _state.recording == (None, False)
    with ag.no_grad():
        z = x * 2.0
        (x * 3.0).detach()  # nothing recorded
    assert not z.requires_grad and ag.is_grad_enabled()
