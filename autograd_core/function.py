"""How an operation records itself in the graph.

A tensor produced by a differentiable op *is* the graph node: it keeps the op (a class holding
the derivative rule), its input tensors and the few extra values the rule needs. Nothing points
back from an input to its output, so the graph holds no reference cycles and is freed by plain
reference counting once the last output is dropped or a backward releases it.
"""
import itertools

from numpy import asarray, ndarray

from .anomaly import remember
from .grad_mode import _state
from .tensor import Tensor

_new = object.__new__

# One clock for creation order and in-place writes. An output is always stamped after its
# inputs, so sorting by stamp is a topological order; an input whose `_version` is newer than
# the output's stamp was modified in place after it was used.
clock = itertools.count(1)
# The stamp of the latest in-place change anywhere: a backward skips the per-input version
# checks of every node recorded after it.
last_inplace = 0


def stamp_inplace():
    """A new version stamp for a tensor modified in place."""
    global last_inplace
    last_inplace = next(clock)
    return last_inplace

REGISTRY = {}


class Op:
    """A differentiable operation. Subclasses set `name` and write `backward`.

    `backward(g, out, xp)` returns one gradient per input (None where an input gets none).
    `out` is the output tensor: its `_inputs` and `_saved` are what the forward kept. Rules are
    written once for two array types: `xp` is `ArrayMath` (numpy arrays, the fast path) or
    `TensorMath` (tensors, recorded, for `create_graph=True`); `xp.val(t)` gives the value of
    a tensor in the current kind. Gradients may come back in a broadcast shape: the engine
    sums them back to each input's shape.
    """

    name = None
    uses_inputs = True  # the rule reads input values: they must not be modified in place
    uses_output = False  # the rule reads the output value
    # Optional fast path for ops with one input and a sparse gradient: backward_into(g, out,
    # buf) adds the input's gradient into `buf` (zeros or earlier gradient) in place.
    backward_into = None
    # Optional fast path for ops whose input `split_input` is a matrix W with gradient
    # left^T @ right (matmul, addmm, linear): backward_split(g, out) returns (the inputs'
    # gradients with None for W, left, right), or None where it does not apply. The sweep
    # keeps the (left, right) pairs of every use of W and multiplies once, stacked, when it
    # reaches W: one large product for a weight shared by T time steps instead of T small.
    backward_split = None
    split_input = None
    batched = False  # has one of the two fast paths above (set for each subclass)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "backward" in cls.__dict__:  # a new rule: inherited fast paths would bypass it
            for fast_path in ("backward_into", "backward_split"):
                if fast_path not in cls.__dict__:
                    setattr(cls, fast_path, None)
        cls.batched = cls.backward_into is not None or cls.backward_split is not None
        if cls.name is not None:
            if cls.name in REGISTRY:
                raise RuntimeError(f"op {cls.name!r} registered twice")
            REGISTRY[cls.name] = cls

    def __repr__(self):
        return f"<{type(self).__name__}Backward>"

    @staticmethod
    def backward(g, out, xp):
        raise NotImplementedError


def record(op, data, inputs, saved=None):
    """Wrap `data` as the output of `op`; link it to `inputs` when a gradient can flow.
    (The hot path of every op: each slot is written exactly once.)"""
    if type(data) is not ndarray:  # numpy gives 0-d results as scalars
        data = asarray(data)
    out = _new(Tensor)
    out._data = data
    out.grad = None
    out.name = None
    out._hooks = None
    out._retain = False
    out._version = 0
    if _state.enabled:
        for t in inputs:
            if t.requires_grad:
                out.requires_grad = True
                out._op = op
                out._inputs = inputs
                out._saved = saved
                out._seq = next(clock)
                out._step = _state.step
                if _state.anomaly:
                    remember(out)
                return out
    out.requires_grad = False
    out._op = None
    out._inputs = ()
    out._saved = None
    out._seq = 0
    out._step = None
    return out


def as_tensor(value):
    """A tensor for `value`; tensors pass through unchanged (no copy)."""
    return value if isinstance(value, Tensor) else Tensor(value)
