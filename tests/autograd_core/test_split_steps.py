"""The eager sweep's step for an op with a split rule (linear, addmm: sweep_steps.py), made
from the op's inline_split for any node: the same bits as the general path (the split rule,
the weight's product deferred or made at once, the adding loop) on every kind of node, and it
steps aside for a weight without a gradient and for a split rule put in its place."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core.ops.linalg import AddMM, Linear, MatMul
from autograd_core.tensor import Tensor

SPLIT_OPS = (Linear, AddMM)


def _without_steps(fn):
    kept = {op: op.__dict__["sweep_step"] for op in SPLIT_OPS}
    try:
        for op in SPLIT_OPS:
            op.sweep_step = None
        return fn()
    finally:
        for op, step in kept.items():
            op.sweep_step = step


def _grads(build, leaves):
    for t in leaves:
        t.grad = None
    build().backward()
    return [None if t.grad is None else t.grad.numpy().copy() for t in leaves]


def _same_bits(got, want):
    for a, b in zip(got, want):
        if b is None:
            assert a is None
            continue
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def _both(build, leaves):
    with_steps = _grads(build, leaves)
    assert Linear.sweep_step is None or Linear.sweep_step[1] is not None
    without = _without_steps(lambda: _grads(build, leaves))
    _same_bits(with_steps, without)
    return with_steps


def _t(rng, shape, dtype=np.float32, grad=True):
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=grad)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gives_the_general_paths_bits(dtype, bias):
    rng = np.random.default_rng(1)
    x, w, b = _t(rng, (5, 3), dtype), _t(rng, (4, 3), dtype), _t(rng, (4,), dtype)
    leaves = [x, w, b] if bias else [x, w]
    got = _both(lambda: (ag.tanh(ag.linear(x, w, b if bias else None)) * 1.5).sum(), leaves)
    # and they are the gradients: d sum(tanh(x W^T + b) * 1.5)
    z = x.numpy().astype(np.float64) @ w.numpy().T.astype(np.float64)
    z = z + (b.numpy() if bias else 0)
    gz = 1.5 * (1 - np.tanh(z) ** 2)
    tol = {np.float16: 3e-2, np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(got[0], gz @ w.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(got[1], gz.T @ x.numpy(), rtol=tol, atol=tol)
    if bias:
        np.testing.assert_allclose(got[2], gz.sum(axis=0), rtol=tol, atol=tol)


def test_a_weight_shared_by_several_uses_is_deferred_and_stacked_as_before():
    """A recurrence: the same W and bias at every step (the defer branch), the input's
    gradient flowing on from step to step."""
    rng = np.random.default_rng(2)
    w, b, h0 = _t(rng, (6, 6)), _t(rng, (6,)), _t(rng, (3, 6))

    def build():
        h = h0
        for _ in range(7):
            h = ag.tanh(ag.linear(h, w, b))
        return (h * h).sum()

    _both(build, [w, b, h0])


def test_addmm_with_every_input_differentiated_or_not():
    rng = np.random.default_rng(3)
    for need in [(True, True, True), (False, True, True), (True, False, True),
                 (True, True, False)]:
        c, a, bm = (_t(rng, s, grad=n) for s, n in zip([(4,), (3, 5), (5, 4)], need))
        leaves = [t for t in (c, a, bm) if t.requires_grad]
        _both(lambda: ag.tanh(ag.addmm(c, a, bm)).sum(), leaves)


def test_a_weight_without_gradient_runs_the_rule():
    rng = np.random.default_rng(4)
    x, w, b = _t(rng, (2, 3)), _t(rng, (4, 3), grad=False), _t(rng, (4,))
    got = _both(lambda: ag.linear(x, w, b).sum(), [x, b])
    np.testing.assert_allclose(got[0], np.ones((2, 4), np.float32) @ w.numpy(), rtol=1e-6)
    assert w.grad is None


@pytest.mark.parametrize("shapes", [((1, 1), (1, 1)), ((1, 1), (3, 1)), ((4, 1), (1, 1)),
                                    ((1, 3), (1, 3))])
def test_one_by_one_products_take_products_own_path(shapes):
    """Where product does not take the array's dot (a 1x1 operand: dot's bits differ), the
    step calls product: -0.0 stays as np.matmul gives it."""
    xs, ws = shapes
    x = Tensor(np.full(xs, -1.0), requires_grad=True)
    w = Tensor(np.zeros(ws), requires_grad=True)
    b = Tensor(np.zeros(ws[0]), requires_grad=True)
    _both(lambda: (ag.linear(x, w, b) * -0.0).sum(), [x, w, b])


def test_mixed_dtypes_give_the_general_paths_bits():
    rng = np.random.default_rng(5)
    x, w, b = _t(rng, (3, 4), np.float32), _t(rng, (2, 4), np.float64), _t(rng, (2,))
    got = _both(lambda: ag.linear(x, w, b).sum(), [x, w, b])
    assert got[0].dtype == np.float32 and got[1].dtype == np.float64


def test_a_split_rule_put_in_place_is_what_runs(monkeypatch):
    rng = np.random.default_rng(6)
    x, w, b = _t(rng, (3, 2), np.float64), _t(rng, (2, 2), np.float64), _t(rng, (2,))
    want = _grads(lambda: ag.linear(x, w, b).sum(), [x, w, b])
    assert Linear.sweep_step is not None and Linear.sweep_step[1].__name__ == "step"
    original = Linear.backward_split

    def tripled(g, out):
        grads, left, right = original(g, out)
        return (grads[0] * 3,) + grads[1:], left, right

    monkeypatch.setattr(Linear, "backward_split", staticmethod(tripled))
    got = _grads(lambda: ag.linear(x, w, b).sum(), [x, w, b])
    np.testing.assert_array_equal(got[0], 3 * want[0])
    np.testing.assert_array_equal(got[1], want[1])
    monkeypatch.undo()
    _same_bits(_grads(lambda: ag.linear(x, w, b).sum(), [x, w, b]), want)


def test_matmul_has_no_step_for_every_node_and_keeps_its_split():
    rng = np.random.default_rng(8)
    a, b = _t(rng, (3, 4), np.float64), _t(rng, (4, 2), np.float64)
    v = _t(rng, (4,), np.float64)
    (a @ b).sum().backward()
    (v @ b).sum().backward()
    assert MatMul.sweep_step is None
    np.testing.assert_allclose(v.grad.numpy(), b.numpy().sum(axis=1), rtol=1e-12)


def test_create_graph_and_observers_take_the_general_path():
    rng = np.random.default_rng(9)
    x, w, b = _t(rng, (3, 2), np.float64), _t(rng, (2, 2), np.float64), _t(rng, (2,),
                                                                             np.float64)
    gx, gw = ag.grad((ag.linear(x, w, b) ** 2).sum(), [x, w], create_graph=True)
    (gx.sum() + gw.sum()).backward()
    assert x.grad is not None and w.grad is not None
    want_gx = 2 * (x.numpy() @ w.numpy().T + b.numpy()) @ w.numpy()
    np.testing.assert_allclose(gx.numpy(), want_gx, rtol=1e-12)


def test_the_step_itself_adds_the_gradients_it_is_made_for():
    """Called by hand on a node: it does the work (no stepping aside), the weight's product
    made at once for a weight of one use, kept for a shared one."""
    from autograd_core.sweep_state import _Sweep
    rng = np.random.default_rng(10)
    x, w, b = _t(rng, (3, 2), np.float64), _t(rng, (4, 2), np.float64), _t(rng, (4,),
                                                                             np.float64)
    ag.linear(x, w, b).sum().backward()  # the step is made on first use
    step = Linear.sweep_step[1]
    out = ag.linear(x, w, b)
    g = rng.standard_normal((3, 4))
    for shared in ((), (w,)):
        sweep = _Sweep(False, None, shared)
        assert step(out, g, sweep.acc, sweep.owned, sweep) is None
        np.testing.assert_array_equal(sweep.acc[x], g @ w.numpy())
        np.testing.assert_array_equal(sweep.acc[b], g.sum(axis=0))
        if shared:
            assert w not in sweep.acc and len(sweep.pending[w]) == 1
        else:
            np.testing.assert_array_equal(sweep.acc[w], g.T @ x.numpy())
            assert w in sweep.owned and b in sweep.owned and x not in sweep.owned
