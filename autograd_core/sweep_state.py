"""The state of one reverse sweep (engine._sweep): the gradients gathered so far, which of
them the sweep may add into in place, the deferred products of shared weights, the hooks and
observers met on the way, and the writing of each leaf's `.grad` at the end."""
import threading
from operator import attrgetter

import numpy as np

from . import function
from .backmath import ArrayMath, TensorMath
from .graph_walk import _check_inputs
from .observers import read_only
from .ops.linalg import product
from .ops.shape import astype
from .stacked_products import stacked_products
from .tensor import Tensor, _make


_grad_lock = threading.Lock()  # guards the check-then-write of a leaf's .grad
_RUN = 64  # a shared weight's deferred factors are stacked by runs of this many uses
_dtype = attrgetter("dtype")


def _apply_hooks(t, g, xp):
    for hook in list(t._hooks):
        result = hook(g if xp is TensorMath else _make(g))
        if result is not None:
            result = result if isinstance(result, Tensor) else Tensor(result)
            if result.shape != t.shape:
                raise RuntimeError(f"hook: a hook returned a gradient of shape {result.shape} "
                                   f"for a tensor of shape {t.shape}")
            g = result if xp is TensorMath else result._data
    return g


def _as_grad_tensor(g, like, create_graph):
    """The value stored in `.grad` or returned by `grad()`: a tensor of `like`'s dtype,
    owning its data (so later in-place changes touch nothing else)."""
    if create_graph:  # a recorded copy: its own writable array, still differentiable
        return astype(g, like.dtype)
    return _make(np.array(g, dtype=like.dtype, copy=True))


def _accumulate_grad(t, g, create_graph):
    if t.grad is None:
        t.grad = _as_grad_tensor(g, t, create_graph)
    elif create_graph:
        t.grad = t.grad + g
    else:
        t.grad._data = t.grad._data + g.astype(t.grad.dtype, copy=False)


