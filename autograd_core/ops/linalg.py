"""Matrix product with numpy's matmul semantics (1-D, 2-D and batched broadcasting)."""
import numpy as np

from ..function import Op, as_tensor, record
from ._checks import shape_error


class MatMul(Op):
    """C = A @ B: dA = dC @ B^T, dB = A^T @ dC (batch axes are summed back by the engine).
    A 1-D operand is a row (left) or column (right) vector that numpy drops from the result."""
    name = "matmul"

    @staticmethod
    def backward(g, out, xp):
        a, b = out._inputs
        av, bv = xp.val(a), xp.val(b)
        if av.ndim == 1 and bv.ndim == 1:  # inner product: g is 0-d
            return (g * bv if a.requires_grad else None,
                    g * av if b.requires_grad else None)
        if av.ndim == 1:  # (k,) @ (..., k, m) -> (..., m)
            ga = (bv @ g[..., None])[..., 0] if a.requires_grad else None
            gb = av[:, None] * g[..., None, :] if b.requires_grad else None
            return ga, gb
        if bv.ndim == 1:  # (..., n, k) @ (k,) -> (..., n)
            ga = g[..., :, None] * bv if a.requires_grad else None
            gb = (av.swapaxes(-1, -2) @ g[..., None])[..., 0] if b.requires_grad else None
            return ga, gb
        ga = g @ bv.swapaxes(-1, -2) if a.requires_grad else None
        gb = av.swapaxes(-1, -2) @ g if b.requires_grad else None
        return ga, gb


def matmul(a, b):
    """a @ b, as np.matmul."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise shape_error("matmul", f"operands must have at least 1 dimension, got shapes "
                                    f"{a.shape} and {b.shape} (use * for scalars)")
    try:
        data = np.matmul(a._data, b._data)
    except ValueError:
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        detail = (f"inner dimensions differ ({k_a} != {k_b})" if k_a != k_b
                  else "batch dimensions do not broadcast")
        raise shape_error("matmul", f"shapes {a.shape} and {b.shape} are not aligned: "
                                    f"{detail}") from None
    return record(MatMul, data, (a, b))
