"""The walk before a reverse sweep: which nodes a backward reaches (in the order the sweep
pops them), the leaves and the tensors read twice, and every check that can fail before the
sweep changes anything (a graph already freed or being read by another backward, a value
changed in place since it was used). A freeing backward claims the nodes it walks; a
retain_graph backward marks them as read until it ends.
"""
import collections
import itertools
import sys
import threading

from . import function
from .graph import by_creation
from .versions import version_of


_collect_lock = threading.Lock()  # a graph is claimed by one freeing backward at a time
# node -> how many sweeps that keep the graph (retain_graph) are reading it now: a freeing
# backward must not free it under them
_readers = {}


def _collect(roots, epoch, claim):
    """Nodes reachable from `roots` (oldest first: the sweep pops the newest), the leaves
    that require grad, and the tensors that more than one use reads (or a root is).
    Every check that can fail happens here, before the sweep changes anything. With `claim`
    (a backward that frees the graph) each node is marked with `epoch`: a second backward
    over the same graph, in this thread or another, finds it taken and stops here. Without
    it the nodes are marked as read until `_release_readers`, so that no freeing backward
    frees them meanwhile."""
    with _collect_lock:
        if claim:
            nodes, leaves, shared, newest_first = _claiming_walk(roots, epoch)
        else:
            nodes, leaves, shared, newest_first = _reading_walk(roots)
            for t in nodes:
                _readers[t] = _readers.get(t, 0) + 1
    # The walk from the root finds nodes almost in reverse creation order (a chain exactly:
    # reversed, then); timsort's runs make the sort near linear (0.6% of a 70,000-node
    # backward).
    if newest_first:
        nodes.reverse()
    else:
        nodes.sort(key=by_creation)
    return nodes, leaves, shared


def _claiming_walk(roots, epoch):
    """The walk of a backward that frees the graph: each tensor is marked with `epoch` when
    it is first reached, and the mark is what tells the walk it was seen (no set). A leaf's
    mark means nothing outside the walk that made it (epochs are not reused); a node's stays
    as the claim, and is taken off again if the walk raises. Depth first: the walk goes on
    with the last new node among a node's inputs and keeps the others on a stack, so that a
    chain is followed without one (and the order is the stack's: a recurrence's chain, then
    the next)."""
    nodes, leaves, shared, stack = [], [], set(roots), []
    last_inplace, readers = function.last_inplace, _readers  # (the dict is changed in place)
    newest_first, previous, after = True, sys.maxsize, None
    try:
        for i in roots:  # as an input below
            if i._op is None:
                if i._epoch != epoch:
                    i._epoch = epoch
                    leaves.append(i)
            elif i._epoch is None and not (readers and i in readers):
                i._epoch = epoch
                stack.append(i)
            elif i._epoch != epoch:
                raise RuntimeError(_freed_message(i))  # freed, or in use by another backward
        t = stack.pop() if stack else None
        while t is not None:
            nodes.append(t)
            seq = t._seq
            if last_inplace > seq:  # something was modified in place since t was recorded
                _check_versions(t)
            if seq >= previous:  # (not strictly newest first: sort, as before)
                newest_first = False
            previous = seq
            after = None
            for i in t._inputs:
                if i.requires_grad:
                    mark = i._epoch  # (None is asked first: None == epoch is a slow compare)
                    if mark is None and i._op is not None and not (readers and i in readers):
                        i._epoch = epoch
                        if after is not None:
                            stack.append(after)
                        after = i
                    elif mark == epoch:
                        shared.add(i)
                    elif i._op is None:  # a leaf, unmarked or marked by an earlier walk
                        i._epoch = epoch
                        leaves.append(i)
                    else:
                        raise RuntimeError(_freed_message(i))  # freed, or being read
            t = after if after is not None else stack.pop() if stack else None
    except BaseException:
        for n in nodes + stack:  # the nodes this walk marked: not claimed after all
            n._epoch = None
        if after is not None:
            after._epoch = None
        raise
    return nodes, leaves, shared, newest_first


