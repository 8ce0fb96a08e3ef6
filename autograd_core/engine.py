"""The reverse sweep: one pass over the recorded graph in reverse creation order.

Gradients are accumulated in a dict keyed by node during the sweep; `.grad` is written only on
leaves (and on tensors that asked for `retain_grad()`). The walk is iterative, so graphs of any
depth (a 100,000-step unroll) work without touching Python's recursion limit.
"""
import itertools
import threading

import numpy as np

from . import function
from .backmath import ArrayMath, TensorMath
from .anomaly import check_gradient
from .grad_mode import _state, set_grad_enabled
from .graph import by_creation
from .tensor import Tensor, _make, version_of


def _collect(roots):
    """Nodes reachable from `roots` (newest first) and the leaves that require grad.
    Every check that can fail happens here, before the sweep changes anything."""
    seen = set(roots)
    nodes, leaves = [], []
    stack = list(seen)
    last_inplace = function.last_inplace
    while stack:
        t = stack.pop()
        if t._op is None:
            leaves.append(t)
            continue
        inputs = t._inputs
        if inputs is None:
            raise RuntimeError(_freed_message(t))
        if last_inplace > t._seq:  # something was modified in place since t was recorded
            _check_versions(t)
        nodes.append(t)
        for i in inputs:
            if i.requires_grad and i not in seen:
                seen.add(i)
                stack.append(i)
    nodes.sort(key=by_creation, reverse=True)
    return nodes, leaves


def _freed_message(t):
    """The stale-graph guard: most often a hidden state carried over from the previous batch
    without detach(), so say that first."""
    label = f"'{t.name}'" if t.name else f"of shape {tuple(t.shape)}"
    where = f" (recorded at time step {t._step})" if t._step is not None else ""
    epoch = getattr(t, "_epoch", None)
    freed = _freed_sizes.get(epoch)
    by = (f"backward #{epoch}, which released {freed} nodes" if freed is not None
          else "an earlier backward")
    return (f"backward: the tensor {label}{where}, made by {t._op.name}, belongs to a graph "
            f"that was already freed by {by}. If it is a hidden state carried over from an "
            f"earlier batch, cut it there with h = h.detach() (truncated BPTT). Only if you "
            f"mean to backpropagate through that old graph again, call the first backward "
            f"with retain_graph=True.")


# backward number -> how many nodes it released (the latest few, for the stale-graph guard)
_freed_sizes = {}
_backward_count = itertools.count(1)


_freed_lock = threading.Lock()  # backwards may run in several threads at once
_grad_lock = threading.Lock()  # guards the check-then-write of a leaf's .grad


def _remember_release(epoch, count):
    with _freed_lock:
        _freed_sizes[epoch] = count
        if len(_freed_sizes) > 64:
            del _freed_sizes[next(iter(_freed_sizes))]


_VIEW_OPS = ("transpose", "reshape", "getitem", "broadcast_to")


def _describe(t):
    """A tensor's name, or the name of the tensor it is a view of, or its shape."""
    if t.name:
        return f"'{t.name}'"
    base, path = t, []
    while base._op is not None and base._op.name in _VIEW_OPS and base._inputs:
        path.append(base._op.name)
        base = base._inputs[0]
        if base.name:
            return f"'{base.name}' (through {' of '.join(path)})"
    return f"of shape {t.shape} ({t.dtype})"


def _check_versions(t):
    """Raise if a value the rule of `t` reads was changed in place after `t` was recorded
    (through the tensor itself, a view of it or an alias: they share one counter)."""
    op = t._op
    if op.uses_output and version_of(t) > t._seq:
        raise RuntimeError(f"backward: the output {_describe(t)} of {op.name} was modified in "
                           f"place after it was computed, and {op.name}'s derivative needs it")
    if op.uses_inputs:
        for i in t._inputs:
            if version_of(i) > t._seq:
                raise RuntimeError(
                    f"backward: the tensor {_describe(i)} needed by the derivative of "
                    f"{op.name} was modified in place after it was used (an optimizer step "
                    f"or an in-place op between forward and backward?). Recompute the "
                    f"forward, or modify a copy.")


