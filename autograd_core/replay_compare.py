"""What a replay plan compares (replay_plan.Plan): a second recording with the first (the
structure of the graph, arrays by value), and each later call with the recording (the arrays an
op saved from outside the function, the boolean masks among the arguments, the ops' own
functions)."""
import numpy as np

from .replay_arguments import Arg


class Recorded:
    """A copy of an array's values as recorded, compared each call with the array: by its
    bytes first (a memcmp: np.array_equal costs ~2 us even for a few targets), by value where
    the bytes differ (-0.0 is 0.0, and NaN is NaN whatever its bits)."""
    __slots__ = ("raw", "shape", "dtype", "objects")

    def __init__(self, array):
        self.shape, self.dtype = array.shape, array.dtype
        # an object array's bytes are pointers: it is kept and compared by value only
        self.objects = array.copy() if array.dtype.hasobject else None
        self.raw = None if self.objects is not None else array.tobytes()

    @property
    def nbytes(self):
        return self.objects.nbytes if self.objects is not None else len(self.raw)

    def holds(self, a):
        """Whether `a` has the recorded shape, dtype and values."""
        if a.shape != self.shape or a.dtype != self.dtype:
            return False
        if self.objects is not None:
            return bool(np.array_equal(a, self.objects))
        if a.tobytes() == self.raw:
            return True
        if self.dtype.kind not in "fc":  # no -0.0 or NaN: other bytes are other values
            return False
        recorded = np.frombuffer(self.raw, self.dtype).reshape(self.shape)
        return bool(np.array_equal(a, recorded, equal_nan=True))


def functions(program):
    """(op, functions_of(op)) for each op class of `program`."""
    return [(op, functions_of(op)) for op in {entry[0]._op for entry in program}]


def functions_of(op):
    """What of an op a plan's generated code may have replaced by its texts, or calls in
    its place (the fast paths)."""
    return (getattr(op, "forward", None), getattr(op, "backward", None),
            getattr(op, "backward_split", None), getattr(op, "backward_into", None),
            getattr(op, "fast_path", None))


def masks(bound):
    """(Arg, count of True) of each boolean array that an op saved from the arguments."""
    found = []

    def walk(template, saved):
        if isinstance(template, Arg):
            if isinstance(saved, np.ndarray) and saved.dtype == bool:
                found.append((template, int(np.count_nonzero(saved))))
        elif isinstance(template, tuple) and isinstance(saved, tuple):
            for t, v in zip(template, saved):
                walk(t, v)

    for s, template, count in bound:
        walk(template, s._saved[:count])
    return found


def parameters(saved):
    """`saved` with its arrays left out."""
    if isinstance(saved, np.ndarray):
        return None
    if isinstance(saved, tuple):
        return tuple(parameters(v) for v in saved)
    return saved


class Content:
    """A leaf's array in the structure two recordings compare: the same when both are
    (views of) one array, whose later changes replay reads; otherwise equal values (an array
    made inside the function each call, as zeros for a first state)."""
    __slots__ = ("array", "base")

    def __init__(self, array):
        self.array, self.base = array, array
        while isinstance(self.base.base, np.ndarray):
            self.base = self.base.base

    def __eq__(self, other):
        return isinstance(other, Content) and (
            self.base is other.base or same(self.array, other.array))


def same(a, b):
    """Structural equality, arrays by value (and dtype)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b