def _reading_walk(roots):
    """The walk of a backward that keeps the graph (retain_graph): nothing is marked, a set
    holds what was seen."""
    seen = set(roots)
    nodes, leaves, shared = [], [], set(roots)
    for i in seen:
        (leaves if i._op is None else nodes).append(i)
    last_inplace = function.last_inplace
    newest_first, previous = True, sys.maxsize
    for t in nodes:
        if t._epoch is not None:
            raise RuntimeError(_freed_message(t))  # freed
        seq = t._seq
        if last_inplace > seq:
            _check_versions(t)
        if seq >= previous:
            newest_first = False
        previous = seq
        for i in t._inputs:
            if i.requires_grad:
                if i in seen:
                    shared.add(i)
                else:
                    seen.add(i)
                    (leaves if i._op is None else nodes).append(i)
    return nodes, leaves, shared, newest_first


def _release_readers(nodes):
    with _collect_lock:
        for t in nodes:
            left = _readers.pop(t) - 1
            if left:
                _readers[t] = left


def _freed_message(t):
    """The stale-graph guard: most often a hidden state carried over from the previous batch
    without detach(), so say that first."""
    label = f"'{t.name}'" if t.name else f"of shape {tuple(t.shape)}"
    where = f" (recorded at time step {t._step})" if t._step is not None else ""
    if t._epoch is None:  # not freed: a retain_graph sweep is reading it right now
        return (f"backward: the tensor {label}{where}, made by {t._op.name}, belongs to a graph "
                f"that another backward (with retain_graph=True, in another thread or a hook) "
                f"is reading now; a backward that frees the graph cannot run until it ends: "
                f"pass retain_graph=True, or run the backwards one after the other.")
    freed = next((count for epoch, count in list(_released) if epoch == t._epoch), None)
    by = (f"backward #{t._epoch}, which released {freed} nodes" if freed is not None
          else "an earlier backward")
    return (f"backward: the tensor {label}{where}, made by {t._op.name}, belongs to a graph "
            f"that was already freed by {by}. If it is a hidden state carried over from an "
            f"earlier batch, cut it there with h = h.detach() (truncated BPTT). Only if you "
            f"mean to backpropagate through that old graph again, call the first backward "
            f"with retain_graph=True.")


# (backward number, how many nodes it released) of the latest freeing backwards, for the
# stale-graph guard: a backward appends its pair (one append, safe from several threads)
_released = collections.deque(maxlen=64)
_backward_count = itertools.count(1)


def _describe(t):
    """A tensor's name, or the name of the tensor it is a view of, or its shape."""
    if t.name:
        return f"'{t.name}'"
    base, path = t, []
    while base._op is not None and base._op.view and base._inputs:
        path.append(base._op.name)
        base = base._inputs[0]
        if base.name:
            return f"'{base.name}' (through {' of '.join(path)})"
    return f"of shape {t.shape} ({t.dtype})"


def _check_versions(t):
    """Raise if a value the rule of `t` reads (as its op declares in `saves`) was changed in
    place after `t` was recorded (through the tensor itself, a view of it or an alias: they
    share one counter)."""
    op = t._op
    if op.reads_output and version_of(t) > t._seq:
        raise RuntimeError(f"backward: the output {_describe(t)} of {op.name} was modified in "
                           f"place after it was computed, and {op.name}'s derivative needs it")
    _check_inputs(op, t._inputs, t._seq)


def _check_inputs(op, inputs, seq):
    checked = op.checked_inputs
    for k, i in enumerate(inputs):
        if (checked is None or k in checked) and version_of(i) > seq:
            raise RuntimeError(
                f"backward: the tensor {_describe(i)} needed by the derivative of "
                f"{op.name} was modified in place after it was used (an optimizer step "
                f"or an in-place op between forward and backward?). Recompute the "
                f"forward, or modify a copy.")
