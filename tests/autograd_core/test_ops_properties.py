"""Derivative rules at the edges: repeated indices, ties, large logits, dtypes, and a check
that gradcheck / gradgradcheck do catch wrong rules."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd_core as ag
from autograd_core.function import Op, record


def leaf(values, dtype=np.float64):
    return ag.Tensor(np.array(values, dtype=dtype), requires_grad=True)


# ---- integer-array indexing with repeated indices accumulates (np.add.at) ---------------------
@pytest.mark.parametrize("shape, index", [
    ((5,), np.array([0, 2, 2, 4, 2, -1])),
    ((5,), [1, 1, 1]),
    ((4, 3), (np.array([0, 3, 0, 0]), np.array([1, 2, 1, -2]))),
    ((4, 3), (slice(None), np.array([2, 2, 0]))),
    ((4, 3), np.array([[1, 1], [3, 1]])),
    ((3, 2, 2), (Ellipsis, np.array([1, 1, 1]))),
    ((4, 3), ag.Tensor(np.array([2, 2, 0]))),
])
@pytest.mark.parametrize("create_graph", [False, True])
def test_repeated_indices_accumulate_like_np_add_at(shape, index, create_graph):
    rng = np.random.default_rng(0)
    x = leaf(rng.standard_normal(shape))
    y = x[index]
    w = rng.standard_normal(y.shape)
    (gx,) = ag.grad(y, x, grad_outputs=w, create_graph=create_graph)
    np_index = index.numpy() if isinstance(index, ag.Tensor) else index
    expected = np.zeros(shape)
    np.add.at(expected, np_index, w)
    np.testing.assert_array_equal(y.numpy(), x.numpy()[np_index])
    np.testing.assert_allclose(gx.numpy(), expected, rtol=1e-15)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
       count=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_repeated_indices_along_axis0_match_np_add_at(shape, count, seed):
    rng = np.random.default_rng(seed)
    index = rng.integers(-shape[0], shape[0], size=count + 1)
    index[-1] = index[0]  # at least one repeat
    x = leaf(rng.standard_normal(shape))
    w = rng.standard_normal((count + 1,) + shape[1:])
    x[index].backward(w)
    expected = np.zeros(shape)
    np.add.at(expected, index, w)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)
    out = ag.scatter(ag.Tensor(w), shape, index)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-15)


# ---- ties -------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduce", [ag.max, ag.min])
def test_max_min_reductions_split_the_gradient_among_ties(reduce):
    sign = 1.0 if reduce is ag.max else -1.0
    x = leaf(sign * np.array([1.0, 3.0, 3.0, 2.0]))
    reduce(x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.5, 0.5, 0.0])

    x = leaf(sign * np.array([[2.0, 2.0, 2.0, 0.0], [1.0, 5.0, 4.0, 5.0], [7.0, 1.0, 2.0, 3.0]]))
    reduce(x, axis=1, keepdims=True).backward(np.array([[3.0], [1.0], [2.0]]))
    np.testing.assert_allclose(x.grad.numpy(), [[1.0, 1.0, 1.0, 0.0], [0.0, 0.5, 0.0, 0.5],
                                                [2.0, 0.0, 0.0, 0.0]], rtol=1e-15)

    x = leaf(sign * np.array([[4.0, 1.0], [0.0, 4.0]]))
    reduce(x, axis=None).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.5, 0.0], [0.0, 0.5]])


@pytest.mark.parametrize("fn", [ag.maximum, ag.minimum])
def test_maximum_minimum_give_half_to_each_side_on_ties(fn):
    a, b = leaf([1.0, 2.0, 3.0, -1.0]), leaf([1.0, 0.0, 4.0, -1.0])
    fn(a, b).backward(np.ones(4))
    wins = [0.5, 1.0, 0.0, 0.5] if fn is ag.maximum else [0.5, 0.0, 1.0, 0.5]
    np.testing.assert_array_equal(a.grad.numpy(), wins)
    np.testing.assert_array_equal(b.grad.numpy(), 1.0 - np.array(wins))

    x = leaf([1.0, 2.0])
    fn(x, x).backward(np.ones(2))  # both halves land on the same tensor
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])

    a, c = leaf([[2.0, 5.0, 2.0], [2.0, -3.0, 0.0]]), leaf(2.0)  # broadcast 0-d operand
    fn(a, c).backward(np.ones((2, 3)))
    a_share = [[0.5, 1.0, 0.5], [0.5, 0.0, 0.0]] if fn is ag.maximum else \
        [[0.5, 0.0, 0.5], [0.5, 1.0, 1.0]]
    np.testing.assert_array_equal(a.grad.numpy(), a_share)
    assert c.grad.shape == () and c.grad.item() == 6 - np.sum(a_share)


@pytest.mark.parametrize("fn", [ag.maximum, ag.minimum])
@pytest.mark.parametrize("values", [(1.0, 2.0), (2.0, 2.0)])
def test_maximum_minimum_of_two_0d_tensors(fn, values):
    a, b = leaf(values[0]), leaf(values[1])
    out = fn(a, b)
    assert out.shape == ()
    out.backward()
    assert out.item() == (max(values) if fn is ag.maximum else min(values))
    if values[0] == values[1]:
        assert (a.grad.item(), b.grad.item()) == (0.5, 0.5)
    else:
        assert (a.grad.item(), b.grad.item()) == ((0.0, 1.0) if fn is ag.maximum else (1.0, 0.0))


def test_transpose_method_takes_single_axis_like_numpy():
    x = leaf([1.0, 2.0, 3.0])
    y = x.transpose(0)  # np.arange(3.0).transpose(0) is allowed
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0, 3.0])
    y.backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 2.0, 3.0])


# ---- numerical stability ----------------------------------------------------------------------
LOGITS = np.array([[1000.0, 999.0, -1000.0, 998.5],
                   [-1000.0, -1001.0, -999.0, -1000.5],
                   [1000.0, 1000.0, 1000.0, 1000.0]])


def _softmax64(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_large_logits_give_finite_values_and_analytic_gradients(name, axis, dtype):
    # Tolerance of a backward-stable result: logits of magnitude 1000 are only known to
    # about eps * 1000 (6e-5 in float32), so x - logsumexp(x) may be off by that much.
    rtol, atol = 10 * np.finfo(dtype).eps, 2 * np.finfo(dtype).eps * np.abs(LOGITS).max()
    x64 = LOGITS.astype(dtype).astype(np.float64)
    y = _softmax64(x64, axis)
    lse = np.log(np.exp(x64 - x64.max(axis=axis, keepdims=True)).sum(axis=axis, keepdims=True)) \
        + x64.max(axis=axis, keepdims=True)
    w = np.random.default_rng(1).standard_normal(LOGITS.shape)
    if name == "softmax":
        value, grad = y, y * (w - (w * y).sum(axis=axis, keepdims=True))
    elif name == "log_softmax":
        value, grad = x64 - lse, w - y * w.sum(axis=axis, keepdims=True)
    else:
        w = w.sum(axis=axis, keepdims=True)
        value, grad = lse, w * y
        w = w.squeeze(axis)
        value = value.squeeze(axis)
    x = leaf(LOGITS, dtype)
    with np.errstate(over="raise", divide="raise", invalid="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = getattr(ag, name)(x, axis=axis)
        out.backward(w.astype(dtype))
    assert out.dtype == dtype and x.grad.dtype == dtype
    assert np.isfinite(out.numpy()).all() and np.isfinite(x.grad.numpy()).all()
    np.testing.assert_allclose(out.numpy(), value, rtol=rtol, atol=atol)
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_saturates_without_warnings(dtype):
    x = leaf([-1e4, -1000.0, 0.0, 1000.0, 1e4], dtype)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        y = ag.sigmoid(x)
        y.backward(np.ones(5, dtype))
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.25, 0.0, 0.0])


# ---- dtypes -----------------------------------------------------------------------------------
SCALAR_FORMS = [
    ("x + 2.5", lambda x: x + 2.5, "add_scalar"), ("2.5 + x", lambda x: 2.5 + x, "add_scalar"),
    ("x - 2.5", lambda x: x - 2.5, "add_scalar"), ("2.5 - x", lambda x: 2.5 - x, "rsub_scalar"),
    ("x * 2.5", lambda x: x * 2.5, "mul_scalar"), ("2.5 * x", lambda x: 2.5 * x, "mul_scalar"),
    ("x / 2.5", lambda x: x / 2.5, "div_scalar"), ("2.5 / x", lambda x: 2.5 / x, "rdiv_scalar"),
    ("x ** 2.5", lambda x: x ** 2.5, "pow_scalar"), ("x ** 2", lambda x: x ** 2, "pow_scalar"),
    ("2.5 ** x", lambda x: 2.5 ** x, "rpow_scalar"), ("2 ** x", lambda x: 2 ** x, "rpow_scalar"),
]


@pytest.mark.parametrize("label, fn, op", SCALAR_FORMS, ids=[f[0] for f in SCALAR_FORMS])
def test_python_scalars_keep_float32_and_have_their_own_op(label, fn, op):
    x = leaf([0.5, 1.0, 2.0], np.float32)
    y = fn(x)
    assert y.grad_fn is not None and y.grad_fn.name == op
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), fn(np.array([0.5, 1.0, 2.0])), rtol=1e-6)
    y.backward(np.ones(3, np.float32))
    assert x.grad.dtype == np.float32


def test_astype_float32_to_float64_forward_dtype_and_grad_dtype():
    x = leaf([0.1, -2.0, 3.5], np.float32)
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.numpy(), np.array([0.1, -2.0, 3.5], np.float32))
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy(), rtol=1e-7)


# ---- the checks themselves catch wrong rules --------------------------------------------------
class _WrongDouble(Op):  # name None: not registered
    @staticmethod
    def backward(g, out, xp):
        return (g,)  # should be 2 g


class _FrozenSquare(Op):
    @staticmethod
    def backward(g, out, xp):
        return (g * 2 * out._inputs[0]._data,)  # right value, but not differentiable again


def test_gradcheck_and_gradgradcheck_reject_wrong_rules():
    x = np.array([0.5, -1.0, 2.0])
    double = lambda t: record(_WrongDouble, 2 * t.numpy(), (t,))  # noqa: E731
    square = lambda t: record(_FrozenSquare, t.numpy() ** 2, (t,))  # noqa: E731
    with pytest.raises(ag.GradcheckError):
        ag.gradcheck(double, (x,))
    assert ag.gradcheck(square, (x,))
    with pytest.raises(ag.GradcheckError):
        ag.gradgradcheck(square, (x,))


# ---- documented values at the edges -----------------------------------------------------------
def test_subgradients_at_kinks_are_the_documented_ones():
    x = leaf([0.0, -1.0, 1.0])
    ag.abs(x).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, -1.0, 1.0])  # 0 at 0
    x = leaf([0.0, -1.0, 1.0])
    ag.relu(x).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 1.0])  # 0 at 0
    x = leaf([-1.0, 1.0, 0.0, -1.5, 1.5])
    ag.clip(x, -1.0, 1.0).backward(np.ones(5))
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0, 1.0, 0.0, 0.0])  # bounds included


def test_zero_exponent_has_zero_gradient_even_at_zero_base():
    # x ** 0 is the constant 1, so its derivative is 0 everywhere, x = 0 included (PyTorch
    # gives 0 there too); c x^(c-1) evaluated literally gives 0 * inf = nan at x = 0.
    x = leaf([0.0, 1.0, -2.0])
    with np.errstate(all="ignore"):
        (x ** 0).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])
    a, b = leaf([0.0, 1.0, 2.0]), leaf([0.0, 0.0, 0.0])
    with np.errstate(all="ignore"):
        (a ** b).backward(np.ones(3))
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 0.0, np.log(2.0)])
