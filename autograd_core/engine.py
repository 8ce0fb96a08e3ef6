"""The reverse sweep: one pass over the recorded graph in reverse creation order.

Gradients are accumulated in a dict keyed by node during the sweep; `.grad` is written only on
leaves (and on tensors that asked for `retain_grad()`). The walk is iterative, so graphs of any
depth (a 100,000-step unroll) work without touching Python's recursion limit.
"""
import threading
from operator import attrgetter

import numpy as np

from . import function
from .backmath import ArrayMath, TensorMath
from .grad_mode import _set_enabled, is_grad_enabled, set_grad_enabled
from .graph_walk import (_backward_count, _check_inputs, _check_versions, _collect,
                         _describe, _release_readers, _released)
from .observers import observers_for, read_only
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
        its inputs were not changed in place meanwhile (by a hook). A weight that no other
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


def _sweep(roots, root_grads, retain_graph, create_graph, wanted=None, observer=None):
    """The reverse sweep: each node, newest first, hands the gradient it received to its op's
    rule and adds what comes out into its inputs' gradients. With `wanted` (tensors), return
    their gradients instead of writing `.grad` anywhere."""
    epoch = next(_backward_count)
    nodes, leaves, shared = _collect(roots, epoch, claim=not retain_graph)
    sweep = _Sweep(create_graph, observers_for(observer), shared)
    acc, owned, xp, watched = sweep.acc, sweep.owned, sweep.xp, bool(sweep.observers)
    glanced, pending = bool(sweep.glancers), sweep.pending  # the dict itself, never replaced
    for r, g in zip(roots, root_grads):
        acc[r] = g if r not in acc else acc[r] + g
    want, captured = (None if wanted is None else set(wanted)), {}
    wanting = want is not None
    checked_until = function.last_inplace  # _collect checked every version up to here
    fast = not create_graph and not watched  # the ops' declared fast paths may run
    if not retain_graph:
        _released.append((epoch, len(nodes)))
    read = list(nodes) if retain_graph else None  # the loop empties `nodes`
    t = None
    was_enabled = is_grad_enabled()
    try:
        _set_enabled(create_graph)  # as `with set_grad_enabled(...)`, without its object
        while nodes:  # popped: a node is dropped (its arrays freed) once its rule ran
            t = nodes.pop()
            g = acc.pop(t, None)
            if pending:
                g = sweep.products(t, g)
            if g is None:  # nothing reached it: not freed, not claimed
                if not retain_graph:
                    t._epoch = None
                continue
            if t._hooks is not None or wanting:  # hooks or retain_grad (hooks.Hooks)
                g = sweep.arrive(t, g, want, captured)
            if function.last_inplace > checked_until and function.last_inplace > t._seq:
                _check_versions(t)  # a hook changed something in place meanwhile
            if glanced:
                sweep.glance(t, g)
            op = t._op
            step = op.sweep_step
            if fast and step is not None and step[0] is op.backward:  # the rule as text
                if step[1](t, g, acc, owned, sweep) is not False:  # (False: a split step
                    if not retain_graph:  # declined, and the general path runs the rule)
                        t._inputs = t._saved = None
                    continue
            if fast and op.fast_backward is not None:
                grads = op.fast_backward(op, g, t, sweep)
            else:
                grads = op.backward(g, t, xp)
                if watched:
                    grads = sweep.watch(t, g, grads)
            # The chain rule: add into each input. (Inline, as in replayer.py's backward: a
            # function call per contribution costs about 5% of a backward.)
            for inp, gi in zip(t._inputs, grads):
                if gi is None or not inp.requires_grad:
                    continue
                prev = acc.get(inp)
                if gi.shape != inp._data.shape:
                    gi = xp.sum_to(gi, inp._data.shape)
                    if prev is None and type(gi) is np.ndarray:  # summed into a new array
                        acc[inp] = gi
                        owned.add(inp)
                        continue
                if prev is None:
                    acc[inp] = gi
                elif inp in owned:
                    prev += gi
                else:
                    acc[inp] = prev = prev + gi
                    if type(prev) is np.ndarray:  # 0-d results are immutable scalars
                        owned.add(inp)
            grads = gi = prev = None  # no array kept alive by these names past its node
            if not retain_graph:
                t._inputs = t._saved = None
        sweep.finish(leaves, want, captured)
    except BaseException:
        if not retain_graph:  # what was not freed stays usable (the node that raised too)
            for n in nodes + [t] if t is not None else nodes:
                if n._inputs is not None:
                    n._epoch = None
        raise
    finally:
        _set_enabled(was_enabled)
        if retain_graph:
            _release_readers(read)
    return captured


