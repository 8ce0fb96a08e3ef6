"""The Tensor: a numpy array that can remember how it was computed.

Operators and methods delegate to the op functions in `ops/`; each op's derivative rule sits
beside its forward there. A tensor made by an op while grad mode is on and some input requires
grad is a node of the graph (see `function.py`): it keeps its op, its inputs and saved values.
"""
from operator import attrgetter

import numpy as np

from .grad_mode import _state
from .hooks import HookHandle, Hooks
from .versions import share_version, version_of

_FLOAT_DEFAULT = np.float32


def _to_array(data, dtype):
    """numpy array for `data`: ndarrays keep their dtype, Python floats and lists of floats
    become float32, Python ints int64 and bools bool (as `torch.tensor` does)."""
    if isinstance(data, Tensor):
        data = data._data
    if isinstance(data, np.ndarray) or isinstance(data, np.generic):
        arr = np.asarray(data)
    else:
        arr = np.asarray(data)
        if arr.dtype == np.float64:
            arr = arr.astype(_FLOAT_DEFAULT)
        elif arr.dtype.kind == "O":
            raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__} "
                            f"(object array); give numbers, nested lists or an ndarray")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"Tensor: unsupported dtype {arr.dtype}; use a bool, integer or float dtype")
    return arr


def _check_can_require_grad(arr, where="Tensor"):
    if arr.dtype.kind != "f":
        raise TypeError(f"{where}: only floating-point tensors can require grad, got dtype "
                        f"{arr.dtype}; convert first, e.g. Tensor(x, dtype=np.float32)")


