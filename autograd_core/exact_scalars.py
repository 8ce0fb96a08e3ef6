"""exact[dtype][c]: a Python number c as a read-only 0-d array of a float (or complex) dtype
that holds c exactly; c itself otherwise. one[dtype] is exact[dtype][1], for kernels and rule
texts (tanh's `one[{out}._data.dtype] - y*y`, sigmoid's e + 1).

numpy takes a Python number beside an array through its weak-scalar promotion (the number is
converted to the array's dtype first), which costs about 0.3 us a call more on a small array
than a 0-d array of the array's own dtype. Where the dtype holds the number exactly both give
the same bits: the same loop runs on the same values. The scalar ops (x * 0.5, x + 1.0, the
rule g * c) look their constant up here.

Not converted, and returned as given: 0 (0.0 and -0.0 are one key of a dict), NaN, inf, a
number the dtype would round or overflow, any number beside a dtype that is neither float nor
complex (an integer array times 0.5 is a float64 result), and numbers met once the table of a dtype
holds LIMIT of them (a number that changes every call, as a learning rate's schedule, is
then looked up and given back: a dict miss, no conversion)."""
import numpy as np

LIMIT = 256  # numbers kept per dtype


class _Exact(dict):
    """c -> c as a 0-d array of one dtype, or c itself (see the module's doc)."""

    __slots__ = ("dtype", "largest")

    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype
        self.largest = float(np.finfo(dtype).max) if dtype.kind in "fc" else None

    def __missing__(self, c):
        if (self.largest is None or len(self) >= LIMIT or type(c) not in (int, float)
                or not c or c != c):  # 0 (see above), NaN
            return c
        value = c
        if abs(c) <= self.largest:  # not inf, nor what would overflow
            held = np.array(c, dtype=self.dtype)
            if held.item() == c:  # held exactly
                held.flags.writeable = False
                value = held
        # kept: a converted number, or a float as itself (an int equal to it is the same
        # number: numpy converts either to the dtype alike)
        if value is not c or type(c) is float:
            self[c] = value
        return value


class _ByDtype(dict):
    """dtype -> its _Exact table, made on first use."""

    def __missing__(self, dtype):
        table = self[dtype] = _Exact(dtype)
        return table


exact = _ByDtype()


class _Ones(dict):
    """dtype -> exact[dtype][1], kept: one lookup where a text or kernel needs a 1."""

    def __missing__(self, dtype):
        one = self[dtype] = exact[dtype][1]
        return one


ONES = _Ones()
