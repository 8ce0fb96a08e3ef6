"""The reverse sweep: one pass over the recorded graph in reverse creation order.

Gradients are accumulated in a dict keyed by node during the sweep; `.grad` is written only on
leaves (and on tensors that asked for `retain_grad()`). The walk is iterative, so graphs of any
depth (a 100,000-step unroll) work without touching Python's recursion limit.
"""
import numpy as np

from . import function
from .backmath import ArrayMath
from .grad_mode import _set_enabled, is_grad_enabled, set_grad_enabled
from .graph_walk import (_backward_count, _check_versions, _collect, _describe,
                         _release_readers, _released)
from .observers import observers_for
from .sweep_state import _as_grad_tensor, _Sweep
from .tensor import Tensor, _make


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
            if fast:  # the rule as text, unless put out of use (False: a split step
                step = t._op.eager_step  # declined, and the general path runs the rule)
                if step is not None and step(t, g, acc, owned, sweep) is not False:
                    if not retain_graph:
                        t._inputs = t._saved = None
                    continue
            op = t._op
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