class Tensor:
    """An n-dimensional array with reverse-mode automatic differentiation. Its operators and
    numpy-style methods (exp, sum, reshape, ...) are bound in `tensor_ops.py`.

    Tensor(data, requires_grad=False, dtype=None, name=None). `data` may be a Python number,
    a nested list or an ndarray (used without a copy, as `np.asarray` does).
    """

    __slots__ = ("_data", "requires_grad", "grad", "_op", "_inputs", "_saved", "_seq",
                 "_version", "name", "_hooks", "_step", "_epoch", "__weakref__")

    # numpy defers to our reflected operators (ndarray + Tensor -> Tensor.__radd__) and routes
    # its ufuncs (np.exp(t)) through __array_ufunc__.
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        arr = _to_array(data, dtype)
        if requires_grad:
            _check_can_require_grad(arr)
        fill(self, arr, bool(requires_grad))
        self.name = name
        if isinstance(data, Tensor) and arr is data._data:
            share_version(self, data)

    # ---- the array ---------------------------------------------------------------------
    @property
    def data(self):
        """The underlying ndarray. Assigning to it counts as an in-place change."""
        return self._data

    @data.setter
    def data(self, value):
        arr = value._data if isinstance(value, Tensor) else np.asarray(value)
        if self.requires_grad and arr.shape != self._data.shape:  # its gradient's shape
            raise ValueError(f"data: cannot give a tensor that requires grad another shape "
                             f"({self._data.shape} -> {arr.shape}); make a new tensor")
        self._data = arr
        self._bump_version()

    # (an attrgetter reads through _data in C: no Python call per read)
    shape = property(attrgetter("_data.shape"), doc="Shape tuple, as ndarray.shape.")
    ndim = property(attrgetter("_data.ndim"), doc="Number of dimensions.")
    size = property(attrgetter("_data.size"), doc="Number of elements.")
    dtype = property(attrgetter("_data.dtype"), doc="numpy dtype of the data.")

    @property
    def is_leaf(self):
        """True for tensors made by the user (not by a recorded op)."""
        return self._op is None

    @property
    def step(self):
        """The time step this tensor was recorded in (see `step_scope`), or None."""
        return self._step

    @property
    def op(self):
        """The Op class that produced this tensor (its `name`, rule text, what it saves), or
        None for leaves and constants."""
        return self._op

    @property
    def inputs(self):
        """The tensors this one was computed from (empty for leaves and constants). Raises
        RuntimeError once a backward without retain_graph has freed the graph."""
        if self._inputs is None:
            from .graph import check_intact
            check_intact(self, "inputs")
        return self._inputs

    @property
    def saved(self):
        """What the op saved for its derivative besides the input and output tensors (axes,
        a constant, a copied index or target, ...), as the op's forward passed it; None for
        leaves and once a backward has freed the graph."""
        return self._saved

    @property
    def version(self):
        """How many in-place changes came before (a stamp that only grows; shared with views
        and aliases of the same memory)."""
        return version_of(self)

    @property
    def grad_fn(self):
        """The op that produced this tensor, or None for leaves and constants."""
        return None if self._op is None else self._op()

    def numpy(self):
        """The data as an ndarray (shared, not copied)."""
        return self._data

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if _state.recorder is not None:  # ag.replay is recording: control flow may follow
            _state.recorder.read(self, "item()")
        if self._data.size != 1:
            raise ValueError(f"item: only one-element tensors can be converted to a Python "
                             f"number, got shape {self.shape}")
        return self._data.item()

    def tolist(self):
        if _state.recorder is not None:
            _state.recorder.read(self, "tolist()")
        return self._data.tolist()

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        return self._data if dtype is None else self._data.astype(dtype, copy=False)

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._data)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        if _state.recorder is not None:
            _state.recorder.read(self, "bool()")
        return bool(self._data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    __hash__ = object.__hash__  # defining __eq__ would remove it; tensors hash by identity

    def __repr__(self):
        body = np.array2string(self._data, separator=", ", prefix="Tensor(", threshold=200)
        extra = []
        if self._data.dtype != np.float32:
            extra.append(f"dtype={self._data.dtype}")
        if self._op is not None:
            extra.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        if self.name:
            extra.append(f"name={self.name!r}")
        return f"Tensor({body}{''.join(', ' + e for e in extra)})"

    # ---- autograd ----------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False, observer=None):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` (see `engine.backward`)."""
        _engine_backward(self, gradient, retain_graph=retain_graph, create_graph=create_graph,
                 observer=observer)

    def detach(self):
        """A new leaf sharing this data (and its version counter), cut from the graph."""
        out = _make(self._data)
        out.name = self.name
        share_version(out, self)
        return out

    def requires_grad_(self, requires_grad=True):
        if requires_grad:
            _check_can_require_grad(self._data, "requires_grad_")
        if not requires_grad and self._op is not None:
            raise RuntimeError("requires_grad_: cannot turn off requires_grad of a non-leaf "
                               "tensor; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep this non-leaf tensor's gradient in `.grad` after backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: the tensor does not require grad")
        if self._hooks is None:
            self._hooks = Hooks()
        self._hooks.retain = True

    def register_hook(self, fn):
        """Call fn(grad) when this tensor's gradient is computed; a returned value replaces
        the gradient. Returns a handle with `.remove()`."""
        if not self.requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does "
                               "not require grad")
        if self._hooks is None:
            self._hooks = Hooks()
        self._hooks.append(fn)
        return HookHandle(self._hooks, fn)

    def zero_grad(self):
        """Forget the accumulated gradient (same as `t.grad = None`)."""
        self.grad = None

    # ---- in-place changes (never recorded; bump the version counter) ------------------
    def _bump_version(self):
        from .function import stamp_inplace
        if type(self._version) is int:
            self._version = stamp_inplace()
        else:  # shared with views and aliases of the same memory
            self._version.value = stamp_inplace()

    def _check_inplace(self, what, other=None):
        if not _state.enabled:
            return
        if self.requires_grad:
            kind = "a leaf tensor that requires grad" if self._op is None else \
                "a tensor recorded in the graph"
            raise RuntimeError(f"{what}: in-place change of {kind} (shape {self.shape}); "
                               f"do it under `with no_grad():` or use the out-of-place form")
        if isinstance(other, Tensor) and other.requires_grad:  # its gradient would be lost
            raise RuntimeError(f"{what}: writing a tensor that requires grad into one that "
                               f"does not (shape {self.shape}) would lose its gradient; use "
                               f"the out-of-place form (x = x + y, ag.where, ag.concatenate)")

    def _inplace(self, what, fn, other=None):
        self._check_inplace(what, other)
        value = other._data if isinstance(other, Tensor) else other
        try:
            fn(self._data, value)
        except (IndexError, ValueError, TypeError) as e:
            # numpy's own subclasses (UFuncTypeError...) take other arguments: raise the base.
            kind = next(k for k in (IndexError, ValueError, TypeError) if isinstance(e, k))
            raise kind(f"{what}: {e} (tensor of shape {self.shape}, dtype {self.dtype})") \
                from None
        self._bump_version()
        return self

    def add_(self, other):
        return self._inplace("add_", lambda a, b: np.add(a, b, out=a, casting="same_kind"), other)

    def sub_(self, other):
        return self._inplace("sub_", lambda a, b: np.subtract(a, b, out=a, casting="same_kind"),
                             other)

    def mul_(self, other):
        return self._inplace("mul_", lambda a, b: np.multiply(a, b, out=a, casting="same_kind"),
                             other)

    def div_(self, other):
        return self._inplace("div_", lambda a, b: np.divide(a, b, out=a, casting="same_kind"),
                             other)

    def copy_(self, other):
        return self._inplace("copy_", lambda a, b: np.copyto(a, b, casting="same_kind"), other)

    def fill_(self, value):
        return self._inplace("fill_", lambda a, b: a.fill(b), value)

    def zero_(self):
        return self.fill_(0)

    def __setitem__(self, index, value):
        index = _index_arrays(index)
        self._inplace("__setitem__", lambda a, b: a.__setitem__(index, b), value)

    def _inplace_or_fallback(self, fn, other):
        # `x += y` works in place on tensors outside the graph; when x or y requires grad (in
        # grad mode) it falls back to `x = x + y`, which records normally.
        if _state.enabled and (self.requires_grad or (isinstance(other, Tensor)
                                                       and other.requires_grad)):
            return NotImplemented
        return fn(other)

    def __iadd__(self, other):
        return self._inplace_or_fallback(self.add_, other)

    def __isub__(self, other):
        return self._inplace_or_fallback(self.sub_, other)

    def __imul__(self, other):
        return self._inplace_or_fallback(self.mul_, other)

    def __itruediv__(self, other):
        return self._inplace_or_fallback(self.div_, other)

