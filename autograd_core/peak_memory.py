"""The memory a backward needs, replayed from the recorded graph without running it:
the bytes the graph holds and the peak the sweep reaches (graph_stats reports both)."""
import numpy as np

from .graph import by_creation, saved_arrays

def backward_peak(root, tensors):
    """(held, peak): the bytes only the graph behind `root` holds, and the most that the
    graph and the gradients hold at once during `root.backward()` without retain_graph
    (`tensors`: `walk`'s list for `root`). Nothing is run; the sweep is replayed:

    - Memory is counted per buffer: a view (reshape, transpose, basic indexing) costs nothing
      beyond its base, and buffers owned by leaves (parameters, data) are not counted.
    - It starts from the graph's buffers (node outputs and saved arrays) and the root's
      gradient, and visits the nodes newest first, as the sweep does.
    - A visit computes a contribution for each input that requires grad: a new buffer of the
      input's size, except where the rule passes on the incoming gradient or a view of it
      (as the op's `memory` declares: `same`, `view`), adds into one buffer (`backward_into`, indexing)
      or defers a weight's product (`backward_split`: the incoming gradient is kept until
      the weight is reached, then all uses are stacked and multiplied at once; a weight
      with no other use gets its product at once, as its gradient). An input's
      first contribution is kept as its gradient; a second one is summed into a new buffer,
      later ones in place. A rule declaring `temporaries` needs that many more output-sized
      arrays while it runs.
    - After the visit the node's incoming gradient and its saved arrays are dropped (a
      buffer is freed when nothing refers to it any more: no pending gradient or view, no
      saved value of a node still to be visited). A node's output goes once the node is
      visited and no node still to be visited is a view of it (the sweep drops each node as
      it goes; the root stays, the caller holds it). The leaves' gradients stay, each kept
      as or copied into `.grad`.
    Not counted: other temporaries inside rules, references the caller keeps (a kept tensor's
    output stays alive longer), Python objects. `.grad` is assumed None before."""
    nodes, leaves, shared = _sweep_order(root)
    if not nodes:
        return 0, 0
    leaf_buffers = {id(_owner(t.data)) for t in tensors if t.op is None}
    outputs, saved = _graph_buffers(nodes, leaf_buffers)
    held = sum(outputs.values()) + sum(size for size, _ in saved.values())
    replay = _Replay(held)
    holders = _output_holders(nodes, root, outputs)
    pending = {root: replay.new(root.data.nbytes)}
    deferred = {}  # weight -> [(incoming gradient, bytes of the stacked factors)]
    for t in nodes:
        incoming = _incoming(t, replay, pending, deferred, holders, outputs)
        if incoming is not None:  # else no gradient reaches it: the sweep skips it
            incoming.summed = False  # what the rule passes on is not summed into in place
            _contribute(t, incoming, replay, pending, deferred, holders, shared)
            replay.drop(incoming)
            replay.free(_release_saved(t, saved, leaf_buffers))
        replay.free(_release_output(t, holders, outputs))
    for leaf in leaves:
        g = _incoming(leaf, replay, pending, deferred, holders, outputs)
        if g is not None:  # becomes .grad (or is copied into it), which outlives the backward
            replay.new(leaf.data.nbytes)
            replay.drop(g)
    return held, replay.peak


class _Buffer:
    __slots__ = ("nbytes", "users", "summed")

    def __init__(self, nbytes, summed):
        self.nbytes, self.users, self.summed = nbytes, 1, summed


class _Replay:
    """The bytes alive while the sweep is replayed, and the most at any moment."""

    def __init__(self, held):
        self.live = self.peak = held

    def new(self, nbytes, summed=False):
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        return _Buffer(nbytes, summed)

    def share(self, buf):
        buf.users += 1
        return buf

    def drop(self, buf):
        buf.users -= 1
        if buf.users == 0:
            self.live -= buf.nbytes

    def free(self, nbytes):
        self.live -= nbytes

    def briefly(self, nbytes):
        """A temporary that comes and goes now."""
        self.peak = max(self.peak, self.live + nbytes)


def _sweep_order(root):
    """The nodes in the order the sweep visits them (newest first), the leaves that
    require grad in the order it finishes them, and the tensors more than one use reads
    (as graph_walk._collect finds them)."""
    seen, stack, nodes, leaves, shared = {root}, [root], [], [], {root}
    while stack:
        t = stack.pop()
        if t.op is None:
            leaves.append(t)
            continue
        nodes.append(t)
        for i in t.inputs:
            if i.requires_grad:
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
                else:
                    shared.add(i)
    nodes.sort(key=by_creation, reverse=True)
    return nodes, leaves, shared


