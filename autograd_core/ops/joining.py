"""Joining and splitting: concatenate, stack, split."""
import numpy as np

from ..function import Memory, Op, as_tensor, record
from ._checks import normalize_axis, shape_error
from .indexing import getitem

__all__ = ["concatenate", "split", "stack"]  # exported as ag.<name>


def _take(g, axis, index):
    return g[(slice(None),) * axis + (index,)]


def dense(g):
    """`g`, copied once where it is a broadcast (a stride 0 along an axis longer than 1, as
    a sum's gradient is): its rows then go to ops that each read them at full speed, where a
    stride 0 makes every elementwise op on a row about twice as slow."""
    for n, stride in zip(g.shape, g.strides):
        if not stride and n > 1:
            return np.ascontiguousarray(g)
    return g


def stack_arrays(arrays, axis=0):
    """np.stack for arrays of one shape (checked by the caller). Along the first axis it is
    one concatenate and a reshape: np.stack's own Python costs three times as much for the
    thousands of small rows a long loop stacks."""
    first = arrays[0]
    if axis or not first.ndim:
        return np.stack(arrays, axis=axis)
    return np.concatenate(arrays).reshape((len(arrays),) + first.shape)


def _tensors(op, tensors):
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError(f"{op}: need at least one tensor")
    return tuple(tensors)


class Concatenate(Op):
    name = "concatenate"
    inputs = ("*tensors",)
    saves = ()
    view = False
    rule = "g split along the axis"
    hazard = None
    memory = Memory(view=True)

    @staticmethod
    def forward(out, *xs):
        return np.concatenate(xs, axis=out._saved[0])

    @staticmethod
    def backward(g, out, xp):
        axis, bounds = out._saved
        return tuple(_take(g, axis, slice(lo, hi)) for lo, hi in zip(bounds, bounds[1:]))


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis, as np.concatenate."""
    tensors = _tensors("concatenate", tensors)
    axis = normalize_axis("concatenate", axis, tensors[0].ndim)
    try:
        data = np.concatenate([t._data for t in tensors], axis=axis)
    except ValueError:
        shapes = ", ".join(str(t.shape) for t in tensors)
        raise shape_error("concatenate", f"shapes {shapes} must match except along axis "
                                         f"{axis}") from None
    bounds = tuple(np.cumsum([0] + [t.shape[axis] for t in tensors]).tolist())
    return record(Concatenate, data, tensors, (axis, bounds))


class Stack(Op):
    name = "stack"
    inputs = ("*tensors",)
    saves = ()
    view = False
    rule = "g split along the new axis"
    hazard = None
    memory = Memory(view=True)

    @staticmethod
    def forward(out, *xs):
        return stack_arrays(xs, out._saved)

    @staticmethod
    def backward(g, out, xp):
        axis = out._saved
        if axis == 0 and type(g) is np.ndarray:  # iterating gives the rows as views, fast
            return tuple(dense(g))
        return tuple(_take(g, axis, i) for i in range(len(out._inputs)))


def stack(tensors, axis=0):
    """Join tensors of one shape along a new axis, as np.stack."""
    tensors = _tensors("stack", tensors)
    axis = normalize_axis("stack", axis, tensors[0].ndim + 1)
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise shape_error("stack", f"all tensors must have the same shape, got "
                                   f"{', '.join(str(t.shape) for t in tensors)}")
    return record(Stack, stack_arrays([t._data for t in tensors], axis), tensors, axis)


def split(x, indices_or_sections, axis=0):
    """Split into a list of tensors along `axis`, as np.split: an int N gives N equal parts,
    a list of indices gives the cut points."""
    x = as_tensor(x)
    axis = normalize_axis("split", axis, x.ndim)
    n = x.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        parts = int(indices_or_sections)
        if parts <= 0 or n % parts:
            raise shape_error("split", f"axis {axis} of length {n} cannot be split into "
                                       f"{parts} equal parts")
        cuts = [n // parts * i for i in range(1, parts)]
    else:
        cuts = [int(c) for c in indices_or_sections]
    bounds = [0] + cuts + [n]
    return [getitem(x, (slice(None),) * axis + (slice(lo, hi),))
            for lo, hi in zip(bounds, bounds[1:])]