class _Sweep:
    """The state of one reverse sweep: gradients gathered so far (keyed by tensor, hashed by
    identity), which of them are buffers the sweep allocated itself (only those may be added
    into in place: a rule may hand the same array to two inputs, as add does), and the
    deferred products of shared weights (Op.backward_split)."""

    def __init__(self, create_graph, observers, shared=()):
        self.shared = shared  # tensors read by more than one use (see defer)
        self.xp = TensorMath if create_graph else ArrayMath
        self.create_graph = create_graph
        self.observers = [o for o in observers if o.contributions] if observers else ()
        self.glancers = [o for o in observers if not o.contributions] if observers else ()
        self.acc, self.owned, self.pending, self.deferred_by = {}, set(), {}, {}
        self.runs = {}  # weight -> its uses' factors stacked in runs so far (see stack_run)

    # ---- the capabilities an op may declare (see Op.backward_into / backward_split) -------
    def add_into(self, op, g, t):
        """Indexing: add into one zero-initialised buffer per input instead of making a
        full-size array at every use (x[t] in a loop over t would otherwise cost O(T^2))."""
        inp = t._inputs[0]
        if not inp.requires_grad:
            return
        buf = self.acc.get(inp)
        if buf is None or inp not in self.owned:
            fresh = np.zeros(inp.shape, dtype=np.result_type(g, inp._data))
            if buf is not None:
                fresh += buf
            buf = self.acc[inp] = fresh
            self.owned.add(inp)
        op.backward_into(g, t, buf)

    def defer(self, weight, left, right, node):
        """weight's gradient gets left^T right, computed with its other uses when the sweep
        reaches it. `node` (the use) is kept to check, then, that the factors it read from
        its inputs were not changed in place meanwhile (by a hook), until its factors are
        stacked into a run or multiplied (stack_run, finish). A weight that no other
        use reads gets its product now, as its gradient, which only the sweep holds."""
        if weight not in self.shared:
            self.acc[weight] = product(left.T, right)
            self.owned.add(weight)
            return
        parts = self.pending.get(weight)
        if parts is None:
            self.pending[weight] = parts = []
        parts.append((left, right))
        self.deferred_by.setdefault(weight, []).append((node._inputs, node._seq, node._op))
        if len(parts) == _RUN:
            self.stack_run(weight, parts)

    def stack_run(self, weight, parts):
        """The factors of `weight`'s last uses stacked now, while the sweep has them at hand,
        as one pair (in the order they were recorded, as stacked_products stacks them): at
        the end the sweep stacks a few runs, not every use's factors. In a long unroll those
        are thousands of small arrays spread over memory, and their stacking grew faster than
        the length. The stacks are the same arrays either way: the same product, the same
        bits."""
        run = parts[::-1]
        lefts, rights = [left for left, _ in run], [right for _, right in run]
        if len(set(map(_dtype, lefts))) != 1 or len(set(map(_dtype, rights))) != 1:
            return  # mixed dtypes: numpy's promotion of a stack of stacks could differ from
            # the stack's (int16 and uint16 factors beside float32 ones), so this weight's
            # factors wait for the end, as they all did before
        # The uses' inputs are checked now, as their factors are copied into the stacks: a
        # change made later cannot reach the product (as in PyTorch, where a saved tensor is
        # checked when its rule reads it). Their tensors are let go here, while they are at
        # hand: kept to the end, a long unroll's thousands of states were freed there, cold
        # (7 of 180 ms of a 10,000-step backward, an eleventh of that at 2,000 steps).
        self.check_deferred(weight)
        self.runs.setdefault(weight, []).append((np.concatenate(lefts), np.concatenate(rights)))
        parts.clear()

    def factors(self, weight, parts):
        """Every deferred factor pair of `weight` (stacked runs, then the uses since), in the
        order the sweep met them."""
        runs = self.runs.pop(weight, None)
        return parts if runs is None else runs + parts

    def products(self, t, g):
        """`g` plus the deferred products of `t`'s uses as a weight, if any."""
        parts = self.pending.pop(t, None)
        if parts is None:
            return g
        self.check_deferred(t)
        return stacked_products(self.factors(t, parts), g)

    def check_deferred(self, weight):
        for inputs, seq, op in self.deferred_by.pop(weight, ()):
            if function.last_inplace > seq:
                _check_inputs(op, inputs, seq)

    # ---- what happens on arrival at a node, and the observers ------------------------------
    def arrive(self, t, g, want, captured):
        hooks = t._hooks
        if hooks:
            if self.pending and type(g) is np.ndarray:  # g may be a deferred factor too (a
                g = g.copy()  # bias's gradient is the linear's): a hook that changes its
            g = _apply_hooks(t, g, self.xp)  # argument in place changes only its own
        if want is not None:
            if t in want:
                captured[t] = g
        elif hooks is not None and hooks.retain:
            _accumulate_grad(t, g, self.create_graph)
        return g

    def glance(self, t, g):
        """What node t received, shown to the observers that see no contributions."""
        g = read_only(g)
        for observer in self.glancers:
            observer.node(t, g, None)

    def watch(self, t, g, grads):
        """Sum each contribution to its input's shape and show the observers."""
        grads, sent = list(grads), []
        for k, (inp, gi) in enumerate(zip(t._inputs, grads)):
            if gi is None or not inp.requires_grad:
                continue
            if gi.shape != inp._data.shape:
                gi = grads[k] = self.xp.sum_to(gi, inp._data.shape)
            sent.append((k, inp, read_only(gi)))
        for observer in self.observers:
            observer.node(t, read_only(g), sent)
        return grads

    def finish(self, leaves, want, captured):
        """Every deferred product first (a leaf's hook may change another leaf in place, an
        optimizer step inside backward, and the products must read the forward values);
        then each leaf's hooks and `.grad`."""
        acc, owned = self.acc, self.owned
        while self.pending:
            leaf, parts = self.pending.popitem()  # popped: its factors are freed once used
            self.check_deferred(leaf)
            acc[leaf] = stacked_products(self.factors(leaf, parts), acc.get(leaf))
            owned.add(leaf)
        parts = None
        if want is not None:
            for leaf in leaves:
                g = acc.pop(leaf, None)
                if g is not None:
                    g = _apply_hooks(leaf, g, self.xp) if leaf._hooks else g
                    if leaf in want:
                        captured[leaf] = g
            return
        # Backwards in several threads may share a leaf: the lock guards each check-then-write
        # of a .grad. Without hooks it is taken once for all the leaves (~0.2 us a leaf less);
        # hooks run user code (a backward of its own, an exception), so with them it is taken
        # leaf by leaf, after the leaf's hooks ran.
        for leaf in leaves:
            if leaf._hooks:
                break
        else:
            with _grad_lock:
                for leaf in leaves:
                    g = acc.pop(leaf, None)  # a copied gradient is freed at once
                    if g is not None:
                        self.write_grad(leaf, g)
            return
        for leaf in leaves:  # each .grad written before the next leaf's hooks run, which
            g = acc.pop(leaf, None)  # may read it
            if g is None:
                continue
            if leaf._hooks:
                owned.discard(leaf)  # a hook may have kept it
                g = _apply_hooks(leaf, g, self.xp)
            with _grad_lock:
                self.write_grad(leaf, g)

    def write_grad(self, leaf, g):
        """leaf.grad gets `g` (added to what it holds); the caller holds _grad_lock."""
        if leaf.grad is None and leaf in self.owned and g.dtype == leaf._data.dtype:
            leaf.grad = _make(g)  # an array only the sweep held: no copy needed
        else:
            _accumulate_grad(leaf, g, self.create_graph)