def _incoming(t, replay, pending, deferred, holders, outputs):
    """The gradient buffer of `t` when the sweep reaches it: its pending gradient plus the
    stacked product of its deferred uses as a weight."""
    g = pending.pop(t, None)
    parts = deferred.pop(t, None)
    if parts is None:
        return g
    for _, _, factor in parts:  # the other factors' arrays are let go
        if factor is not None:
            replay.free(_release_output(factor, holders, outputs))
    parts = [(kept, nbytes) for kept, nbytes, _ in parts]
    if len(parts) > 1:  # the factors of every use, stacked, then one product
        stacked = replay.new(sum(factors for _, factors in parts))
        total = replay.new(t.data.nbytes, summed=True)
        replay.drop(stacked)
    else:
        total = replay.new(t.data.nbytes, summed=True)
    for kept, _ in parts:
        replay.drop(kept)
    if g is None:
        return total
    both = replay.new(t.data.nbytes, summed=True)
    replay.drop(total)
    replay.drop(g)
    return both


def _contribute(t, incoming, replay, pending, deferred, holders, shared):
    """What visiting `t` sends to its inputs, as the sweep would."""
    op, weight = t.op, _split_weight(t)
    memory = op.memory
    sent = []
    for k, inp in enumerate(t.inputs):
        if not inp.requires_grad:
            continue
        if inp is weight and inp not in shared:  # its only use: its product now
            pending[inp] = replay.new(inp.data.nbytes, summed=True)
        elif inp is weight:
            # the deferred product keeps the other factor, the input just before the weight
            # in matmul (a, b), addmm (c, a, b) and linear (x, w, bias)
            factor = t.inputs[op.split_input - 1]
            key = id(_owner(factor.data))
            if key in holders:
                holders[key] += 1
            else:
                factor = None
            deferred.setdefault(inp, []).append((replay.share(incoming),
                                                 _factor_bytes(t, inp), factor))
        elif op.backward_into is not None:
            prev = pending.get(inp)
            if prev is None or not prev.summed:  # one zeroed buffer, added into in place
                pending[inp] = replay.new(inp.data.nbytes, summed=True)
                if prev is not None:
                    replay.drop(prev)
        elif memory.view or (k in memory.same and inp.shape == t.shape):
            sent.append((inp, replay.share(incoming)))
        else:
            sent.append((inp, replay.new(inp.data.nbytes)))
    if memory.temporaries:
        replay.briefly(memory.temporaries * t.data.nbytes)
    for inp, gi in sent:  # every contribution is alive until all are added in
        prev = pending.get(inp)
        if prev is None:
            pending[inp] = replay.share(gi)
        elif not prev.summed:
            pending[inp] = replay.new(inp.data.nbytes, summed=True)
            replay.drop(prev)
    for _, gi in sent:
        replay.drop(gi)


def _split_weight(t):
    """The matrix input whose gradient the sweep defers (`backward_split`), or None."""
    op = t.op
    index = getattr(op, "split_input", None)
    if getattr(op, "backward_split", None) is None or index is None:
        return None
    weight = t.inputs[index]
    if weight.requires_grad and weight.ndim == 2 and t.ndim == 2:
        return weight
    return None


def _factor_bytes(t, weight):
    """Bytes of the two factors of one use of `weight` (k, m), whose gradient is
    left^T right with left (n, k) and right (n, m), n the rows of the output."""
    return t.shape[0] * (weight.shape[0] + weight.shape[1]) * t.data.itemsize


def _owner(arr):
    """The array that owns `arr`'s memory."""
    while isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr


def _graph_buffers(nodes, leaf_buffers):
    """({buffer id: bytes} of node outputs, {buffer id: [bytes, nodes that save it]} of
    saved arrays that are no output), leaves' buffers left out."""
    outputs, saved = {}, {}
    for t in nodes:
        owner = _owner(t.data)
        if id(owner) not in leaf_buffers:
            outputs[id(owner)] = owner.nbytes
    for t in nodes:
        for owner in _saved_owners(t, leaf_buffers):
            if id(owner) not in outputs:
                saved.setdefault(id(owner), [owner.nbytes, 0])[1] += 1
    return outputs, saved


def _output_holders(nodes, root, outputs):
    """{output buffer id: how many nodes (and the caller, for the root) hold it}."""
    holders = dict.fromkeys(outputs, 0)
    for t in nodes:
        key = id(_owner(t.data))
        if key in holders:
            holders[key] += 1
    key = id(_owner(root.data))
    if key in holders:
        holders[key] += 1
    return holders


def _release_output(t, holders, outputs):
    """Drop the visited node `t`'s hold on its output buffer; its bytes once nobody holds it."""
    key = id(_owner(t.data))
    if key not in holders:
        return 0
    holders[key] -= 1
    return outputs[key] if holders[key] == 0 else 0


def _saved_owners(t, leaf_buffers):
    """The distinct buffers behind the saved arrays of `t`, leaves' buffers left out."""
    owners = {id(o): o for o in map(_owner, saved_arrays(t.saved))}
    return [o for key, o in owners.items() if key not in leaf_buffers]


def _release_saved(t, saved, leaf_buffers):
    """Drop `t`'s claim on its saved buffers; the bytes of those nobody else saves."""
    freed = 0
    for owner in _saved_owners(t, leaf_buffers):
        entry = saved.get(id(owner))
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                freed += entry[0]
    return freed
