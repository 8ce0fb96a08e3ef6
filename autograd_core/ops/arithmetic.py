"""Binary arithmetic (+ - * / **) and negation (maximum, minimum and where: selection.py).

A Python number operand uses a "scalar" variant of the op that keeps the number in `_saved`
instead of wrapping it in a tensor: cheaper, and numpy keeps the tensor's dtype.
"""
import math

import numpy as np

from .. import hazards  # noqa: F401  (the ops name their hazard checks)
from ..exact_scalars import exact
from ..function import Memory, Op, as_tensor, record
from ..tensor import Tensor
from ._binary import binary as _binary
from ._checks import SCALARS, broadcast_error

__all__ = ["add", "div", "mul", "neg", "pow", "sub"]  # exported as ag.<name>


class Add(Op):
    name = "add"
    inputs = ("a", "b")
    saves = ()
    view = False
    rule = "d(a + b) = (g, g)"
    hazard = None
    memory = Memory(same=(0, 1))
    batch = "sum"
    inline_forward = "np.add({x0}, {x1})"
    inline_backward = ("{g}", "{g}")

    @staticmethod
    def forward(out, a, b):
        return np.add(a, b)

    @staticmethod
    def backward(g, out, xp):
        return g, g


class AddScalar(Op):
    name = "add_scalar"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "d(x + c) = g"
    hazard = None
    memory = Memory(same=(0,))
    batch = "elementwise"
    inline_forward = "{x0} + {out}._saved"
    inline_backward = ("{g}",)

    @staticmethod
    def forward(out, x):
        return x + out._saved

    @staticmethod
    def backward(g, out, xp):
        return (g,)


def add(a, b):
    """a + b with numpy broadcasting."""
    if isinstance(b, Tensor) and isinstance(a, Tensor):  # _binary's work, without its call:
        try:  # two tensors are the common case of the hottest ops (add, mul)
            data = np.add(a._data, b._data)
        except ValueError:
            raise broadcast_error("add", a, b) from None
        return record(Add, data, (a, b))
    if type(b) in SCALARS and isinstance(a, Tensor):
        d = a._data
        return record(AddScalar, d + exact[d.dtype][b], (a,), b)
    if type(a) in SCALARS and isinstance(b, Tensor):
        d = b._data
        return record(AddScalar, exact[d.dtype][a] + d, (b,), a)
    return _binary(Add, "add", np.add, a, b)


class Sub(Op):
    name = "sub"
    inputs = ("a", "b")
    saves = ()
    view = False
    rule = "d(a - b) = (g, -g)"
    hazard = None
    memory = Memory(same=(0,))
    batch = "elementwise"
    inline_forward = "np.subtract({x0}, {x1})"
    inline_backward = ("{g}", "-{g}")

    @staticmethod
    def forward(out, a, b):
        return np.subtract(a, b)

    @staticmethod
    def backward(g, out, xp):
        return g, -g


class RSubScalar(Op):
    """c - x."""
    name = "rsub_scalar"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "d(c - x) = -g"
    hazard = None
    memory = Memory()
    batch = "elementwise"
    inline_forward = "{out}._saved - {x0}"
    inline_backward = ("-{g}",)

    @staticmethod
    def forward(out, x):
        return out._saved - x

    @staticmethod
    def backward(g, out, xp):
        return (-g,)


def sub(a, b):
    """a - b with numpy broadcasting."""
    if type(b) in SCALARS and isinstance(a, Tensor):
        c = -b
        if not c and not isinstance(c, float) and a._data.dtype.kind in "fc":
            c = -0.0  # an integer 0: x + 0 would make -0.0 into 0.0, where x - 0 keeps it
        d = a._data
        return record(AddScalar, d - exact[d.dtype][b], (a,), c)
    if type(a) in SCALARS and isinstance(b, Tensor):
        d = b._data
        return record(RSubScalar, exact[d.dtype][a] - d, (b,), a)
    return _binary(Sub, "sub", np.subtract, a, b)


