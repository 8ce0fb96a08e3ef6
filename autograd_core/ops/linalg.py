"""Matrix product with numpy's matmul semantics (1-D, 2-D and batched broadcasting)."""
import numpy as np

from ..function import Memory, Op, as_tensor, record
from ..tensor import Tensor
from ._checks import shape_error

__all__ = ["addmm", "linear", "matmul"]  # exported as ag.<name>


def product(a, b):
    """a @ b for arrays: the array's own dot where both are 2-D (the same BLAS call as
    np.matmul, with half a microsecond less around it: a small recurrent step's product
    costs ~1 us), np.matmul otherwise. Every 2-D product of the engine's kernels goes through
    here, so that a product computed by two of them (addmm fusing matmul and add) has the
    same bits. Only operands of one dtype, and not a 1x1 times a 1x1: for those dot has
    other bits than np.matmul (a mixed-dtype strided product rounds otherwise, and
    [[-1.]] @ [[0.]] is -0.0 where np.matmul gives 0.0)."""
    if a.dtype is b.dtype and a.ndim == 2 == b.ndim and a.size > 1 and b.size > 1:
        return a.dot(b)  # the common case, asked cheaply first (one dtype object: `is`)
    if a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.size + b.size > 2:
        return a.dot(b)
    return np.matmul(a, b)


def product_text(a, b, two_d=False):
    """product(a, b) as generated code writes it, for two expressions of arrays (each
    evaluated once, into the names a_ and b_): the array's own dot asked for where product
    takes it, product itself otherwise (the same call and bits, without a Python call around
    the common case). `two_d`: both are known to be 2-D (their ndim is not asked)."""
    dims = "" if two_d else "a_.ndim == 2 == b_.ndim and "
    return (f"(a_.dot(b_) if (a_ := {a}).dtype is (b_ := {b}).dtype and {dims}"
            f"a_.size > 1 and b_.size > 1 else product(a_, b_))")


def dot_applies(a, b):
    """Whether product(a, b) calls a.dot(b) for arrays with these shapes and dtypes."""
    return a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.size + b.size > 2


def _gradient_product_text(out, b, b_text, b_array):
    """The text of product({g}, b) in a replayed rule of node `out` (b: the array `b_text`
    stands for, `b_array` that text without a transpose). Where the shapes make product take
    the array's own dot for operands of one dtype (2-D, more than one element each: known from
    the node), the text calls dot itself, asking g's dtype as it runs (a gradient of another
    dtype may reach a node): the same call and bits, without product's checks at every step
    of a loop."""
    if out._data.ndim == 2 == b.ndim and out._data.size > 1 and b.size > 1:
        return (f"({{g}}.dot({b_text}) if {{g}}.dtype is {b_array}.dtype "
                f"else product({{g}}, {b_text}))")
    return f"product({{g}}, {b_text})"


def _adds_in_place(dtype, bias):
    """Whether add_bias_array adds `bias` into a product of `dtype` in place."""
    return bias.dtype == dtype or np.promote_types(dtype, bias.dtype) == dtype


# a product and its bias added in place, as one expression (inline_forward)
_PRODUCT_PLUS_BIAS = "np.add((d := {a}.dot({b})), {c}, d)"


class MatMul(Op):
    """C = A @ B: dA = dC @ B^T, dB = A^T @ dC (batch axes are summed back by the engine).
    A 1-D operand is a row (left) or column (right) vector that numpy drops from the result."""
    name = "matmul"
    inputs = ("a", "b")
    saves = ("a", "b")
    view = False
    rule = "d(A @ B) = (g B^T, A^T g)"
    hazard = None
    memory = Memory()
    batch = "matmul"
    layout = (0, 1)
    split_input = 1

    @staticmethod
    def forward(out, a, b):
        return product(a, b)

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

    @staticmethod
    def backward_split(g, out):
        a, b = out._inputs
        av, bv = a._data, b._data
        if av.ndim != 2 or bv.ndim != 2:
            return None
        return (product(g, bv.T) if a.requires_grad else None, None), av, g

    @staticmethod
    def inline_forward(out, a, b):
        return "{x0}.dot({x1})" if dot_applies(a, b) else None

    @staticmethod
    def inline_split(out):
        if out is None:  # no text for any node: 1-D operands have no split
            return None
        a, b = out._inputs
        if a._data.ndim != 2 or b._data.ndim != 2:
            return None
        return ((_gradient_product_text(out, b._data.T, "{x1}.T", "{x1}") if a.requires_grad
                 else None, None), "{x0}", "{g}")


