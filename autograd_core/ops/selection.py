"""Elementwise selection: maximum and minimum (the gradient split equally on ties, as
PyTorch's) and where (the condition is not differentiated)."""
import numpy as np

from ..function import Memory, Op, record
from ..tensor import Tensor
from ._binary import binary, operands

__all__ = ["maximum", "minimum", "where"]  # exported as ag.<name>


def _split_mask(first, second, dtype):
    # Gradient share of `first`: 1 where it wins, 1/2 on ties (as PyTorch's maximum).
    return np.where(first > second, 1.0, np.where(first == second, 0.5, 0.0)).astype(dtype)


class Maximum(Op):
    name = "maximum"
    inputs = ("a", "b")
    saves = ("a", "b")
    view = False
    rule = "g to the larger (half each on ties)"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, a, b):
        return np.maximum(a, b)

    @staticmethod
    def backward(g, out, xp):
        a, b = out._inputs
        share = _split_mask(a._data, b._data, out._data.dtype)
        return g * share, g * (1.0 - share)


def maximum(a, b):
    """Elementwise maximum; on ties the gradient is split equally."""
    return binary(Maximum, "maximum", np.maximum, a, b)


class Minimum(Op):
    name = "minimum"
    inputs = ("a", "b")
    saves = ("a", "b")
    view = False
    rule = "g to the smaller (half each on ties)"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, a, b):
        return np.minimum(a, b)

    @staticmethod
    def backward(g, out, xp):
        a, b = out._inputs
        share = _split_mask(b._data, a._data, out._data.dtype)
        return g * share, g * (1.0 - share)


def minimum(a, b):
    """Elementwise minimum; on ties the gradient is split equally."""
    return binary(Minimum, "minimum", np.minimum, a, b)


class Where(Op):
    name = "where"
    inputs = ("a", "b")
    saves = ("condition",)
    arguments = ("condition",)  # not differentiated; copied when recorded
    view = False
    rule = "g to the chosen side"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, a, b):
        return np.where(out._saved[0], a, b)

    @staticmethod
    def backward(g, out, xp):
        cond = out._saved[0]
        return xp.where(cond, g, 0.0), xp.where(cond, 0.0, g)


def where(condition, a, b):
    """Elementwise `a if condition else b`; the condition is not differentiated."""
    # kept as given (np.where reads any dtype as truth values): a converted copy would be a
    # new array that ag.replay could not follow back to the caller's
    cond = condition._data if isinstance(condition, Tensor) else np.asarray(condition)
    a, b = operands(a, b)
    try:
        data = np.where(cond, a._data, b._data)
    except ValueError:
        raise ValueError(f"where: condition, a and b could not be broadcast together: shapes "
                         f"{cond.shape}, {a.shape} and {b.shape}") from None
    return record(Where, data, (a, b), (cond,))
