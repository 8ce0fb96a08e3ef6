"""Reductions along axes (sum mean max min logsumexp) and softmax / log_softmax."""
import numpy as np

from ..exact_scalars import exact
from ..function import Memory, Op, as_tensor, record
from ._checks import kept_shape, normalize_axes, normalize_axis
from .shape import broadcast_array

__all__ = ["log_softmax", "logsumexp", "max", "mean", "min", "softmax", "sum"]  # as ag.<name>


def _spread(g, x, axes, xp):
    """The gradient of a reduction, put back in the input's shape (keepdims, then broadcast)."""
    if g.size == 1 and not xp.recording:  # one value (a loss's reduction): filled in at once
        return broadcast_array(g, x.shape)
    return xp.broadcast_to(g.reshape(kept_shape(x.shape, axes)), x.shape)


class Sum(Op):
    name = "sum"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "g spread over the summed axes"
    hazard = None
    memory = Memory(view=True)
    batch = "reduce"

    @staticmethod
    def forward(out, x):
        # the array's method: np.sum's dispatch costs more than a small sum itself
        return x.sum(axis=out._saved, keepdims=out._data.ndim == x.ndim)

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]
        return (_spread(g, x, out._saved, xp),)


def sum(x, axis=None, keepdims=False):
    """Sum over `axis` (None: all, an int or a tuple), as np.sum."""
    x = as_tensor(x)
    axes = normalize_axes("sum", axis, x.ndim)
    return record(Sum, x._data.sum(axis=axes, keepdims=keepdims), (x,), axes)


class Mean(Op):
    name = "mean"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "g / n spread over the axes"
    hazard = None
    memory = Memory()
    batch = "reduce"

    @staticmethod
    def forward(out, x):
        return mean_array(x, out._saved, out._data.ndim == x.ndim)

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]
        count = x._data.size // out._data.size  # the reduced elements (x is never empty)
        # scaled before it is spread: one small product (and a float16 count cannot overflow);
        # 1/count as an array of g's dtype where that holds it exactly (exact_scalars.py)
        scale = 1.0 / count
        return (_spread(g * (exact[g.dtype][scale] if not xp.recording else scale), x,
                        out._saved, xp),)


def mean(x, axis=None, keepdims=False):
    """Mean over `axis`, as np.mean."""
    x = as_tensor(x)
    axes = normalize_axes("mean", axis, x.ndim)
    if x.size == 0:
        raise ValueError(f"mean: cannot take the mean of an empty tensor (shape {x.shape})")
    return record(Mean, mean_array(x._data, axes, keepdims), (x,), axes)


def mean_array(xd, axes, keepdims):
    if xd.dtype.kind == "f" and xd.dtype.itemsize >= 4:  # what np.mean computes, less Python
        count = 1
        for a in axes:
            count *= xd.shape[a]
        return np.add.reduce(xd, axis=axes, keepdims=keepdims) / xd.dtype.type(count)
    return np.mean(xd, axis=axes, keepdims=keepdims)


class _Extremum(Op):
    """max / min: the gradient goes to the elements equal to the result; on ties it is split
    equally among them (the derivative is not defined there; this keeps it symmetric)."""

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]._data
        axes = out._saved
        best = out._data.reshape(kept_shape(x.shape, axes))
        hit = x == best
        if out._data.dtype.kind == "f" and np.isnan(best).any():  # a NaN is the extremum
            hit |= np.isnan(x) & np.isnan(best)
        hit = hit.astype(out._data.dtype)
        hit /= hit.sum(axis=axes, keepdims=True)
        return (_spread(g, x, axes, xp) * hit,)


class Max(_Extremum):
    name = "max"
    inputs = ("x",)
    saves = ("x", "output")
    view = False
    rule = "g to the maxima (split on ties)"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return np.max(x, axis=out._saved, keepdims=out._data.ndim == x.ndim)


