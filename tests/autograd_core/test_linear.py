"""linear / addmm and the sweep's batched weight gradient: a matrix used by many products (a
recurrent weight over T steps) gets its gradient as one stacked product. The fast path must
give what the plain rules give, whatever else touches the weight."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core.ops import linalg


def normal(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


_SPLIT_OPS = (linalg.Linear, linalg.AddMM, linalg.MatMul)
_FAST = {op: op.fast_backward for op in _SPLIT_OPS}


def plain_rules():
    """Turn the batched path off (restored by the fixture below)."""
    for op in _SPLIT_OPS:
        op.fast_backward = None


@pytest.fixture
def restore_batched():
    yield
    for op in _SPLIT_OPS:
        op.fast_backward = _FAST[op]


def unrolled(w, u, xs, h0, extra_use):
    """A tanh RNN over xs with w used by every step (linear), u by addmm, and optionally a
    non-matrix use of w (an elementwise penalty) beside them."""
    h = h0
    total = 0
    for x in xs:
        h = ag.tanh(ag.linear(h, w, ag.addmm(0.1, x, u)))
        total = total + (h * h).sum()
    if extra_use:
        total = total + (w * w).sum() * 0.5 + (h @ w).sum()
    return total


@pytest.mark.parametrize("extra_use", [False, True])
def test_batched_weight_gradient_equals_plain_rules(extra_use, restore_batched):
    rng = np.random.default_rng(0)
    w = ag.Tensor(normal(rng, (4, 4)) * 0.5, requires_grad=True)
    u = ag.Tensor(normal(rng, (3, 4)), requires_grad=True)
    xs = [ag.Tensor(normal(rng, (2, 3))) for _ in range(6)]
    h0 = ag.Tensor(normal(rng, (2, 4)), requires_grad=True)
    unrolled(w, u, xs, h0, extra_use).backward()
    fast = [t.grad.numpy().copy() for t in (w, u, h0)]
    for t in (w, u, h0):
        t.grad = None
    plain_rules()
    unrolled(w, u, xs, h0, extra_use).backward()
    for got, t in zip(fast, (w, u, h0)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_batched_weight_gradient_against_finite_differences():
    rng = np.random.default_rng(1)
    xs = [ag.Tensor(normal(rng, (3, 3))) for _ in range(5)]
    h0 = ag.Tensor(normal(rng, (3, 4)))
    u = ag.Tensor(normal(rng, (3, 4)))
    w = ag.Tensor(normal(rng, (4, 4)) * 0.5, requires_grad=True)
    assert ag.gradcheck(lambda w: unrolled(w, u, xs, h0, True), (w,))


def test_weight_as_input_of_its_own_product():
    # linear(W, W) = W W^T: W is both the deferred weight and the input
    rng = np.random.default_rng(2)
    w = ag.Tensor(normal(rng, (3, 3)), requires_grad=True)
    (ag.linear(w, w) ** 2).sum().backward()
    wv = w.numpy()
    expected = 4 * (wv @ wv.T) @ wv  # d/dW ||W W^T||^2
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12)


def test_anomaly_mode_and_trace_give_the_same_gradients():
    rng = np.random.default_rng(3)
    w = ag.Tensor(normal(rng, (4, 4)) * 0.5, requires_grad=True)
    u = ag.Tensor(normal(rng, (3, 4)), requires_grad=True)
    xs = [ag.Tensor(normal(rng, (2, 3))) for _ in range(4)]
    h0 = ag.Tensor(normal(rng, (2, 4)))
    unrolled(w, u, xs, h0, True).backward()
    fast = w.grad.numpy().copy()
    w.grad = None
    with ag.detect_anomaly():
        unrolled(w, u, xs, h0, True).backward()
    np.testing.assert_allclose(w.grad.numpy(), fast, rtol=1e-12)
    traced = ag.trace_backward(unrolled(w, u, xs, h0, True), params={"w": w})
    np.testing.assert_allclose(traced.gradients["w"], fast, rtol=1e-12)


def test_handed_over_gradient_is_not_shared():
    # the weight's gradient is a fresh array from the stacked product: .grad may own it,
    # and a second backward adds into .grad without touching anything else
    rng = np.random.default_rng(4)
    w = ag.Tensor(normal(rng, (4, 4)), requires_grad=True)
    x = ag.Tensor(normal(rng, (2, 4)))
    seen = []
    w.register_hook(lambda g: seen.append(g.numpy().copy()))
    ag.linear(x, w).sum().backward()
    first = w.grad.numpy().copy()
    np.testing.assert_allclose(seen[0], first)
    ag.linear(x, w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * first)
    np.testing.assert_allclose(seen[0], first)  # the hook's copy was not written into


def test_linear_bias_dtype_promotes_as_numpy():
    rng = np.random.default_rng(5)
    x = ag.Tensor(normal(rng, (2, 3), np.float32), requires_grad=True)
    w = ag.Tensor(normal(rng, (4, 3), np.float32), requires_grad=True)
    b = ag.Tensor(normal(rng, (4,), np.float64), requires_grad=True)
    y = ag.linear(x, w, b)
    expected = x.numpy() @ w.numpy().T + b.numpy()
    assert y.dtype == expected.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)
    y.sum().backward()
    assert x.grad.dtype == w.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_allclose(b.grad.numpy(), np.full(4, 2.0))
    np.testing.assert_allclose(w.grad.numpy(), np.tile(x.numpy().sum(axis=0), (4, 1)),
                               rtol=1e-6)


@pytest.mark.parametrize("fn, args, message", [
    (ag.linear, ((2, 3), (4, 2)), "linear: needs x (n, in) and weight (out, in)"),
    (ag.linear, ((3,), (4, 3)), "linear: needs x (n, in) and weight (out, in)"),
    (ag.linear, ((2, 3), (4, 3), (5,)), "linear: the bias of shape (5,)"),
    (ag.linear, ((2, 3), (4, 3), (3, 2, 4)), "linear: the bias of shape (3, 2, 4)"),
    (ag.addmm, ((2, 4), (2, 3), (3, 4, 1)), "addmm: needs 2-D a (n, k) and b (k, m)"),
    (ag.addmm, ((3, 2, 4), (2, 3), (3, 4)), "addmm: the bias of shape (3, 2, 4)"),
])
def test_bad_shapes_name_the_op(fn, args, message):
    tensors = [ag.Tensor(np.ones(s)) for s in args]  # addmm(c, a, b): c's shape first
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fn(*tensors)


def test_product_takes_the_same_call_as_before_its_fast_path():
    """linalg.product first asks cheaply for the common case (one dtype object, 2-D, more
    than one element each): the call it makes, and so the bits, are those of the full rule
    (dot for 2-D operands of one dtype unless both are 1x1, np.matmul otherwise)."""
    from autograd_core.ops.linalg import product

    def full_rule(a, b):
        if a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.size + b.size > 2:
            return a.dot(b)
        return np.matmul(a, b)

    rng = np.random.default_rng(3)
    shapes = [((1, 1), (1, 1)), ((1, 1), (1, 3)), ((3, 1), (1, 1)), ((2, 3), (3, 4)),
              ((1, 32), (32, 32)), ((4, 0), (0, 5)), ((1, 2), (2, 0)), ((3,), (3, 2)),
              ((2, 3, 4), (4, 2)), ((5, 3), (3,))]
    for (sa, sb) in shapes:
        for da, db in [(np.float64, np.float64), (np.float32, np.float32),
                       (np.float32, np.float64), (np.float16, np.float16)]:
            a = rng.standard_normal(sa).astype(da)
            b = rng.standard_normal(sb).astype(db)
            if a.ndim == 2:
                a[..., :1] = -1.0
            for left, right in ((a, b), (a.T if a.ndim == 2 else a, b)):
                if left.shape[-1] != right.shape[0]:
                    continue
                got, want = product(left, right), full_rule(left, right)
                assert got.dtype == want.dtype and got.shape == want.shape
                assert got.tobytes() == want.tobytes(), (sa, sb, da, db)
    neg = product(np.array([[-1.0]]), np.array([[0.0]]))
    assert np.signbit(neg).tolist() == [[False]]  # np.matmul's 0.0 where dot gives -0.0
