"""Grad mode, anomaly mode and step scopes are per thread: two threads whose forwards
interleave (a Barrier between layers, a tiny GIL switch interval) train independently and get
exactly the gradients each gets alone."""
import sys
import threading
from contextlib import contextmanager, nullcontext

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.anomaly import _origin
import nn
from nn import optim

STEPS = 4


def _no_sync():
    pass


def _forward(model, x, sync):
    """The MLP's forward, one layer at a time, meeting the other thread between layers."""
    h = x
    for k, layer in enumerate(model.layers):
        sync()
        h = layer(h)
        if k < len(model.layers) - 1:
            sync()
            h = ag.tanh(h)
    sync()
    return h


def _train(seed, sync, eval_first, anomaly=False, nan_on_the_side=False):
    """STEPS steps of SGD on an MLP; each step also evaluates the model under no_grad, before
    or after its training forward. Returns the gradients and evaluations of every step."""
    rng = np.random.default_rng(seed)
    model = nn.MLP([3, 8, 8, 2], rng=seed, dtype=np.float64)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = rng.standard_normal((16, 3)), rng.standard_normal((16, 2))
    grads, evals = [], []
    with ag.detect_anomaly(check_forward=True) if anomaly else nullcontext():
        for _ in range(STEPS):
            for phase in ("eval", "train") if eval_first else ("train", "eval"):
                if phase == "eval":
                    with ag.no_grad():
                        assert not ag.is_grad_enabled()
                        out = _forward(model, x, sync)
                    assert out._op is None and not out.requires_grad
                    evals.append(out.data.copy())
                else:
                    assert ag.is_grad_enabled()
                    pred = _forward(model, x, sync)
                    assert pred._op is not None
                    assert (_origin(pred) is not None) == anomaly
                    if nan_on_the_side:  # nan in a forward value: checked only in anomaly mode
                        with np.errstate(all="ignore"):
                            side = ag.log(-ag.abs(pred) - 1.0)
                        assert np.isnan(side.data).all() and _origin(side) is None
                    loss = nn.mse_loss(pred, y)
            opt.zero_grad()
            loss.backward()
            grads.append({n: p.grad.data.copy() for n, p in model.named_parameters()})
            opt.step()
    return grads, evals


@contextmanager
def _fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _run_pair(jobs):
    """Run the jobs (functions of a sync callable) in two threads that meet at a Barrier."""
    barrier = threading.Barrier(len(jobs), timeout=20)
    results, errors = [None] * len(jobs), []

    def worker(k):
        try:
            results[k] = jobs[k](barrier.wait)
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(jobs))]
    with _fast_switching():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


def _assert_same(run, alone):
    (grads, evals), (grads0, evals0) = run, alone
    assert len(grads) == len(grads0) == STEPS and len(evals) == len(evals0) == STEPS
    for g, g0 in zip(grads, grads0):
        assert g.keys() == g0.keys()
        for name in g:
            np.testing.assert_array_equal(g[name], g0[name], err_msg=name)
    for e, e0 in zip(evals, evals0):
        np.testing.assert_array_equal(e, e0)


def test_no_grad_in_one_thread_does_not_stop_recording_in_the_other():
    # Thread 0 trains while thread 1 evaluates under no_grad, and the other way round.
    alone = [_train(0, _no_sync, eval_first=False), _train(1, _no_sync, eval_first=True)]
    together = _run_pair([lambda sync: _train(0, sync, eval_first=False),
                          lambda sync: _train(1, sync, eval_first=True)])
    for run, ref in zip(together, alone):
        _assert_same(run, ref)
    assert ag.is_grad_enabled()


def test_a_thread_that_is_all_no_grad_leaves_the_other_untouched():
    def evaluate_only(sync):
        model = nn.MLP([3, 8, 8, 2], rng=5, dtype=np.float64)
        x = ag.Tensor(np.ones((16, 3)), requires_grad=True)
        with ag.no_grad():
            for _ in range(STEPS * 2):
                out = _forward(model, x, sync)
                assert out._op is None and out._inputs == () and not out.requires_grad
        return out.data

    alone = _train(0, _no_sync, eval_first=False)
    run, _ = _run_pair([lambda sync: _train(0, sync, eval_first=False), evaluate_only])
    _assert_same(run, alone)


def test_anomaly_mode_in_one_thread_does_not_check_the_other():
    alone = [_train(2, _no_sync, eval_first=False, anomaly=True),
             _train(3, _no_sync, eval_first=True, nan_on_the_side=True)]
    together = _run_pair([
        lambda sync: _train(2, sync, eval_first=False, anomaly=True),
        lambda sync: _train(3, sync, eval_first=True, nan_on_the_side=True)])
    for run, ref in zip(together, alone):
        _assert_same(run, ref)
    assert not ag.is_anomaly_enabled()


def test_anomaly_mode_still_raises_in_its_own_thread_while_the_other_runs():
    def checked(sync):
        with ag.detect_anomaly(check_forward=True):
            sync()
            x = ag.Tensor(np.array([-1.0]), requires_grad=True)
            with np.errstate(all="ignore"), pytest.raises(ag.AnomalyError, match="forward of log"):
                ag.log(x)
            sync()
        return "raised"

    def unchecked(sync):
        sync()
        assert not ag.is_anomaly_enabled()
        sync()
        return _train(4, _no_sync, eval_first=False)

    raised, run = _run_pair([checked, unchecked])
    assert raised == "raised"
    _assert_same(run, _train(4, _no_sync, eval_first=False))


def test_step_scopes_are_per_thread():
    def unrolled(sync):
        W = ag.Tensor(np.eye(3) * 0.5, requires_grad=True)
        h, hs = ag.Tensor(np.ones((2, 3))), []
        for t in range(5):
            with ag.step_scope(t):
                sync()  # the other thread records while this one is inside step t
                h = ag.tanh(h @ W)
                sync()
            hs.append(h)
        return [h.step for h in hs]

    def plain(sync):
        x = ag.Tensor(np.ones((2, 3)), requires_grad=True)
        ys = []
        for _ in range(5):
            sync()
            assert ag.current_step() is None
            ys.append(ag.tanh(x * 2.0))
            sync()
        return [y.step for y in ys]

    assert _run_pair([unrolled, plain]) == [[0, 1, 2, 3, 4], [None] * 5]
    assert ag.current_step() is None
