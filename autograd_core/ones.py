"""one[dtype]: the number 1 as an array of the dtype, for kernels and rule texts.

numpy takes a Python 1 in arithmetic with an array through its scalar promotion, which costs
about 0.3 us a call more on a small array than a 1 of the array's own dtype; both give the
same bits (the Python 1 is converted to the array's dtype first). Tanh's rule text
(`one[{out}._data.dtype] - y*y`) and sigmoid's kernel (e + 1) use it."""
import numpy as np


class _Ones(dict):
    """dtype -> a read-only 0-d array holding 1, made on first use."""

    def __missing__(self, dtype):
        one = np.ones((), dtype)
        one.flags.writeable = False
        self[dtype] = one
        return one


ONES = _Ones()
