"""broadcast_array, which spreads a reduction's gradient: a single value is filled into a new
array of the value's dtype (what np.full gives, -0.0 and a long double's digits kept),
anything else is np.broadcast_to's read-only view."""
import numpy as np
import pytest

from autograd_core.ops.shape import broadcast_array

DTYPES = [np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.int32, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["numpy scalar", "0-d", "(1, 1)"])
@pytest.mark.parametrize("shape", [(), (3,), (2, 1), (4, 3)])
def test_a_single_value_fills_a_new_array(dtype, kind, shape):
    value = np.array(-0.0 if dtype not in (np.int32, np.bool_) else 1, dtype=dtype)
    if dtype is np.longdouble:
        value = np.longdouble(1) / np.longdouble(3)  # more digits than a float64 holds
    a = {"numpy scalar": value[()], "0-d": np.array(value), "(1, 1)": np.reshape(value,
                                                                                (1, 1))}[kind]
    out = broadcast_array(a, shape)  # (a (1, 1) value fills fewer axes too, as it did)
    want = np.full(shape, np.asarray(a).reshape(()), dtype=np.asarray(a).dtype)
    assert out.shape == shape and out.dtype == want.dtype
    np.testing.assert_array_equal(out, want)  # a long double keeps its digits
    if out.dtype.kind == "f":
        assert (np.signbit(out) == np.signbit(want)).all()  # -0.0 stays -0.0
    assert out.flags.writeable and out.flags.owndata


def test_more_values_give_broadcast_tos_view():
    a = np.arange(3.0)
    out = broadcast_array(a, (2, 3))
    np.testing.assert_array_equal(out, np.broadcast_to(a, (2, 3)))
    assert not out.flags.writeable and np.shares_memory(out, a)
