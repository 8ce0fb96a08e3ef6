"""Indexing (ints, slices, None, ..., boolean masks, integer arrays) and its adjoint."""
import numpy as np

from ..function import Memory, Op, as_tensor, record
from ..tensor import _index_arrays
from ..versions import share_version

__all__ = ["getitem", "scatter"]  # exported as ag.<name>

_BASIC = (int, np.integer, slice, type(None), type(Ellipsis))


_PLAIN = frozenset((int, slice))  # exact types: the common x[t] and x[:, :h] of a loop


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if type(p) not in _PLAIN and (not isinstance(p, _BASIC) or isinstance(p, bool)):
            return False
    return True


def add_at(buf, index, g, basic):
    """buf[index] += g, where repeated indices accumulate."""
    if basic:
        buf[index] += g
    else:
        np.add.at(buf, index, g)


def scatter_array(g, shape, index, basic):
    """Zeros of `shape` with `g` added at `index`; repeated indices accumulate."""
    out = np.zeros(shape, dtype=g.dtype)
    add_at(out, index, g, basic)
    return out


class GetItem(Op):
    name = "getitem"
    inputs = ("x",)
    saves = ("index",)
    arguments = ("index",)  # not differentiated; copied when recorded
    view = True
    rule = "g put back at the index"
    hazard = None
    memory = Memory()
    batch = "index"

    @staticmethod
    def forward(out, x):
        part = x[out._saved[0]]
        return part if type(part) is np.ndarray else np.asarray(part)  # a scalar from 0-d

    @staticmethod
    def inline_forward(out, x):  # an index that gave an array gives one every call
        return "{x0}[{out}._saved[0]]" if out._data.ndim else None

    @staticmethod
    def backward(g, out, xp):
        index, basic = out._saved
        return (xp.scatter(g, out._inputs[0].shape, index, basic),)

    @staticmethod
    def backward_into(g, out, buf):
        index, basic = out._saved
        add_at(buf, index, g, basic)


def getitem(x, index):
    """x[index] with numpy semantics."""
    x = as_tensor(x)
    if type(index) not in _PLAIN:
        index = _index_arrays(index)
    try:
        data = x._data[index]
    except (IndexError, TypeError, ValueError) as e:
        raise IndexError(f"getitem: {e} (tensor of shape {x.shape})") from None
    basic = _is_basic(index)
    out = record(GetItem, np.asarray(data), (x,), (index, basic))
    if basic:  # a view of x's memory
        share_version(out, x)
    return out


class Scatter(Op):
    """The adjoint of indexing: its gradient is indexing again (needed for create_graph)."""
    name = "scatter"
    inputs = ("x",)
    saves = ("index",)
    arguments = ("index",)  # not differentiated; copied when recorded
    view = False
    rule = "g read at the index"
    hazard = None
    memory = Memory()

    @staticmethod
    def forward(out, x):
        index, basic = out._saved
        return scatter_array(x, out._data.shape, index, basic)

    @staticmethod
    def backward(g, out, xp):
        index, _ = out._saved
        return (g[index],)


def scatter(g, shape, index, basic=None):
    """Zeros of `shape` with `g` added at `index` (repeated indices accumulate)."""
    g = as_tensor(g)
    index = _index_arrays(index)
    if basic is None:
        basic = _is_basic(index)
    return record(Scatter, scatter_array(g._data, tuple(shape), index, basic), (g,),
                  (index, basic))
