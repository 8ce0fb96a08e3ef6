"""Shape operations: reshape transpose swapaxes expand_dims squeeze broadcast_to sum_to astype.
Their gradients only move numbers around, so each rule is the inverse shape operation."""
import numpy as np

from ..function import Memory, Op, as_tensor, record
from ..versions import share_version
from ._checks import normalize_axis, shape_error

__all__ = ["astype", "broadcast_to", "expand_dims", "reshape", "squeeze", "sum_to", "swapaxes", "transpose"]  # exported as ag.<name>


class Reshape(Op):
    name = "reshape"
    inputs = ("x",)
    saves = ()
    view = True
    rule = "g reshaped back"
    hazard = None
    memory = Memory(view=True)

    @staticmethod
    def forward(out, x):
        return x.reshape(out._data.shape)

    @staticmethod
    def backward(g, out, xp):
        return (g.reshape(out._inputs[0].shape),)


def reshape(x, shape):
    """A tensor with the same data in a new shape (one entry may be -1), as np.reshape."""
    x = as_tensor(x)
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        data = x._data.reshape(shape)
    except (ValueError, TypeError) as e:
        raise shape_error("reshape", f"cannot reshape a tensor of shape {x.shape} into shape "
                                     f"{tuple(shape)} ({e})") from None
    out = record(Reshape, data, (x,))
    if np.may_share_memory(data, x._data):
        share_version(out, x)
    return out


def expand_dims(x, axis):
    """Insert a size-1 axis at `axis`, as np.expand_dims."""
    x = as_tensor(x)
    axis = normalize_axis("expand_dims", axis, x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def squeeze(x, axis=None):
    """Remove size-1 axes (all of them, or those in `axis`), as np.squeeze."""
    x = as_tensor(x)
    try:
        shape = np.squeeze(x._data, axis=axis).shape
    except ValueError as e:
        raise shape_error("squeeze", f"{e} (tensor of shape {x.shape}, axis={axis!r})") from None
    return reshape(x, shape)


class Transpose(Op):
    name = "transpose"
    inputs = ("x",)
    saves = ()
    view = True
    rule = "g transposed back"
    hazard = None
    memory = Memory(view=True)

    @staticmethod
    def forward(out, x):
        return x.transpose(out._saved)

    @staticmethod
    def backward(g, out, xp):
        return (g.transpose(tuple(np.argsort(out._saved).tolist())),)


def transpose(x, axes=None):
    """Permute the axes (reverse them when `axes` is None), as np.transpose."""
    x = as_tensor(x)
    if axes is None:
        axes = tuple(range(x.ndim - 1, -1, -1))
    else:
        axes = tuple(int(a) % x.ndim if -x.ndim <= a < x.ndim else a for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise shape_error("transpose", f"axes {axes} are not a permutation of the "
                                           f"{x.ndim} axes of a tensor of shape {x.shape}")
    out = record(Transpose, x._data.transpose(axes), (x,), axes)
    share_version(out, x)
    return out


def swapaxes(x, axis1, axis2):
    """Exchange two axes, as np.swapaxes."""
    x = as_tensor(x)
    a = normalize_axis("swapaxes", axis1, x.ndim)
    b = normalize_axis("swapaxes", axis2, x.ndim)
    axes = list(range(x.ndim))
    axes[a], axes[b] = b, a
    return transpose(x, axes)


class BroadcastTo(Op):
    name = "broadcast_to"
    inputs = ("x",)
    saves = ()
    view = True
    rule = "g summed over the broadcast axes"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return np.broadcast_to(x, out._data.shape)

    @staticmethod
    def backward(g, out, xp):
        return (xp.sum_to(g, out._inputs[0].shape),)


def broadcast_to(x, shape):
    """A read-only view of `x` broadcast to `shape`, as np.broadcast_to."""
    x = as_tensor(x)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    try:
        data = np.broadcast_to(x._data, shape)
    except ValueError:
        raise shape_error("broadcast_to", f"cannot broadcast a tensor of shape {x.shape} to "
                                          f"shape {shape}") from None
    out = record(BroadcastTo, data, (x,))
    share_version(out, x)
    return out


def sum_array_to(g, shape):
    """Sum an array over the axes numpy broadcasting added or stretched, down to `shape`."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    # np.add.reduce is what ndarray.sum runs, without the Python function around it
    if lead == 1 and shape and g.shape[1:] == shape:  # a bias's gradient: rows summed
        return np.add.reduce(g, axis=0)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    return np.add.reduce(g, axis=axes, keepdims=True).reshape(shape)


def broadcast_array(a, shape):
    """`a` broadcast to `shape`: a single value is filled into a new array (numpy's view
    machinery costs more than the fill at the sizes a loss's reduction has), anything else
    is a read-only view, as np.broadcast_to."""
    if a.size == 1:
        out = np.empty(shape, dtype=a.dtype)  # np.full, less Python around it
        # (not out.fill(a.reshape(())): 2.5x the time for a numpy scalar, and in a GRU's
        # training loop the 56-byte blocks numpy allocated there were kept, some 24 KB over
        # 3,000 steps before it levelled off: test_memory's flat-memory check failed at times)
        out[...] = a
        return out
    return np.broadcast_to(a, shape)


class SumTo(Op):
    name = "sum_to"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "g broadcast back"
    hazard = None
    memory = Memory(view=True)

    @staticmethod
    def forward(out, x):
        return sum_array_to(x, out._data.shape)

    @staticmethod
    def backward(g, out, xp):
        return (xp.broadcast_to(g, out._inputs[0].shape),)


def sum_to(x, shape):
    """Sum `x` down to `shape`, undoing a broadcast (the adjoint of broadcast_to)."""
    x = as_tensor(x)
    shape = tuple(shape)
    lead = x.ndim - len(shape)
    if lead < 0 or any(s != 1 and s != x.shape[lead + i] for i, s in enumerate(shape)):
        raise shape_error("sum_to", f"shape {x.shape} does not broadcast from {shape}") from None
    data = sum_array_to(x._data, shape)
    if data is x._data:  # nothing to sum: a copy, as the op is no view
        data = data.copy()
    return record(SumTo, data, (x,))


class AsType(Op):
    name = "astype"
    inputs = ("x",)
    saves = ()
    view = False
    rule = "g converted back"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        return x.astype(out._data.dtype)

    @staticmethod
    def backward(g, out, xp):
        return (g.astype(out._inputs[0].dtype),)


def astype(x, dtype):
    """A copy converted to `dtype`; the gradient is converted back."""
    x = as_tensor(x)
    return record(AsType, x._data.astype(dtype), (x,))