def matmul(a, b):
    """a @ b, as np.matmul."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise shape_error("matmul", f"operands must have at least 1 dimension, got shapes "
                                    f"{a.shape} and {b.shape} (use * for scalars)")
    try:
        data = product(a._data, b._data)
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
    inputs = ("c", "a", "b")
    saves = ("a", "b")
    view = False
    rule = "d(c + A @ B) = (g, g B^T, A^T g)"
    hazard = None
    memory = Memory(same=(0,))
    split_input = 2
    layout = (1, 2)

    @staticmethod
    def forward(out, c, a, b):
        return add_bias_array(product(a, b), c)

    @staticmethod
    def backward(g, out, xp):
        c, a, b = out._inputs
        return (g if c.requires_grad else None,
                g @ xp.val(b).T if a.requires_grad else None,
                xp.val(a).T @ g if b.requires_grad else None)

    @staticmethod
    def backward_split(g, out):
        c, a, b = out._inputs
        return (g if c.requires_grad else None,
                product(g, b._data.T) if a.requires_grad else None, None), a._data, g

    @staticmethod
    def inline_forward(out, c, a, b):
        if dot_applies(a, b) and _adds_in_place(a.dtype, c):
            return _PRODUCT_PLUS_BIAS.format(a="{x1}", b="{x2}", c="{x0}")
        return None

    @staticmethod
    def inline_split(out):
        if out is None:  # the eager sweep's step, for any node (sweep_steps.py)
            return ("{g}", product_text("{g}", "{x2}.T", two_d=True), None), "{x1}", "{g}"
        c, a, b = out._inputs
        return ("{g}" if c.requires_grad else None,
                _gradient_product_text(out, b._data.T, "{x2}.T", "{x2}") if a.requires_grad
                else None, None), "{x1}", "{g}"


def _add_bias(data, c, op):
    """data + c (in place when the dtype allows: no second temporary); c must broadcast to
    data's shape without growing it."""
    cd = c._data
    try:
        if cd.dtype is data.dtype:  # add_bias_array's common case: in place, where numpy
            return np.add(data, cd, data)  # refuses a bias that would grow data
        shape = data.shape
        data = add_bias_array(data, cd)
    except (ValueError, TypeError):
        data = None
    if data is None or data.shape != shape:
        raise shape_error(op, f"the bias of shape {c.shape} (dtype {c.dtype}) does not broadcast "
                              f"to the product's shape") from None
    return data


def add_bias_array(data, cd):
    """data + cd, in place when the dtype allows."""
    if cd.dtype == data.dtype or np.result_type(data, cd) == data.dtype:
        return np.add(data, cd, data)  # out= given by position: less to parse per call
    return data + cd


def addmm(c, a, b):
    """c + a @ b, with a (n, k), b (k, m) and c broadcastable to (n, m); one node instead of
    two (as torch.addmm)."""
    c, a, b = as_tensor(c), as_tensor(a), as_tensor(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise shape_error("addmm", f"needs 2-D a (n, k) and b (k, m), got shapes {a.shape} and "
                                   f"{b.shape}")
    data = product(a._data, b._data)
    data = _add_bias(data, c, "addmm")
    return record(AddMM, data, (c, a, b))


class Linear(Op):
    """x @ weight^T + bias, as torch.nn.functional.linear: dx = g W, dW = g^T x (in W's own
    layout, no transposed copy), dbias = g (summed to bias's shape by the engine)."""
    name = "linear"
    inputs = ("x", "weight", "bias")
    saves = ("x", "weight")
    view = False
    rule = "d(x W^T + b) = (g W, g^T x, g)"
    hazard = None
    memory = Memory(same=(2,))
    split_input = 1
    layout = (0, 1)

    @staticmethod
    def forward(out, x, w, *bias):
        data = product(x, w.T)
        return data if not bias else add_bias_array(data, bias[0])

    @staticmethod
    def backward(g, out, xp):
        x, w = out._inputs[0], out._inputs[1]
        grads = (g @ xp.val(w) if x.requires_grad else None,
                 g.T @ xp.val(x) if w.requires_grad else None)
        return grads if len(out._inputs) == 2 else grads + (g,)

    @staticmethod
    def backward_split(g, out):
        x, w = out._inputs[0], out._inputs[1]
        grads = (product(g, w._data) if x.requires_grad else None, None)
        return (grads if len(out._inputs) == 2 else grads + (g,)), g, x._data

    @staticmethod
    def inline_forward(out, x, w, *bias):
        if not dot_applies(x, w.T):
            return None
        if not bias:
            return "{x0}.dot({x1}.T)"
        if _adds_in_place(x.dtype, bias[0]):
            return _PRODUCT_PLUS_BIAS.format(a="{x0}", b="{x1}.T", c="{x2}")
        return None

    @staticmethod
    def inline_split(out):
        if out is None:  # the eager sweep's step, for any node (sweep_steps.py)
            return (product_text("{g}", "{x1}", two_d=True), None, "{g}"), "{g}", "{x0}"
        x, w = out._inputs[0], out._inputs[1]
        grads = (_gradient_product_text(out, w._data, "{x1}", "{x1}") if x.requires_grad
                 else None, None)
        return (grads if len(out._inputs) == 2 else grads + ("{g}",)), "{g}", "{x0}"


def linear(x, weight, bias=None):
    """x @ weight.T + bias for x (n, in) and weight (out, in), as torch.nn.functional.linear
    (one node; the layers of nn and each recurrent step use it). `bias` may be anything that
    broadcasts to (n, out): a (out,) vector, or a per-step input projection (n, out)."""
    if not isinstance(x, Tensor):  # as_tensor, without a call: every layer's op
        x = Tensor(x)
    if not isinstance(weight, Tensor):
        weight = Tensor(weight)
    xd, wd = x._data, weight._data
    xs, ws = xd.shape, wd.shape
    if len(xs) != 2 or len(ws) != 2 or xs[1] != ws[1]:
        raise shape_error("linear", f"needs x (n, in) and weight (out, in), got shapes "
                                    f"{x.shape} and {weight.shape}")
    # product(xd, wd.T), its common case asked here (both are 2-D): no call around it
    wt = wd.T
    data = (xd.dot(wt) if xd.dtype is wd.dtype and xd.size > 1 and wd.size > 1
            else product(xd, wt))
    if bias is None:
        return record(Linear, data, (x, weight))
    if not isinstance(bias, Tensor):
        bias = Tensor(bias)
    return record(Linear, _add_bias(data, bias, "linear"), (x, weight, bias))