class Min(_Extremum):
    name = "min"
    inputs = ("x",)
    saves = ("x", "output")
    view = False
    rule = "g to the minima (split on ties)"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return np.min(x, axis=out._saved, keepdims=out._data.ndim == x.ndim)


def _extremum(op, fn, x, axis, keepdims):
    x = as_tensor(x)
    axes = normalize_axes(op.name, axis, x.ndim)
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"{op.name}: zero-size reduction axis in a tensor of shape {x.shape}")
    return record(op, fn(x._data, axis=axes, keepdims=keepdims), (x,), axes)


def max(x, axis=None, keepdims=False):
    """Maximum over `axis`, as np.max."""
    return _extremum(Max, np.max, x, axis, keepdims)


def min(x, axis=None, keepdims=False):
    """Minimum over `axis`, as np.min."""
    return _extremum(Min, np.min, x, axis, keepdims)


def _stable_logsumexp(data, axes):
    """log(sum(exp(data))) over axes, keepdims shape, without overflow."""
    peak = np.max(data, axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0)
    return np.log(np.sum(np.exp(data - peak), axis=axes, keepdims=True)) + peak


class LogSumExp(Op):
    """d logsumexp(x) = softmax(x) along the reduced axes."""
    name = "logsumexp"
    inputs = ("x",)
    saves = ("x",)
    view = False
    rule = "g softmax(x)"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return _stable_logsumexp(x, out._saved).reshape(out._data.shape)

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]
        axes = out._saved
        # softmax from the input with an exact shift (not exp(x - lse): lse is rounded, which
        # at logits of 1e4 in float32 costs 1e-4 of relative accuracy)
        peak = np.max(x._data, axis=axes, keepdims=True)
        e = xp.exp(xp.val(x) - np.where(np.isfinite(peak), peak, 0))
        return (_spread(g, x, axes, xp) * (e / e.sum(axis=axes, keepdims=True)),)


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over `axis`, stable for large inputs."""
    x = as_tensor(x)
    axes = normalize_axes("logsumexp", axis, x.ndim)
    data = _stable_logsumexp(x._data, axes)
    if not keepdims:
        data = data.reshape([s for i, s in enumerate(data.shape) if i not in axes])
    return record(LogSumExp, data, (x,), axes)


class Softmax(Op):
    """d softmax: y * (g - sum(g * y)) along the axis."""
    name = "softmax"
    inputs = ("x",)
    saves = ("output",)
    view = False
    rule = "y (g - sum(g y))"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return softmax_array(x, out._saved)

    @staticmethod
    def backward(g, out, xp):
        y = xp.val(out)
        return (y * (g - (g * y).sum(axis=out._saved, keepdims=True)),)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, computed after subtracting the maximum."""
    x = as_tensor(x)
    axis = normalize_axis("softmax", axis, x.ndim)
    return record(Softmax, softmax_array(x._data, axis), (x,), axis)


def softmax_array(xd, axis):
    e = np.exp(xd - np.max(xd, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


class LogSoftmax(Op):
    """d log_softmax: g - softmax(x) * sum(g) along the axis."""
    name = "log_softmax"
    inputs = ("x",)
    saves = ("output",)
    view = False
    rule = "g - softmax(x) sum(g)"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return log_softmax_array(x, out._saved)

    @staticmethod
    def backward(g, out, xp):
        return (g - xp.exp(xp.val(out)) * g.sum(axis=out._saved, keepdims=True),)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`: the stable way to take log(softmax(x))."""
    x = as_tensor(x)
    axis = normalize_axis("log_softmax", axis, x.ndim)
    return record(LogSoftmax, log_softmax_array(x._data, axis), (x,), axis)


def log_softmax_array(xd, axis):
    shifted = xd - np.max(xd, axis=axis, keepdims=True)  # exact for the largest
    shifted = np.where(np.isfinite(shifted), shifted, xd)  # rows of all -inf stay -inf
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