def node_vjp(node, grad):
    """What the derivative rule of `node` (a recorded tensor) sends to each of its inputs for
    the incoming gradient `grad` (an array of node's shape): a list with one array per input,
    summed to that input's shape, or None where an input gets nothing. Nothing is recorded or
    accumulated; tools that carry a gradient through part of a graph use it."""
    if node.is_leaf:
        raise ValueError("node_vjp: the tensor is a leaf; it has no rule")
    inputs = node.inputs  # raises if the graph was freed
    if function.last_inplace > node._seq:
        _check_versions(node)
    grad = np.asarray(grad)
    if grad.shape != node.shape:
        raise ValueError(f"node_vjp: the gradient has shape {grad.shape}, the node {node.shape}")
    result = []
    for inp, gi in zip(inputs, node._op.backward(grad, node, ArrayMath)):
        if gi is None or not inp.requires_grad:
            result.append(None)
        else:
            result.append(gi if gi.shape == inp.shape else ArrayMath.sum_to(gi, inp.shape))
    return result


def _root_gradient(op, t, gradient, create_graph):
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(t).__name__}")
    if not t.requires_grad:
        raise RuntimeError(f"{op}: the tensor {_describe(t)} does not require grad and has no "
                           f"grad_fn (was it made under no_grad, or only from tensors with "
                           f"requires_grad=False?)")
    if gradient is None:
        if t.size != 1:
            raise RuntimeError(f"{op}: the gradient can be implied only for a one-element "
                               f"output; the output has shape {t.shape}, so pass gradient= "
                               f"(or grad_outputs=) of that shape")
        g = np.array(1, dtype=t.dtype).reshape(t.shape)  # np.ones, less Python around it
    else:
        g = gradient._data if isinstance(gradient, Tensor) else np.asarray(gradient, t.dtype)
        if g.shape != t.shape:
            raise ValueError(f"{op}: the gradient has shape {g.shape} but the output has "
                             f"shape {t.shape}")
    if create_graph:
        return gradient if isinstance(gradient, Tensor) else _make(g)
    return g


def backward(tensor, gradient=None, retain_graph=None, create_graph=False, observer=None):
    """Accumulate the gradient of `tensor` into `.grad` of every leaf that requires grad.

    `gradient` is d(loss)/d(tensor); it may be omitted for a one-element tensor. Without
    `retain_graph` the graph's saved values are released. With `create_graph` the sweep
    itself is recorded, so the gradients can be differentiated again. An `observer`
    (a SweepObserver) is shown every step of the sweep.
    """
    if retain_graph is None:
        retain_graph = create_graph
    g = _root_gradient("backward", tensor, gradient, create_graph)
    _sweep((tensor,), (g,), retain_graph, create_graph, observer=observer)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False, observer=None):
    """Gradients of `outputs` with respect to `inputs`, returned as a tuple (nothing is
    written to `.grad`). As `torch.autograd.grad`."""
    single_output = isinstance(outputs, Tensor)
    outputs = (outputs,) if single_output else tuple(outputs)
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if grad_outputs is None or isinstance(grad_outputs, (Tensor, np.ndarray)):
        grad_outputs = (grad_outputs,) * len(outputs) if grad_outputs is None else (grad_outputs,)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: got {len(grad_outputs)} grad_outputs for {len(outputs)} "
                         f"outputs")
    for k, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise RuntimeError(f"grad: input {k} does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    roots = [_root_gradient("grad", o, g, create_graph) for o, g in zip(outputs, grad_outputs)]
    captured = _sweep(outputs, roots, retain_graph, create_graph, wanted=inputs,
                      observer=observer)
    result = []
    for k, t in enumerate(inputs):
        g = captured.get(t)
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: input {k} ({_describe(t)}) was not used to compute "
                                   f"the outputs; pass allow_unused=True to get None for it")
            result.append(None)
        elif create_graph:  # recorded as the sweep recorded it, whatever grad mode is outside
            with set_grad_enabled(True):
                result.append(_as_grad_tensor(g, t, True))
        else:
            result.append(_as_grad_tensor(g, t, False))
    return tuple(result)
