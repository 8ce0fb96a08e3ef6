"""repr(ag.replay(fn)) says what each argument signature met so far gets: replayed, recorded
once (waiting for the second recording that confirms it), or run eagerly and why."""
import warnings

import numpy as np

import autograd_core as ag


def _quiet_calls(step, *calls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ag.ReplayWarning)
        for args in calls:
            step(*args).backward()


def _square_sum(w):
    def fn(x):
        return ((x @ w) ** 2).sum()
    return fn


def test_a_replay_with_nothing_recorded_says_so():
    """Not called yet, or called only where it runs eagerly without recording (no_grad)."""
    want = "Replay(_square_sum.<locals>.fn, batch=True; no signature recorded yet)"
    w = ag.Tensor(np.ones((3, 2)), requires_grad=True)
    step = ag.replay(_square_sum(w))
    assert repr(step) == want
    with ag.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ag.ReplayWarning)
        assert step(np.ones((4, 3))).item() == 4 * 2 * 3.0 ** 2  # it ran, eagerly
    assert repr(step) == want


def test_each_signature_is_recorded_once_then_replayed():
    w = ag.Tensor(np.ones((3, 2)), requires_grad=True)
    step = ag.replay(_square_sum(w), batch=False)
    x4, x5 = np.ones((4, 3)), np.ones((5, 3))
    _quiet_calls(step, (x4,))
    assert repr(step) == ("Replay(_square_sum.<locals>.fn, batch=False\n"
                          "  (shapes (4, 3)): recorded once; the next call records it again "
                          "to confirm the graph\n)")
    _quiet_calls(step, (x4,), (x5,))
    assert repr(step) == ("Replay(_square_sum.<locals>.fn, batch=False\n"
                          "  (shapes (4, 3)): replayed\n"
                          "  (shapes (5, 3)): recorded once; the next call records it again "
                          "to confirm the graph\n)")


def test_a_signature_that_runs_eagerly_says_why():
    w = ag.Tensor(np.ones((3, 2)), requires_grad=True)

    def reads_a_value(x):
        y = (x @ w).sum()
        return y * 2 if y.item() > 0 else y
    step = ag.replay(reads_a_value)
    _quiet_calls(step, (np.ones((4, 3)),))
    text = repr(step)
    assert text.startswith("Replay(test_a_signature_that_runs_eagerly_says_why.<locals>."
                           "reads_a_value, batch=True\n  (shapes (4, 3)): runs eagerly: ")
    assert "item()" in text
    assert w.grad is not None and np.all(w.grad.numpy() == 8.0)  # it ran, eagerly


def test_a_signature_added_while_the_repr_is_made_does_not_break_it(monkeypatch):
    """Another thread may call the function (and record a new signature) while one prints
    it: the repr reads a copy of the signatures. The other thread is stood in for by the
    repr's own description of a signature, which adds one."""
    from autograd_core import replayer

    w = ag.Tensor(np.ones((3, 2)), requires_grad=True)
    step = ag.replay(_square_sum(w))
    _quiet_calls(step, (np.ones((4, 3)),))
    describe = replayer.describe

    def describing_while_a_call_records(key):
        step.plans[("another",)] = "a reason"
        return describe(key)

    monkeypatch.setattr(replayer, "describe", describing_while_a_call_records)
    assert repr(step).startswith("Replay(_square_sum.<locals>.fn, batch=True\n  (shapes (4, 3)): "
                                 "recorded once")
