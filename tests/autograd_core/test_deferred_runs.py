"""A shared weight's deferred factors are stacked by runs as the sweep goes (sweep_state._RUN uses
at a time) instead of all at the end: the same stacks, so the same gradient to the bit, for
any number of uses, dtypes mixed within a run, and an in-place change found as before. The
uses' inputs are checked for in-place changes when their factors are stacked (and then let go):
a change made later cannot reach the product, as in PyTorch, where a saved tensor is checked when
its rule reads it."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core import sweep_state
from autograd_core.tensor import Tensor


def _unroll(w, h0, xs):
    h = h0
    for x in xs:
        h = ag.tanh(ag.linear(h, w) + x)
    return (h * h).sum()


def _grads(uses, dtype=np.float32, run=None, monkeypatch=None, xdtype=None):
    rng = np.random.default_rng(uses)
    w = Tensor((rng.standard_normal((8, 8)) * 0.3).astype(dtype), requires_grad=True)
    h0 = Tensor(rng.standard_normal((3, 8)).astype(dtype), requires_grad=True)
    xs = [Tensor(rng.standard_normal((3, 8)).astype(xdtype or dtype)) for _ in range(uses)]
    if run is not None:
        monkeypatch.setattr(sweep_state, "_RUN", run)
    _unroll(w, h0, xs).backward()
    return w.grad.numpy(), h0.grad.numpy()


@pytest.mark.parametrize("uses", [1, 2, 63, 64, 65, 128, 129, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_runs_give_the_same_bits_as_one_stack_at_the_end(monkeypatch, uses, dtype):
    with monkeypatch.context() as m:
        want = _grads(uses, dtype, run=10**9, monkeypatch=m)  # never a run: all at the end
    for run in (sweep_state._RUN, 1, 2, 7):
        with monkeypatch.context() as m:
            got = _grads(uses, dtype, run=run, monkeypatch=m)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_factors_of_mixed_dtypes_in_one_run(monkeypatch):
    """float32 states, float64 inputs from step 3 on: the factors change dtype inside a run
    and between runs; the stacks promote alike."""
    def grads(run):
        rng = np.random.default_rng(5)
        w = Tensor((rng.standard_normal((4, 4)) * 0.3).astype(np.float32), requires_grad=True)
        h = Tensor(rng.standard_normal((2, 4)).astype(np.float32), requires_grad=True)
        for t in range(20):
            x = rng.standard_normal((2, 4)).astype(np.float64 if t >= 3 else np.float32)
            h = ag.tanh(ag.linear(h, w) + Tensor(x))
        with monkeypatch.context() as m:
            m.setattr(sweep_state, "_RUN", run)
            h.sum().backward()
        return w.grad.numpy()

    want = grads(10**9)
    for run in (2, 3, 5):
        got = grads(run)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    assert want.dtype == np.float32  # the weight's gradient keeps its own dtype


def test_the_gradient_is_the_sum_of_the_uses_products():
    rng = np.random.default_rng(3)
    w = Tensor(rng.standard_normal((5, 5)) * 0.2, requires_grad=True)
    xs = [Tensor(rng.standard_normal((2, 5))) for _ in range(150)]
    outs = [ag.linear(x, w) for x in xs]  # 150 uses of w, each its own branch
    total = outs[0].sum()
    for o in outs[1:]:
        total = total + (o * o).sum()
    total.backward()
    want = np.ones((5, 2)) @ xs[0].numpy()
    for x, o in zip(xs[1:], outs[1:]):
        want += (2 * o.numpy()).T @ x.numpy()
    np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-12, atol=1e-12)


def test_an_in_place_change_by_a_hook_after_a_run_is_still_found(monkeypatch):
    """A hook changes a state that early uses read, after their factors were stacked: the
    sweep refuses, as it did when the factors waited for the end."""
    monkeypatch.setattr(sweep_state, "_RUN", 4)
    rng = np.random.default_rng(4)
    w = Tensor(rng.standard_normal((3, 3)) * 0.3, requires_grad=True)
    h0 = Tensor(rng.standard_normal((1, 3)), requires_grad=True)
    h = ag.tanh(ag.linear(h0, w))
    early = h
    for _ in range(12):
        h = ag.tanh(ag.linear(h, w))

    def change(g):  # runs when the sweep reaches early, long after the later uses' runs
        early.data = np.zeros_like(early.data)  # assigning .data is an in-place change

    early.register_hook(change)
    h0_grad_before = h0.grad
    with pytest.raises(RuntimeError, match="modified in place"):
        h.sum().backward()
    assert h0_grad_before is None and h0.grad is None and w.grad is None


@pytest.mark.parametrize("run", [64, 10**9])
def test_a_hook_changing_its_gradient_in_place_changes_only_its_own(monkeypatch, run):
    """A bias of shape (n, out) gets the linear's gradient array itself, which is also the
    weight's deferred left factor: the bias's hook multiplies its argument in place. The
    bias's own gradient is changed, the weight's is the true one, whatever the runs."""
    monkeypatch.setattr(sweep_state, "_RUN", run)
    rng = np.random.default_rng(1)
    w = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    p = Tensor(rng.standard_normal((1, 3)), requires_grad=True)
    bias = p * 1.0  # recorded before every use: the sweep reaches it last
    bias.register_hook(lambda g: g.data.__imul__(100.0))
    xs = [rng.standard_normal((1, 2)) for _ in range(70)]
    total = None
    for k, x in enumerate(xs):
        s = (ag.linear(Tensor(x), w, bias if k == 69 else None) * float(k + 1)).sum()
        total = s if total is None else total + s
    total.backward()
    want_w = sum(float(k + 1) * np.ones((3, 1)) @ x for k, x in enumerate(xs))
    np.testing.assert_allclose(w.grad.numpy(), want_w, rtol=1e-12)
    np.testing.assert_allclose(p.grad.numpy(), 100.0 * 70.0 * np.ones((1, 3)), rtol=1e-12)


def _uses_with_a_late_hook(change_use, run, monkeypatch):
    """W read by 10 uses linear(x_k, W); a bias node, recorded before every use, is reached
    after all of them, and its hook changes x_{change_use} in place. Returns (the error or
    None, W.grad or None, W's gradient from the original xs)."""
    monkeypatch.setattr(sweep_state, "_RUN", run)
    rng = np.random.default_rng(5)
    w = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    p = Tensor(rng.standard_normal((1, 3)), requires_grad=True)
    bias = p * 1.0  # recorded first: the sweep reaches it last
    xs = [Tensor(rng.standard_normal((1, 2))) for _ in range(10)]
    originals = [x.numpy().copy() for x in xs]

    def change(g):
        with ag.no_grad():
            xs[change_use].add_(1.0)

    bias.register_hook(change)
    total = None
    for k, x in enumerate(xs):
        s = (ag.linear(x, w, bias if k == 9 else None) * float(k + 1)).sum()
        total = s if total is None else total + s
    want = sum(float(k + 1) * np.ones((3, 1)) @ x for k, x in enumerate(originals))
    try:
        total.backward()
    except RuntimeError as error:
        return error, w.grad, want
    return None, w.grad.numpy(), want


@pytest.mark.parametrize("run", [4, 64, 10**9])
def test_a_change_to_an_input_of_a_use_not_stacked_yet_is_refused(monkeypatch, run):
    """x_0 is read by the oldest use, whose factors wait (10 uses: 9..6 and 5..2 are runs of
    4, 1 and 0 are not): the change would reach W's product, so the sweep refuses, whatever
    the runs, and writes no .grad."""
    error, grad, _ = _uses_with_a_late_hook(0, run, monkeypatch)
    assert error is not None and "modified in place" in str(error)
    assert grad is None


def test_a_change_after_a_use_was_stacked_cannot_reach_the_product(monkeypatch):
    """x_9 is read by the newest use, stacked into a run (copied) before the hook runs: the
    product is made from the values the forward saw, and W.grad is the true gradient."""
    error, grad, want = _uses_with_a_late_hook(9, 4, monkeypatch)
    assert error is None
    np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-12)


def test_without_runs_the_same_change_is_refused(monkeypatch):
    """Without runs (all factors wait for the end) x_9's factor is x_9's array itself, which
    the change would reach: refused."""
    error, grad, _ = _uses_with_a_late_hook(9, 10**9, monkeypatch)
    assert error is not None and "modified in place" in str(error) and grad is None
