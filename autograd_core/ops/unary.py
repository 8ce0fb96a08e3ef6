"""Elementwise functions of one tensor: exp log sqrt abs tanh sigmoid logsigmoid relu clip."""
import numpy as np

from .. import hazards  # noqa: F401  (the ops name their hazard checks)
from ..function import Memory, Op, as_tensor, record
from ..exact_scalars import ONES
from ..quiet_exp import quiet, restore
from ..tensor import Tensor

__all__ = ["abs", "clip", "exp", "log", "logsigmoid", "relu", "sigmoid", "sqrt", "tanh"]  # exported as ag.<name>


class Exp(Op):
    name = "exp"
    inputs = ("x",)
    saves = ("output",)
    view = False
    rule = "d exp(x) = exp(x) g"
    hazard = hazards.exp_overflow
    memory = Memory()
    batch = "elementwise"
    inline_forward = "np.exp({x0})"
    inline_backward = ("{g} * {out}._data",)

    @staticmethod
    def forward(out, x):
        return np.exp(x)

    @staticmethod
    def backward(g, out, xp):
        return (g * xp.val(out),)


def exp(x):
    if not isinstance(x, Tensor):  # as_tensor, without a call: one of the hot ops
        x = Tensor(x)
    return record(Exp, np.exp(x._data), (x,))


class Log(Op):
    name = "log"
    inputs = ("x",)
    saves = ("x",)
    view = False
    rule = "d log(x) = g / x"
    hazard = hazards.log_near_zero
    memory = Memory()
    batch = "elementwise"
    inline_forward = "np.log({x0})"
    inline_backward = ("{g} / {x0}",)

    @staticmethod
    def forward(out, x):
        return np.log(x)

    @staticmethod
    def backward(g, out, xp):
        return (g / xp.val(out._inputs[0]),)


def log(x):
    """Natural logarithm."""
    if not isinstance(x, Tensor):  # as_tensor, without a call: one of the hot ops
        x = Tensor(x)
    return record(Log, np.log(x._data), (x,))


class Sqrt(Op):
    """d sqrt(x) = 1 / (2 sqrt(x)). At exactly 0 the derivative is +inf; the engine uses 0
    instead (a subgradient of the norms built on sqrt, e.g. |x| = sqrt(x^2), so that
    sqrt(sum(x^2)) has a finite gradient at x = 0 instead of nan)."""
    name = "sqrt"
    inputs = ("x",)
    saves = ("output",)
    view = False
    rule = "d sqrt(x) = g / (2 sqrt(x))"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return np.sqrt(x)

    @staticmethod
    def backward(g, out, xp):
        y = xp.val(out)
        zero = out._data == 0
        if not zero.any():
            return (g / (2 * y),)
        return (xp.where(zero, 0.0, g / (2 * xp.where(zero, 1.0, y))),)


def sqrt(x):
    x = as_tensor(x)
    return record(Sqrt, np.sqrt(x._data), (x,))


class Abs(Op):
    """d|x| = sign(x); the subgradient 0 is used at x = 0 (as PyTorch does)."""
    name = "abs"
    inputs = ("x",)
    saves = ("x",)
    view = False
    rule = "d|x| = sign(x) g"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return np.abs(x)

    @staticmethod
    def backward(g, out, xp):
        return (g * np.sign(out._inputs[0]._data),)


def abs(x):
    x = as_tensor(x)
    return record(Abs, np.abs(x._data), (x,))


class Tanh(Op):
    """d tanh = 1 - tanh^2, computed from the output."""
    name = "tanh"
    inputs = ("x",)
    saves = ("output",)
    view = False
    rule = "d tanh(x) = (1 - y^2) g"
    hazard = hazards.tanh_saturated
    memory = Memory(temporaries=1)
    batch = "elementwise"
    inline_forward = "np.tanh({x0})"
    # g times a factor of the output alone: a replayed loop computes the factor of all its
    # steps at once (replay_texts.factor), with the same bits
    # (one[dtype]: a 1 of the output's dtype, the same bits as a Python 1, less numpy work)
    inline_backward = ("{g} * (one[{out}._data.dtype] - {out}._data * {out}._data)",)

    @staticmethod
    def forward(out, x):
        return np.tanh(x)

    @staticmethod
    def backward(g, out, xp):
        y = xp.val(out)
        return (g * (1 - y * y),)


def tanh(x):
    if not isinstance(x, Tensor):  # as_tensor, without a call: one of the hot ops
        x = Tensor(x)
    return record(Tanh, np.tanh(x._data), (x,))


class Sigmoid(Op):
    """d sigmoid = s (1 - s), computed from the output."""
    name = "sigmoid"
    inputs = ("x",)
    saves = ("output",)
    view = False
    rule = "d sigmoid(x) = y (1 - y) g"
    hazard = hazards.sigmoid_saturated
    memory = Memory(temporaries=1)
    batch = "elementwise"
    inline_backward = ("{g} * ({out}._data - {out}._data * {out}._data)",)

    @staticmethod
    def forward(out, x):
        return sigmoid_array(x)

    @staticmethod
    def backward(g, out, xp):
        s = xp.val(out)
        return (g * (s - s * s),)