class Neg(Op):
    name = "neg"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "d(-x) = -g"
    hazard = None
    memory = Memory()
    batch = "elementwise"
    inline_forward = "-{x0}"
    inline_backward = ("-{g}",)

    @staticmethod
    def forward(out, x):
        return -x

    @staticmethod
    def backward(g, out, xp):
        return (-g,)


def neg(x):
    """-x."""
    x = as_tensor(x)
    return record(Neg, -x._data, (x,))


class Mul(Op):
    name = "mul"
    inputs = ("a", "b")
    saves = ("a", "b")
    view = False
    rule = "d(a * b) = (g * b, g * a)"
    hazard = None
    memory = Memory()
    batch = "elementwise"
    inline_forward = "np.multiply({x0}, {x1})"
    inline_backward = ("{g} * {x1}", "{g} * {x0}")  # run only for inputs that require grad

    @staticmethod
    def forward(out, a, b):
        return np.multiply(a, b)

    @staticmethod
    def backward(g, out, xp):
        a, b = out._inputs
        return (g * xp.val(b) if a.requires_grad else None,
                g * xp.val(a) if b.requires_grad else None)


class MulScalar(Op):
    name = "mul_scalar"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "d(c x) = c g"
    hazard = None
    memory = Memory()
    batch = "elementwise"
    inline_forward = "{x0} * {out}._saved"
    inline_backward = ("{g} * exact[{g}.dtype][{out}._saved]",)

    @staticmethod
    def forward(out, x):
        return x * out._saved

    @staticmethod
    def backward(g, out, xp):
        return (g * out._saved,)


def mul(a, b):
    """a * b (elementwise) with numpy broadcasting."""
    if isinstance(b, Tensor) and isinstance(a, Tensor):  # as in add
        try:
            data = np.multiply(a._data, b._data)
        except ValueError:
            raise broadcast_error("mul", a, b) from None
        return record(Mul, data, (a, b))
    if type(b) in SCALARS and isinstance(a, Tensor):
        d = a._data
        return record(MulScalar, d * exact[d.dtype][b], (a,), b)
    if type(a) in SCALARS and isinstance(b, Tensor):
        d = b._data
        return record(MulScalar, exact[d.dtype][a] * d, (b,), a)
    return _binary(Mul, "mul", np.multiply, a, b)


class Div(Op):
    name = "div"
    inputs = ("a", "b")
    saves = ("a", "b")
    view = False
    rule = "d(a / b) = (g / b, -g * a / b^2)"
    hazard = hazards.divisor_near_zero
    memory = Memory()
    batch = "elementwise"

    @staticmethod
    def forward(out, a, b):
        return np.divide(a, b)

    @staticmethod
    def backward(g, out, xp):
        a, b = out._inputs
        bv = xp.val(b)
        ga = g / bv if a.requires_grad else None
        gb = -g * xp.val(a) / (bv * bv) if b.requires_grad else None
        return ga, gb


class DivScalar(Op):
    """x / c."""
    name = "div_scalar"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "d(x / c) = g / c"
    hazard = hazards.constant_divisor_near_zero
    memory = Memory()
    batch = "elementwise"

    @staticmethod
    def forward(out, x):
        return x / out._saved

    @staticmethod
    def backward(g, out, xp):
        return (g / (out._saved if xp.recording else exact[g.dtype][out._saved]),)


class RDivScalar(Op):
    """c / x: d/dx = -c / x^2."""
    name = "rdiv_scalar"
    inputs = ("x",)
    saves = ("x",)
    view = False
    rule = "d(c / x) = -c g / x^2"
    hazard = hazards.reciprocal_near_zero
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return out._saved / x

    @staticmethod
    def backward(g, out, xp):
        x = xp.val(out._inputs[0])
        return (-g * out._saved / (x * x),)


