"""Argument checks shared by the op families: errors name the op and the shapes."""
import numpy as np

# Python numbers stay "weak" (numpy 2 rules): float32 tensor * 2.0 stays float32.
SCALARS = frozenset((int, float))  # as `type(x) in SCALARS`: a hash lookup, no comparisons


def shape_error(op, message):
    return ValueError(f"{op}: {message}")


def broadcast_error(op, a, b):
    return shape_error(op, f"operands could not be broadcast together: shapes {tuple(a.shape)} "
                           f"and {tuple(b.shape)}")


def normalize_axes(op, axis, ndim):
    """`axis` (None, int or tuple) as a sorted tuple of non-negative axes, checked."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)):
            raise TypeError(f"{op}: axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise shape_error(op, f"axis {a} is out of range for a tensor with {ndim} "
                                  f"dimension(s)")
        a = int(a) % ndim if ndim else 0
        if a in out:
            raise shape_error(op, f"axis {a} is repeated in {axis!r}")
        out.append(a)
    return tuple(sorted(out))


def normalize_axis(op, axis, ndim):
    """A single axis as a non-negative int, checked."""
    if not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise shape_error(op, f"axis {axis} is out of range for a tensor with {ndim} "
                              f"dimension(s)")
    return int(axis) % ndim


def kept_shape(shape, axes):
    """`shape` with the reduced `axes` kept as size 1 (the keepdims shape)."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))
