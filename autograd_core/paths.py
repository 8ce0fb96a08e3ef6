"""Counting backprop paths in the recorded graph (source notes 000 and 001)."""
from .graph import walk
from .tensor import Tensor


def count_paths(output, input, through=None):
    """The number of distinct backprop paths from `output` back to `input`, as an exact int.

    Over every op (`through=None`) each edge of the recorded graph counts, so x * x gives two
    paths to x. Dynamic programming over the graph in reverse creation order: linear in its
    size, fine for 100,000 nodes.

    `through` counts paths the way the notes draw them: only the given tensors (or tensors
    with the given names) are vertices, and two vertices are joined when some route of
    unnamed ops connects them, however many such routes there are. Note 001's GRU step,
    through the tensors named z, r, h~ and h, gives 4 paths from h_T back to h_{T-1}
    (directly through (1 - z) * h, through z, through h~, through r inside h~), hence 4^k back
    to h_{T-k}. Over every op the number is larger: z reaches h_t twice ((1 - z) * h_{t-1}
    and z * h~), so one step has 5 paths and k steps 5^k. For note 000's vanilla RNN with
    L = L_1 + L_2 + L_3, S_2 has 2 paths to L and S_1 has 3, both ways of counting.
    """
    for name, t in (("output", output), ("input", input)):
        if not isinstance(t, Tensor):
            raise TypeError(f"count_paths: {name} must be a Tensor, got {type(t).__name__}")
    nodes = walk((output,), "count_paths")
    if not any(t is input for t in nodes):
        raise ValueError("count_paths: input is not in the graph behind output")
    if through is None:
        return _count_all(nodes, output, input)
    return _count_through(nodes, output, input, _vertex_test(through))


def _count_all(nodes, output, input):
    counts = {output: 1}
    for t in nodes:
        n = counts.get(t)
        if not n:
            continue
        if t is input:
            return n
        for i in t._inputs:
            counts[i] = counts.get(i, 0) + n
    return 0


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


def _count_through(nodes, output, input, is_vertex):
    """Paths in the graph contracted onto the vertices: `above[t]` is the set of vertices that
    reach t through unnamed nodes only, so parallel unnamed routes count once."""
    counts, above = {}, {output: set()}
    for t in nodes:
        if t not in above:
            continue
        vertex = t is output or t is input or is_vertex(t)
        if vertex:
            counts[t] = 1 if t is output else sum(counts[u] for u in above[t])
            if t is input:
                return counts[t]
        carry = {t} if vertex else above[t]
        for i in t._inputs:
            above.setdefault(i, set()).update(carry)
    return 0