def div(a, b):
    """a / b (true division) with numpy broadcasting."""
    if type(b) in SCALARS and isinstance(a, Tensor):
        d = a._data
        return record(DivScalar, d / exact[d.dtype][b], (a,), b)
    if type(a) in SCALARS and isinstance(b, Tensor):
        return record(RDivScalar, a / b._data, (b,), a)
    return _binary(Div, "div", np.divide, a, b)


def _log_where_positive(xp, x, raw):
    # log(x) where x > 0 and 0 elsewhere: d(b^p)/dp = b^p log b, taken as 0 where b <= 0
    # (the value there is 0 or undefined, as PyTorch does).
    return xp.log(xp.where(raw > 0, x, 1.0))


class Pow(Op):
    """a ** b with a tensor exponent: d/da = b a^(b-1), d/db = a^b log a."""
    name = "pow"
    inputs = ("a", "b")
    saves = ("a", "b", "output")
    view = False
    rule = "d(a^b) = (g b a^(b-1), g a^b log a)"
    hazard = hazards.pow_overflow
    memory = Memory()

    @staticmethod
    def forward(out, a, b):
        return np.power(a, b)

    @staticmethod
    def backward(g, out, xp):
        a, b = out._inputs
        av, bv = xp.val(a), xp.val(b)
        ga = None
        if a.requires_grad:
            # 0 where the exponent is 0 (x^0 is constant, also at x = 0) and, as for sqrt,
            # where the base is 0 and 0 < exponent < 1 (the derivative there is +inf).
            # (only where the base is 0: elsewhere b a^(b-1) is finite and, with create_graph,
            # must keep its dependence on b)
            zero = (a._data == 0) & ((b._data == 0) | ((b._data > 0) & (b._data < 1)))
            if zero.any():
                safe = xp.where(zero, 1.0, av)  # only where the result is replaced
                ga = xp.where(zero, 0.0, g * bv * safe ** (bv - 1))
            else:
                ga = g * bv * av ** (bv - 1)
        gb = g * xp.val(out) * _log_where_positive(xp, av, a._data) if b.requires_grad else None
        return ga, gb


class PowScalar(Op):
    """x ** c: d/dx = c x^(c-1); 0 at x = 0 when 0 < c < 1 (see Sqrt)."""
    name = "pow_scalar"
    inputs = ("x",)
    saves = ("x",)
    view = False
    rule = "d(x^c) = c x^(c-1) g"
    hazard = hazards.pow_scalar_overflow
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return x ** out._saved

    @staticmethod
    def backward(g, out, xp):
        c = out._saved
        x = xp.val(out._inputs[0])
        if c == 0:  # x^0 is constant, also at x = 0
            return (g * 0.0,)
        if c == 2:
            return (g * 2 * x,)
        if 0 < c < 1:  # +inf at x = 0: use 0 there, as for sqrt
            zero = out._inputs[0]._data == 0
            if zero.any():
                return (xp.where(zero, 0.0, g * c * xp.where(zero, 1.0, x) ** (c - 1)),)
        return (g * c * x ** (c - 1),)


class RPowScalar(Op):
    """c ** x: d/dx = c^x log c."""
    name = "rpow_scalar"
    inputs = ("x",)
    saves = ("output",)
    view = False
    rule = "d(c^x) = c^x log c g"
    hazard = hazards.rpow_overflow
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return out._saved ** x

    @staticmethod
    def backward(g, out, xp):
        c = out._saved
        return (g * xp.val(out) * (math.log(c) if c > 0 else 0.0),)


def pow(a, b):
    """a ** b; either side may be a tensor."""
    if type(b) in SCALARS and isinstance(a, Tensor):
        return record(PowScalar, a._data ** b, (a,), b)
    if type(a) in SCALARS and isinstance(b, Tensor):
        return record(RPowScalar, a ** b._data, (b,), a)
    return _binary(Pow, "pow", np.power, a, b)
