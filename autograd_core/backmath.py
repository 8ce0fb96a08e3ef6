"""The two kinds of numbers a derivative rule can be run on.

Rules use operators, array methods (`.reshape`, `.sum`, `.swapaxes`, indexing) and the few
functions below, so one rule serves both:
- `ArrayMath`: plain numpy arrays, the fast path of an ordinary backward.
- `TensorMath`: tensors, recorded like any forward code, for `create_graph=True` (gradients of
  gradients).
"""
import numpy as np

from .ops import indexing, reductions, selection, shape, unary


class ArrayMath:
    recording = False  # results are plain arrays

    @staticmethod
    def val(t):
        return t._data

    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    where = staticmethod(np.where)
    broadcast_to = staticmethod(shape.broadcast_array)
    sum_to = staticmethod(shape.sum_array_to)
    scatter = staticmethod(indexing.scatter_array)


class TensorMath:
    recording = True  # results are recorded tensors (create_graph=True)

    @staticmethod
    def val(t):
        return t

    exp = staticmethod(unary.exp)
    log = staticmethod(unary.log)
    where = staticmethod(selection.where)
    broadcast_to = staticmethod(shape.broadcast_to)
    sum_to = staticmethod(shape.sum_to)
    scatter = staticmethod(indexing.scatter)
    sum = staticmethod(reductions.sum)