def sigmoid(x):
    """1 / (1 + exp(-x)), accurate to a few units in the last place wherever the value is a
    normal number of the dtype (float32: down to x = -87), and never overflowing."""
    if not isinstance(x, Tensor):  # as_tensor, without a call: one of the hot ops
        x = Tensor(x)
    return record(Sigmoid, sigmoid_array(x._data), (x,))


def sigmoid_array(x):
    """1 / (1 + exp(-x)) on an array: a few units in the last place from the true value, and
    exactly 0 (or 1) where exp(-x) overflows (underflows): the true value there is below the
    dtype's smallest normal number (within it of 1). Neither is an error worth a warning."""
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    e = np.negative(x)
    if type(e) is not np.ndarray:  # a 0-d input gives a numpy scalar
        e = np.asarray(e)
    token = quiet()  # exp(-x) may overflow, 1 / (1 + exp(-x)) underflow: both are the value
    try:
        np.exp(e, out=e)
        np.add(e, ONES[e.dtype], out=e)  # e += 1 (a Python 1 costs numpy more)
        return np.reciprocal(e, out=e)
    finally:
        restore(token)


class LogSigmoid(Op):
    """log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)): finite for every finite x (where
    log(sigmoid(x)) underflows to log(0)); d/dx = sigmoid(-x)."""
    name = "logsigmoid"
    inputs = ("x",)
    saves = ("x",)
    view = False
    rule = "d log sigmoid(x) = sigmoid(-x) g"
    hazard = None
    memory = Memory(temporaries=1)

    @staticmethod
    def forward(out, x):
        return logsigmoid_array(x)

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]
        if xp.recording:  # create_graph: sigmoid(-x) as a function of x
            return (g * sigmoid(-x),)
        return (g * sigmoid_array(-x._data),)


def logsigmoid(x):
    """log(sigmoid(x)), computed without forming sigmoid(x) (as torch's logsigmoid)."""
    x = as_tensor(x)
    return record(LogSigmoid, logsigmoid_array(x._data), (x,))


def logsigmoid_array(x):
    xd = float_array(x)
    return np.minimum(xd, 0) - log1p_exp_minus_abs(xd)


def float_array(x):
    """`x`, or a float64 copy of an integer or bool array."""
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def log1p_exp_minus_abs(x):
    """log(1 + exp(-|x|)), the smooth part of softplus and logsigmoid: in (0, log 2], and 0
    where exp(-|x|) underflows (no warning: 0 is the value)."""
    with np.errstate(under="ignore"):
        return np.log1p(np.exp(-np.abs(x)))


class Relu(Op):
    """d relu = 1 where x > 0, else 0 (0 at x = 0, as PyTorch)."""
    name = "relu"
    inputs = ("x",)
    saves = ("x",)
    view = False
    rule = "d relu(x) = g where x > 0"
    hazard = None
    memory = Memory()
    batch = "elementwise"
    inline_forward = "np.maximum({x0}, 0)"
    inline_backward = ("{g} * ({x0} > 0)",)

    @staticmethod
    def forward(out, x):
        return np.maximum(x, 0)

    @staticmethod
    def backward(g, out, xp):
        return (g * (out._inputs[0]._data > 0),)


def relu(x):
    if not isinstance(x, Tensor):  # as_tensor, without a call: one of the hot ops
        x = Tensor(x)
    return record(Relu, np.maximum(x._data, 0), (x,))


class Clip(Op):
    """Gradient to x where min <= x <= max (bounds included, as PyTorch's clamp), else to the
    bound that was applied, when that bound is a tensor."""
    name = "clip"
    inputs = ("x", "min", "max")
    saves = ("bounds", "x", "min", "max")
    arguments = ("bounds",)  # the bounds given as numbers or arrays; copied when recorded
    view = False
    rule = "g where min <= x <= max, else to the bound applied"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x, *bounds):
        (lo, hi), lo_is_input, hi_is_input = out._saved
        if bounds:  # tensor bounds: this call's values, for the rule too
            bounds = list(bounds)
            lo = bounds.pop(0) if lo_is_input else lo
            hi = bounds.pop(0) if hi_is_input else hi
            out._saved = ((lo, hi), lo_is_input, hi_is_input)
        return np.clip(x, lo, hi)

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]._data
        (lo, hi), lo_is_input, hi_is_input = out._saved
        below = x < lo if lo is not None else np.zeros(x.shape, dtype=bool)
        above = x > hi if hi is not None else np.zeros(x.shape, dtype=bool)
        grads = [g * ~(below | above)]
        if lo_is_input:
            grads.append(g * below)
        if hi_is_input:
            grads.append(g * above)
        return tuple(grads)


def clip(x, min=None, max=None):
    """Limit values to [min, max] (either may be None), like np.clip. Bounds may be numbers,
    arrays or tensors; tensor bounds get the gradient where they are applied."""
    x = as_tensor(x)
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    inputs = [x]
    for bound in (min, max):
        if isinstance(bound, Tensor):
            inputs.append(bound)
    lo = min._data if isinstance(min, Tensor) else min
    hi = max._data if isinstance(max, Tensor) else max
    try:
        data = np.clip(x._data, lo, hi)
    except ValueError:
        raise ValueError(f"clip: bounds do not broadcast with a tensor of shape {x.shape}") \
            from None
    return record(Clip, data, tuple(inputs),
                  ((lo, hi), isinstance(min, Tensor), isinstance(max, Tensor)))
