"""The arguments of a replayed call (see replayer.py): the signature that keys a plan, where
each tensor or array sits among the arguments, and the constants an op saved that come from
them (bound to their place, so that each call reads its own)."""
import numpy as np

from .tensor import Tensor
from .versions import share_version


class Refused(Exception):
    """Why a recorded call cannot be replayed."""


PLAIN = (int, float, bool, str, type(None), np.integer, np.floating, np.bool_)


def signature(value):
    """What keys a plan: each tensor's and array's shape, dtype and layout (and whether a
    tensor requires grad), and each plain value itself. Refused for other types."""
    if isinstance(value, Tensor):
        d = value._data
        return ("tensor", d.shape, d.dtype.str, d.strides, value.requires_grad)
    if isinstance(value, np.ndarray):
        return ("array", value.shape, value.dtype.str, value.strides)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(signature(v) for v in value)
    if isinstance(value, PLAIN):
        return ("value", type(value).__name__, value)
    raise Refused(f"an argument of type {type(value).__name__} (not a tensor, array, number "
                   f"or tuple of them)")


def describe(key):
    shapes = [k[1] for k in key if isinstance(k, tuple) and k[0] in ("tensor", "array")]
    if not shapes:
        return "(other Python values among the arguments)"
    return f"(shapes {', '.join(map(str, shapes))})"


def flatten(args, path=()):
    """(path, value) of every tensor and array among the arguments."""
    for k, a in enumerate(args):
        if isinstance(a, (tuple, list)):
            yield from flatten(a, path + (k,))
        elif isinstance(a, (Tensor, np.ndarray)):
            yield path + (k,), a


def argument_at(args, path):
    for k in path:
        args = args[k]
    return args


def probe(value):
    """A float argument that does not require grad becomes a tensor that does, so that what
    the function computes from it is recorded."""
    if isinstance(value, (tuple, list)):
        return type(value)(probe(v) for v in value)
    data = value._data if isinstance(value, Tensor) else value
    if isinstance(data, np.ndarray) and data.dtype.kind == "f" and not (
            isinstance(value, Tensor) and value.requires_grad):
        probed = Tensor(data, requires_grad=True)
        if isinstance(value, Tensor):  # one memory, one version: an in-place change of the
            share_version(probed, value)  # argument before the backward is seen there
        return probed
    return value


def bind(value, recorded, arg_arrays):
    """The constants `value` (as the op was given them; `recorded`: the copies it saved) with
    each array that is an argument, or lies inside one, replaced by where it comes from (an
    Arg); None when none is. Other arrays stay the recorded copies: the second recording
    shows whether they are constant, and `changed` whether they change in place later."""
    if isinstance(value, np.ndarray):
        return inside_argument(value, arg_arrays)
    if isinstance(value, tuple):
        parts = tuple(bind(v, r, arg_arrays) for v, r in zip(value, recorded))
        if all(p is None for p in parts):
            return None
        return tuple(p if p is not None else r for p, r in zip(parts, recorded))
    return None


def inside_argument(value, arg_arrays):
    """An Arg for `value` if it is an argument's array or a view into one, else None;
    refused where it lies in an argument in a way a later call's array cannot be read the
    same (another dtype, or an argument that is not one contiguous block)."""
    for a, path in arg_arrays:
        if a is value:
            return Arg(path)
    for a, path in arg_arrays:
        if not np.may_share_memory(value, a):
            continue
        low, high = np.lib.array_utils.byte_bounds(value)
        a_low, a_high = np.lib.array_utils.byte_bounds(a)
        if a.dtype != value.dtype or not a.flags.c_contiguous or low < a_low or \
                high > a_high:
            raise Refused("an op saved part of an argument that later calls cannot be read "
                           "the same way (another dtype, or an argument that is not one "
                           "contiguous block): pass a contiguous copy")
        offset = value.__array_interface__["data"][0] - a_low
        return Arg(path, (offset, value.shape, value.strides))
    return None


class Arg:
    """An argument's array (at `path` among the arguments), or a view of it."""
    __slots__ = ("path", "view")

    def __init__(self, path, view=None):
        self.path, self.view = path, view

    def __eq__(self, other):
        return isinstance(other, Arg) and (self.path, self.view) == (other.path, other.view)

    def array(self, args):
        a = argument_at(args, self.path)
        a = a._data if isinstance(a, Tensor) else a
        return a if self.view is None else view_at(a, *self.view)


def view_at(a, offset, shape, strides):
    """The view of `a`'s memory at byte `offset` with `shape` and `strides` (as recorded;
    the signature holds `a`'s layout, so the view reads the same elements)."""
    flat = a.reshape(-1)  # a view: the argument's layout is the recorded one
    return np.lib.stride_tricks.as_strided(flat[offset // a.itemsize:], shape, strides,
                                           writeable=False)


def rebuild(template, args):
    """The constants of this call: each bound array copied from its argument (as `record`
    copies them: changing the argument later cannot change the gradient)."""
    if isinstance(template, Arg):
        return np.array(template.array(args), copy=True)
    if isinstance(template, tuple):
        return tuple(rebuild(v, args) for v in template)
    return template
