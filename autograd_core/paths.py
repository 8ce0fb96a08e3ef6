"""Counting backprop paths in the recorded graph (source notes 000 and 001)."""
from .graph import walk
from .tensor import Tensor


def count_paths(output, input, through=None, exclusive=False):
    """The number of distinct backprop paths from `output` back to `input`, as an exact int.

    Either argument may be several tensors (a list or tuple); one pass over the graph
    answers them all, in time linear in its size:
    - several outputs: paths from any of them (the sum over the outputs);
    - several inputs: a list with one count per input, in order.
    An input that is not behind the output has 0 paths.

    Over every op (`through=None`) each edge of the recorded graph counts, so x * x gives two
    paths to x. `through` counts paths the way the notes draw them: only the given tensors
    (or tensors with the given names) are vertices, and two vertices are joined when some
    route of unnamed ops connects them, however many such routes there are. Note 001's GRU
    step, through the tensors named z, r, h~ and h, gives 4 paths from h_T back to h_{T-1}
    (directly through (1 - z) * h, through z, through h~, through r inside h~), hence 4^k back
    to h_{T-k}. Over every op z reaches h_t twice ((1 - z) * h_{t-1} and z * h~), so one step
    has 5 paths and k steps 5^k. For note 000's vanilla RNN with L = L_1 + L_2 + L_3, S_2
    has 2 paths to L and S_1 has 3, both ways of counting.

    `exclusive=True` counts between two states, each a set of tensors: a path starts at the
    last output it passes and ends at the first input it reaches. Note 001's LSTM count is
    of this kind: from (h_T, C_T) back to (h_{T-2}, C_{T-2}) there are 19 + 5 = 24 paths
    (a path to C_{T-2} through h_{T-2} = o * tanh(C_{T-2}) ends at h_{T-2}).
    """
    outputs = _tensors("output", output)
    inputs = _tensors("input", input)
    nodes = walk(tuple(dict.fromkeys(outputs)), "count_paths")
    sources, targets = set(outputs), set(inputs)
    if through is None:
        counts = _count_all(nodes, sources, targets, exclusive)
    else:
        counts = _count_through(nodes, sources, targets, _vertex_test(through), exclusive)
    found = [counts.get(t, 0) for t in inputs]
    return found[0] if isinstance(input, Tensor) else found


def _tensors(name, value):
    items = [value] if isinstance(value, Tensor) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise TypeError(f"count_paths: {name} must be a Tensor or a non-empty list of them, "
                        f"got {type(value).__name__}")
    for t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"count_paths: {name} must be a Tensor or a list of them, got "
                            f"{type(t).__name__}")
    return list(items)


def _count_all(nodes, sources, targets, exclusive):
    """counts[t] = paths from the sources to t; every node is visited after all its
    consumers (newest first), so one pass over the nodes and edges."""
    counts, found = {}, {}
    for t in nodes:
        n = counts.get(t, 0)
        if t in sources:
            n = 1 if exclusive else n + 1
        if not n:
            continue
        if t in targets:
            found[t] = n
            if exclusive:
                continue
        for i in t._inputs:
            counts[i] = counts.get(i, 0) + n
    return found


def _vertex_test(through):
    if isinstance(through, (str, Tensor)):
        through = [through]
    try:
        through = list(through)
    except TypeError:
        raise TypeError(f"count_paths: through must be a list of tensors or tensor names, got "
                        f"{type(through).__name__}") from None
    names = {x for x in through if isinstance(x, str)}
    tensors = {x for x in through if isinstance(x, Tensor)}
    if any(not isinstance(x, (str, Tensor)) for x in through):
        raise TypeError("count_paths: through must hold tensors or tensor names")
    return lambda t: t in tensors or (t.name is not None and t.name in names)


def _count_through(nodes, sources, targets, is_vertex, exclusive):
    """Paths in the graph contracted onto the vertices: `above[t]` is the set of vertices that
    reach t through unnamed nodes only, so parallel unnamed routes count once."""
    counts, found, above = {}, {}, {}
    for t in nodes:
        source = t in sources
        if t not in above and not source:
            continue
        reached = above.pop(t, ())
        vertex = source or t in targets or is_vertex(t)
        if vertex:
            n = sum(counts[u] for u in reached)
            if source:
                n = 1 if exclusive else n + 1
            counts[t] = n
            if t in targets:
                found[t] = n
                if exclusive:
                    continue
        carry = {t} if vertex else reached
        for i in t._inputs:
            above.setdefault(i, set()).update(carry)
    return found