_new = object.__new__


def fill(t, data, requires_grad=False, op=None, inputs=(), saved=None, seq=0, step=None):
    """Set every slot of the new tensor `t` (Tensor() comes here; `_make` and
    function.record write the same out, on the hot paths: a slot added here goes there too).
    Returns `t`."""
    t._data = data
    t.requires_grad = requires_grad
    t.grad = None
    t._op = op
    t._inputs = inputs
    t._saved = saved
    t._seq = seq
    t._version = 0
    t.name = None
    t._hooks = None
    t._step = step
    t._epoch = None
    return t


def _make(data):
    """A tensor around an existing ndarray, without any checks (the ops' fast path; every
    leaf gradient a backward writes is made here). fill's slots, written out: a slot added
    there goes here too (a test holds the three to every slot)."""
    t = _new(Tensor)
    t._data = data
    t.requires_grad = False
    t.grad = None
    t._op = None
    t._inputs = ()
    t._saved = None
    t._seq = 0
    t._version = 0
    t.name = None
    t._hooks = None
    t._step = None
    t._epoch = None
    return t


def _numpy_call_kwargs(op, kwargs):
    """np.sum(t) and friends call t.sum(axis=..., dtype=None, out=None): accept the defaults."""
    for key, value in kwargs.items():
        if key not in ("dtype", "out", "initial", "where") or value is not None and not (
                key == "where" and value is True):
            raise TypeError(f"{op}: unsupported argument {key}={value!r}")


def _index_arrays(index):
    """Replace tensors inside an index by their arrays."""
    if isinstance(index, Tensor):
        return index._data
    if isinstance(index, tuple):
        return tuple(i._data if isinstance(i, Tensor) else i for i in index)
    return index


# Operators and numpy-style methods live in tensor_ops.py, which needs the op modules,
# which need Tensor: so it is imported once the class exists.
from . import tensor_ops  # noqa: E402,F401
# The sweep needs Tensor too: bound once both modules exist (an import per call costs ~0.8 us).
from .engine import backward as _engine_backward  # noqa: E402
