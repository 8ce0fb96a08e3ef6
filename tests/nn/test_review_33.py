"""Review 33, commit 015670e: ag.linear's inline product (2-D operands of one dtype object:
their dot) and bias (the product's dtype object: np.add in place), and nn.Linear's 0-d
refusal. Attacked against the functions the inline cases stand for (linalg.product and
add_bias_array, the path before the commit: same bits), finite differences in float64, and
ag.replay; all held."""
import re
import warnings

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.ops.linalg import add_bias_array, product
from autograd_core.tensor import Tensor
from tests.autograd_core.replay_checks import assert_bits, check, run
from tests.finite_differences import central_differences

DTYPES = [np.float32, np.float64, np.int64, np.dtype(">f4"), np.dtype(">f8"), np.float16]

_fd = central_differences


def _reference(x, w, b):
    """What linear computed before the commit: product, then add_bias_array."""
    data = product(x, w.T)
    return data if b is None else add_bias_array(data, np.asarray(b))


@pytest.mark.parametrize("xd", DTYPES, ids=str)
@pytest.mark.parametrize("wd", DTYPES, ids=str)
@pytest.mark.parametrize("bd", [None] + DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 4, 2), (1, 1, 1), (0, 3, 2), (3, 0, 2), (1, 4, 1)])
def test_the_inline_cases_give_the_functions_bits(xd, wd, bd, shape):
    n, i, o = shape
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n, i)) * 3).astype(xd)
    w = (rng.standard_normal((o, i)) * 3).astype(wd)
    biases = [None] if bd is None else [(rng.standard_normal(s) * 3).astype(bd)
                                        for s in ((o,), (1, o), (n, o), ())]
    for b in biases:
        want = _reference(x, w, b)
        for given in ([None] if b is None else [Tensor(b), b]):
            got = ag.linear(Tensor(x), Tensor(w), given)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.numpy().tobytes() == want.tobytes()


def test_python_float_list_and_int_biases():
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    w = np.ones((2, 3), dtype=np.float32)
    for b in (0.5, [0.5, -1.5], 2, np.array([1, 2])):
        got = ag.linear(x, w, b)
        want = _reference(x, w, Tensor(b).numpy())
        assert got.dtype == want.dtype and got.numpy().tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3,), (3, 1), (1, 2, 2), (4, 2), (2, 3, 2)])
def test_a_bias_that_would_grow_the_product_is_refused(dtype, shape):
    x, w = Tensor(np.ones((2, 4), dtype)), Tensor(np.ones((2, 4), dtype))
    msg = (f"linear: the bias of shape {shape} (dtype {np.dtype(dtype)}) does not broadcast "
           f"to the product's shape")
    with pytest.raises(ValueError) as error:
        ag.linear(x, w, Tensor(np.ones(shape, dtype)))
    assert str(error.value) == msg
    other = np.float64 if dtype is np.float32 else np.float32
    with pytest.raises(ValueError, match=re.escape("does not broadcast")):
        ag.linear(x, w, Tensor(np.ones(shape, other)))


@pytest.mark.parametrize("bias_shape", [None, (2,), (1, 2), (3, 2), ()])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_gradients_against_finite_differences(bias_shape, layout):
    rng = np.random.default_rng(4)
    x0, w0 = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    b0 = None if bias_shape is None else rng.standard_normal(bias_shape)

    def arrange(a):
        if layout == "transposed":
            return np.asfortranarray(a)
        if layout == "sliced":
            big = np.zeros((a.shape[0] * 2, a.shape[1] * 3))
            big[::2, ::3] = a
            return big[::2, ::3]
        return a

    x, w = Tensor(arrange(x0), requires_grad=True), Tensor(arrange(w0), requires_grad=True)
    b = None if b0 is None else Tensor(b0, requires_grad=True)
    (ag.tanh(ag.linear(x, w, b)) ** 2).sum().backward()

    def f(x, w, *b):
        y = x @ w.T + (b[0] if b else 0.0)
        return (np.tanh(y) ** 2).sum()

    arrays = [x0, w0] + ([] if b0 is None else [b0])
    for k, t in enumerate([x, w] + ([] if b is None else [b])):
        np.testing.assert_allclose(t.grad.numpy(), _fd(f, arrays, k), rtol=1e-6, atol=1e-8)


def test_empty_batch_and_no_input_features():
    w = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    x = Tensor(np.zeros((0, 3)), requires_grad=True)
    y = ag.linear(x, w, b)
    assert y.shape == (0, 2)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(b.grad.numpy(), [0.0, 0.0])
    assert x.grad.shape == (0, 3)
    x = Tensor(np.zeros((4, 0)), requires_grad=True)
    w = Tensor(np.zeros((2, 0)), requires_grad=True)
    y = ag.linear(x, w, b)
    np.testing.assert_array_equal(y.numpy(), np.tile([1.0, 2.0], (4, 1)))


def test_a_read_only_weight_and_bias_are_left_alone():
    w0 = np.arange(6.0).reshape(2, 3)
    b0 = np.array([1.0, -1.0])
    w0.flags.writeable = False
    b0.flags.writeable = False
    x = np.ones((2, 3))
    y = ag.linear(x, w0, b0)
    np.testing.assert_array_equal(y.numpy(), x @ w0.T + b0)
    np.testing.assert_array_equal(w0, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(b0, [1.0, -1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_replayed_linear_nets_have_eager_bits(dtype):
    rng = np.random.default_rng(11)
    model = nn.MLP([4, 5, 5, 2], rng=1, dtype=dtype)
    params = list(model.parameters())
    xs = [(rng.standard_normal((3, 4)).astype(dtype),) for _ in range(3)]

    def fn(x):
        return (model(Tensor(x)) ** 2).sum()

    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)
        step = check(fn, params, xs, calls=5, batch=False)
    assert any(getattr(p, "confirmed", False) for p in step.plans.values())
    got, want = run(step, params, xs[0]), run(fn, params, xs[0])
    assert_bits(got, want)


def test_nn_linear_refuses_0d_and_takes_1d_and_3d_inputs():
    lin = nn.Linear(3, 2, rng=0, dtype=np.float64)
    for value in (Tensor(np.array(1.0)), np.array(2.0)):
        with pytest.raises(ValueError) as error:
            lin(value)
        assert str(error.value) == "Linear: expected input with last dimension 3, got shape ()"
    w0, b0 = lin.weight.numpy().copy(), lin.bias.numpy().copy()
    rng = np.random.default_rng(2)
    for shape in ((3,), (2, 3), (4, 2, 3)):
        x0 = rng.standard_normal(shape)
        x = Tensor(x0, requires_grad=True)
        lin.zero_grad()
        (lin(x) ** 2).sum().backward()
        f = lambda x, w, b: ((x @ w.T + b) ** 2).sum()  # noqa: E731
        for k, t in enumerate((x, lin.weight, lin.bias)):
            np.testing.assert_allclose(t.grad.numpy(), _fd(f, [x0, w0, b0], k), rtol=1e-6,
                                       atol=1e-8)