def _add_into_buffer(op, g, t, acc, owned):
    """For ops whose input gradient is sparse (indexing): add into one zero-initialised buffer
    per input instead of materialising a full-size array at every use (x[t] in a loop over t
    would otherwise cost O(T^2))."""
    inp = t._inputs[0]
    if not inp.requires_grad:
        return
    buf = acc.get(inp)
    if buf is None or inp not in owned:
        fresh = np.zeros(inp.shape, dtype=np.result_type(g, inp._data))
        if buf is not None:
            fresh += buf
        buf = acc[inp] = fresh
        owned.add(inp)
    op.backward_into(g, t, buf)


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
    if create_graph:
        return g if g.dtype == like.dtype else g.astype(like.dtype)
    return _make(np.array(g, dtype=like.dtype, copy=True))


def _accumulate_grad(t, g, create_graph):
    if t.grad is None:
        t.grad = _as_grad_tensor(g, t, create_graph)
    elif create_graph:
        t.grad = t.grad + g
    else:
        t.grad._data = t.grad._data + g.astype(t.grad.dtype, copy=False)


def _stacked_products(parts, g):
    """sum_i left_i^T right_i (+ g, the gradient from other uses) as one matrix product of
    the stacked factors: a weight shared by T time steps gets one large product, not T small.
    The result is a new array that only the sweep holds."""
    if len(parts) == 1:
        left, right = parts[0]
        total = left.T @ right
    else:
        total = (np.concatenate([left for left, _ in parts]).T
                 @ np.concatenate([right for _, right in parts]))
    if g is not None:
        total = total + g
    return total


def _batched_backward(op, g, t, acc, owned, pending):
    """The fast paths of `op` (Op.backward_into, Op.backward_split): the gradients still to
    accumulate, or None where the rule must run as usual."""
    if op.backward_into is not None:
        _add_into_buffer(op, g, t, acc, owned)
        return ()
    weight = t._inputs[op.split_input]
    split = op.backward_split(g, t) if weight.requires_grad else None
    if split is None:
        return None
    grads, left, right = split
    parts = pending.get(weight)
    if parts is None:
        pending[weight] = [(left, right)]
    else:
        parts.append((left, right))
    return grads


def _watch(t, g, grads, xp, anomaly, trace):
    """Anomaly checks and the trace callback, on the contributions of node `t` summed to
    their inputs' shapes, before any is accumulated."""
    grads, sent = list(grads), []
    for k, (inp, gi) in enumerate(zip(t._inputs, grads)):
        if gi is None or not inp.requires_grad:
            continue
        if gi.shape != inp._data.shape:
            gi = grads[k] = xp.sum_to(gi, inp._data.shape)
        if anomaly:
            check_gradient(t, k, gi)
        sent.append((k, inp, gi))
    if trace is not None:
        trace(t, g, sent)
    return grads


