"""What the binary ops of arithmetic.py and selection.py share: both operands as tensors, and
the op recorded on their arrays (a broadcast error names the op and the shapes)."""
import numpy as np

from ..function import as_tensor, record
from ..tensor import Tensor
from ._checks import SCALARS, broadcast_error


def binary(op, name, fn, a, b):
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        a, b = operands(a, b)
    try:
        data = fn(a._data, b._data)
    except ValueError:
        raise broadcast_error(name, a, b) from None
    return record(op, data, (a, b))


def operands(a, b):
    """Both operands as tensors; a Python number takes the dtype numpy's weak-scalar rules
    give it beside the other operand (float32 tensor and 2 -> float32)."""
    if type(a) in SCALARS and isinstance(b, Tensor):
        return Tensor(np.asarray(a, dtype=np.result_type(b._data, a))), b
    if type(b) in SCALARS and isinstance(a, Tensor):
        return a, Tensor(np.asarray(b, dtype=np.result_type(a._data, b)))
    return as_tensor(a), as_tensor(b)

