"""Central finite differences in float64, for the tests that check a gradient by hand."""
import numpy as np


def central_differences(f, arrays, k, eps=1e-6):
    """d f(*arrays) / d arrays[k] for a scalar f, one element at a time (float64 copies)."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    out = np.zeros_like(arrays[k])
    it = np.nditer(arrays[k], flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = arrays[k][i]
        arrays[k][i] = old + eps
        hi = f(*arrays)
        arrays[k][i] = old - eps
        lo = f(*arrays)
        arrays[k][i] = old
        out[i] = (hi - lo) / (2 * eps)
    return out
