"""sigmoid, logsigmoid and softplus over the whole range of each float type.

sigmoid's relative error against a more precise reference is at most 5e-6 in float32 and 1e-13
in float64 wherever the true value is a normal number of the type; log(sigmoid(x)) stays finite
down to x = -80 in float32 with a gradient of 1 there; logsigmoid and softplus are finite for
every finite x.
"""
import numpy as np
import pytest

import autograd_core as ag

LONG = np.longdouble
EXTENDED = np.finfo(LONG).eps < 1e-18  # x86's 80-bit long double


def reference_sigmoid(x, dtype):
    """1 / (1 + exp(-x)) in a wider type than `dtype`."""
    if dtype == np.float64:
        if not EXTENDED:
            pytest.skip("no extended-precision long double on this platform")
        wide = x.astype(LONG)
    else:
        wide = x.astype(np.float64)
    return 1 / (1 + np.exp(-wide))


def grid(dtype):
    """Dense over the range where sigmoid is normal, plus both tails and special points."""
    tiny = np.finfo(dtype).tiny
    low = float(np.log(tiny)) - 1  # below: the true value is subnormal
    x = np.concatenate([np.linspace(low, -low, 200_001), [-0.0, 0.0, 1e-30, -1e-30]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype, limit", [(np.float32, 5e-6), (np.float64, 1e-13)])
def test_sigmoid_relative_error_wherever_the_value_is_normal(dtype, limit):
    x = grid(dtype)
    with np.errstate(over="ignore"):
        want = reference_sigmoid(x, dtype)
    got = ag.sigmoid(ag.Tensor(x)).numpy()
    assert got.dtype == dtype
    normal = want >= np.finfo(dtype).tiny
    rel = np.abs(got[normal].astype(want.dtype) - want[normal]) / want[normal]
    assert rel.max() <= limit, f"largest relative error {float(rel.max()):.3g} at x = " \
                               f"{x[normal][rel.argmax()]}"
    # the examples: float32 at -10, -15, -17 and -20 (2.06e-9)
    if dtype == np.float32:
        for v in (-10.0, -15.0, -17.0, -20.0, -87.0):
            s = ag.sigmoid(ag.Tensor(np.float32(v))).item()
            assert abs(s - 1 / (1 + np.exp(-v))) <= limit * (1 / (1 + np.exp(-v)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_at_the_special_values(dtype):
    x = np.array([-np.inf, np.inf, np.nan, -0.0, 0.0, -1e5, 1e5], dtype=dtype)
    with np.errstate(all="raise"):
        got = ag.sigmoid(ag.Tensor(x)).numpy()
    assert got[0] == 0 and got[1] == 1 and np.isnan(got[2])
    assert got[3] == got[4] == 0.5 and got[5] == 0 and got[6] == 1


def test_log_of_sigmoid_is_finite_to_minus_80_in_float32_with_gradient_1():
    x = ag.Tensor(np.array([-80.0, -60.0, -30.0], dtype=np.float32), requires_grad=True)
    y = ag.log(ag.sigmoid(x))
    y.sum().backward()
    np.testing.assert_allclose(y.numpy(), [-80.0, -60.0, -30.0], rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsigmoid_and_softplus_are_finite_everywhere(dtype):
    big = float(np.finfo(dtype).max) / 2
    x = ag.Tensor(np.array([-big, -1e4, -100.0, -80.0, -1.0, 0.0, 1.0, 100.0, 1e4, big],
                           dtype=dtype), requires_grad=True)
    with np.errstate(all="raise"):
        ls, sp = ag.logsigmoid(x), ag.softplus(x)
        (ls.sum() + sp.sum()).backward()
    xs = x.numpy().astype(np.float64)
    tiny = np.finfo(dtype).tiny  # below it (log(1 + 1e-44)) a subnormal is as good as any
    np.testing.assert_allclose(ls.numpy(), -np.logaddexp(0, -xs), rtol=1e-6, atol=tiny)
    np.testing.assert_allclose(sp.numpy(), np.logaddexp(0, xs), rtol=1e-6, atol=tiny)
    # d logsigmoid = sigmoid(-x), d softplus = sigmoid(x): together exactly 1 (to rounding)
    np.testing.assert_allclose(x.grad.numpy(), np.ones(10), rtol=1e-6)
    assert ls.dtype == sp.dtype == x.grad.dtype == dtype


def test_logsigmoid_equals_log_of_sigmoid_where_both_are_finite():
    x = np.linspace(-30, 30, 601)
    a = ag.Tensor(x, requires_grad=True)
    b = ag.Tensor(x, requires_grad=True)
    ag.logsigmoid(a).sum().backward()
    ag.log(ag.sigmoid(b)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12, atol=1e-15)