def _sweep(roots, root_grads, retain_graph, create_graph, wanted=None, trace=None):
    """Run the reverse sweep. With `wanted` (tensors), return their gradients instead of
    writing `.grad` anywhere. Dicts are keyed by the tensors themselves (hashed by identity).
    `trace(node, grad, [(k, input, contribution), ...])` is told each step (trace.py)."""
    xp = TensorMath if create_graph else ArrayMath
    nodes, leaves = _collect(roots)
    acc = {}
    for r, g in zip(roots, root_grads):
        prev = acc.get(r)
        acc[r] = g if prev is None else prev + g
    want = None if wanted is None else set(wanted)
    captured = {}
    # Tensors whose gradient in `acc` is an array the sweep allocated itself: only those may
    # be accumulated into in place (a gradient handed over by a rule may be shared, e.g. add
    # gives the same array to both inputs). Keyed by tensor, not array: a node is visited
    # after all its consumers, so an entry never outlives its use.
    owned = set()
    pop, get = acc.pop, acc.get
    # Anomaly mode and a trace look at every contribution; otherwise, on plain arrays, the
    # batched fast paths apply.
    anomaly = _state.anomaly
    watched = anomaly or trace is not None
    fast = not create_graph and not watched
    pending = {}  # matrix -> [(left, right), ...]: its gradient is sum left^T right
    epoch = next(_backward_count)
    if not retain_graph:
        _remember_release(epoch, len(nodes))
    with set_grad_enabled(create_graph):
        for t in nodes:
            g = pop(t, None)
            if pending:
                parts = pending.pop(t, None)
                if parts is not None:
                    g = _stacked_products(parts, g)
                    parts = None  # the factors may be large: free them now
            if g is None:
                continue
            if t._hooks:
                g = _apply_hooks(t, g, xp)
            if want is not None:
                if t in want:
                    captured[t] = g
            elif t._retain:
                _accumulate_grad(t, g, create_graph)
            op = t._op
            grads = None
            if op.batched and fast:
                grads = _batched_backward(op, g, t, acc, owned, pending)
            if grads is None:
                grads = op.backward(g, t, xp)
                if watched:
                    grads = _watch(t, g, grads, xp, anomaly, trace)
            for inp, gi in zip(t._inputs, grads):
                if gi is None or not inp.requires_grad:
                    continue
                prev = get(inp)
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
                    prev = acc[inp] = prev + gi
                    if type(prev) is np.ndarray:  # 0-d results are immutable scalars
                        owned.add(inp)
            if not retain_graph:
                t._inputs = None
                t._saved = None
                t._epoch = epoch
        # Every deferred product first: a leaf's hook may change another leaf in place (an
        # optimizer step inside backward), and the products must read the forward values.
        while pending:
            leaf, parts = pending.popitem()  # popped: its factors are freed once used
            acc[leaf] = _stacked_products(parts, acc.get(leaf))
            owned.add(leaf)
        parts = None
        for leaf in leaves:
            g = acc.pop(leaf, None)
            if g is None:
                continue
            if leaf._hooks:
                owned.discard(leaf)  # a hook may have kept it
                g = _apply_hooks(leaf, g, xp)
            if want is not None:
                if leaf in want:
                    captured[leaf] = g
                continue
            with _grad_lock:  # backwards in several threads may share a leaf
                if leaf.grad is None and leaf in owned and g.dtype == leaf._data.dtype:
                    leaf.grad = _make(g)  # an array only the sweep held: no copy needed
                else:
                    _accumulate_grad(leaf, g, create_graph)
    return captured


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
        g = np.ones(t.shape, dtype=t.dtype)
    else:
        g = gradient._data if isinstance(gradient, Tensor) else np.asarray(gradient, t.dtype)
        if g.shape != t.shape:
            raise ValueError(f"{op}: the gradient has shape {g.shape} but the output has "
                             f"shape {t.shape}")
    if create_graph:
        return gradient if isinstance(gradient, Tensor) else _make(g)
    return g


def backward(tensor, gradient=None, retain_graph=None, create_graph=False):
    """Accumulate the gradient of `tensor` into `.grad` of every leaf that requires grad.

    `gradient` is d(loss)/d(tensor); it may be omitted for a one-element tensor. Without
    `retain_graph` the graph's saved values are released. With `create_graph` the sweep
    itself is recorded, so the gradients can be differentiated again.
    """
    if retain_graph is None:
        retain_graph = create_graph
    g = _root_gradient("backward", tensor, gradient, create_graph)
    _sweep((tensor,), (g,), retain_graph, create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
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
    captured = _sweep(outputs, roots, retain_graph, create_graph, wanted=inputs)
    result = []
    for k, t in enumerate(inputs):
        g = captured.get(t)
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: input {k} ({_describe(t)}) was not used to compute "
                                   f"the outputs; pass allow_unused=True to get None for it")
            result.append(None)
        else:
            result.append(_as_grad_tensor(g, t, create_graph))
    return tuple(result)
