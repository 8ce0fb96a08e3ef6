"""one[dtype] (exact_scalars.ONES): a 1 of the array's dtype gives numpy's bits for a Python 1,
for every float and complex dtype, and cannot be changed by a kernel that writes into it."""
import numpy as np
import pytest

from autograd_core.exact_scalars import ONES


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64,
                                   np.complex64, np.complex128])
def test_a_one_of_the_dtype_gives_the_bits_of_a_python_one(dtype):
    rng = np.random.default_rng(0)
    y = rng.standard_normal(64).astype(dtype)
    y[:5] = [0.0, -0.0, np.inf, -np.inf, np.nan]
    one = ONES[np.dtype(dtype)]
    assert one.dtype == dtype and one.shape == () and one == 1
    with np.errstate(all="ignore"):
        for got, want in [(one - y * y, 1 - y * y), (y + one, y + 1), (one / y, 1 / y)]:
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_it_is_read_only_and_made_once():
    one = ONES[np.dtype(np.float32)]
    assert ONES[np.dtype(np.float32)] is one
    with pytest.raises(ValueError):
        one[...] = 2
    with pytest.raises(ValueError):
        np.add(one, 1, out=one)
