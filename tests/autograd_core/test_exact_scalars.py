"""exact[dtype][c] (exact_scalars.py): a Python number as a 0-d array of the array's float dtype
gives the bits and the dtype of numpy's weak-scalar arithmetic with the number itself, for
every dtype and every kind of number (exact, rounded, huge, tiny, zero, NaN, inf, int); the
scalar ops that use it give the values and gradients they gave before."""
import warnings

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import exact_scalars
from autograd_core.exact_scalars import exact

NUMBERS = [0.5, 4.0, -2.0, 0.1, 1 / 3, 1e-40, 1e-45, 3.4e38, 3.5e38, 1e300, -1e300,
           float("inf"), float("-inf"), float("nan"), 0.0, -0.0, 0, 2, 3, -7, 2 ** 24 + 1,
           2 ** 70, 10 ** 30, 1e-8, 65504.0, 65520.0, 1e5, 2.0 ** -24, 2.0 ** -25]
OPS = {"x * c": lambda x, c: x * c, "c * x": lambda x, c: c * x, "x + c": lambda x, c: x + c,
       "x - c": lambda x, c: x - c, "c - x": lambda x, c: c - x, "x / c": lambda x, c: x / c,
       "c / x": lambda x, c: c / x}


def _outcome(fn, x, c):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return fn(x, c)
        except (OverflowError, TypeError) as error:
            return type(error)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64, np.int8,
                                   np.uint8, np.complex64])
def test_every_number_gives_the_bits_and_dtype_of_the_number_itself(dtype):
    rng = np.random.default_rng(1)
    kind = np.dtype(dtype).kind
    if kind in "iu":
        x = rng.integers(0, 100, 40).astype(dtype)
    else:
        x = (rng.standard_normal(40) * 3).astype(dtype)
        x[:5] = [0.0, -0.0, np.inf, -np.inf, np.nan]
    numbers = NUMBERS + [float(v) for v in rng.standard_normal(30)]
    for c in numbers:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the lookup itself never warns (overflow, cast)
            s = exact[x.dtype][c]
        for name, fn in OPS.items():
            want, got = _outcome(fn, x, c), _outcome(fn, x, s)
            if isinstance(want, type):
                assert got is want, (dtype, c, name)
                continue
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (dtype, c, name)


def test_what_is_converted_and_what_is_given_back():
    f32 = exact[np.dtype(np.float32)]
    held = f32[0.5]
    assert isinstance(held, np.ndarray) and held.dtype == np.float32 and held == 0.5
    assert f32[0.5] is held  # made once
    with pytest.raises(ValueError):  # read-only: a kernel cannot change it
        held[...] = 2
    assert f32[2] is f32[2.0]  # an int and the float equal to it are one number
    for c in (0.0, -0.0, 0, float("nan"), float("inf"), 0.1, 1e300, 2 ** 24 + 1):
        got = f32[c]  # 0 and -0.0 share a dict key; the rest are not held exactly
        assert type(got) is type(c) and (got == c or c != c and got != got)
        assert str(got) == str(c)  # -0.0 stays -0.0
    assert 0.0 not in f32 and -0.0 not in f32
    assert exact[np.dtype(np.int64)][0.5] == 0.5 and not exact[np.dtype(np.int64)]
    assert exact[np.dtype(np.float64)][0.1].dtype == np.float64  # exact in float64


def test_a_full_table_gives_numbers_back_without_keeping_them(monkeypatch):
    monkeypatch.setattr(exact_scalars, "LIMIT", 3)
    table = exact_scalars._Exact(np.dtype(np.float32))
    for c in (1.0, 2.0, 3.0, 4.0, 5.0):
        table[c]
    assert len(table) == 3 and table[5.0] == 5.0 and type(table[5.0]) is float


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_scalar_ops_keep_their_values_and_gradients(dtype):
    """The chain of scalar ops against the same numpy written with the Python numbers."""
    rng = np.random.default_rng(2)
    x0 = rng.uniform(0.5, 1.5, 8).astype(dtype)
    x = ag.Tensor(x0.copy(), requires_grad=True)
    y = ((2.0 - (x * 4.0 + -2.0) / 3.0) * 0.5 - 1) * 0.1
    y.backward(np.ones(8, dtype))
    want = ((2.0 - (x0 * 4.0 + -2.0) / 3.0) * 0.5 - 1) * 0.1
    assert y.dtype == dtype and y.numpy().tobytes() == want.tobytes()
    g = np.ones(8, dtype) * 0.1 * 0.5
    g = -g
    g = g / 3.0
    g = g * 4.0
    assert x.grad.dtype == dtype and x.grad.numpy().tobytes() == g.tobytes()
