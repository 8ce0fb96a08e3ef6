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


class AddMM(Op):
    """c + a @ b for 2-D a and b in one node (the affine map of every layer and recurrent
    step): dc = g (summed to c's shape), da = g b^T, db = a^T g."""
    name = "addmm"

    @staticmethod
    def backward(g, out, xp):
        c, a, b = out._inputs
        return (g if c.requires_grad else None,
                g @ xp.val(b).T if a.requires_grad else None,
                xp.val(a).T @ g if b.requires_grad else None)


def addmm(c, a, b):
    """c + a @ b, with a (n, k), b (k, m) and c broadcastable to (n, m); one node instead of
    two (as torch.addmm)."""
    c, a, b = as_tensor(c), as_tensor(a), as_tensor(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise shape_error("addmm", f"needs 2-D a (n, k) and b (k, m), got shapes {a.shape} and "
                                   f"{b.shape}")
    data = np.matmul(a._data, b._data)
    try:
        if np.result_type(data, c._data) == data.dtype:
            np.add(data, c._data, out=data)  # no second temporary
        else:
            data = data + c._data
        if data.shape != np.broadcast_shapes(data.shape, c.shape):
            raise ValueError
    except (ValueError, TypeError):
        raise shape_error("addmm", f"c of shape {c.shape} (dtype {c.dtype}) does not broadcast "
                                   f"to the product's shape {data.shape} ({data.dtype})") from None
    return record(AddMM, data, (c, a, b))
