"""Batching a recorded graph for replay: copies of one op that none of the others depends on run
as one call on their stacked operands.

A loop over time steps records the same few ops once per step. A replayed graph runs again and
again, so it can run those copies together, as a hand-written numpy loop does:
- what depends only on leaves (x_t @ U for every t) runs first, all steps at once;
- what hangs off the recurrence without feeding it (each step's output layer and loss) runs as
  late as possible, all steps at once;
- a chain of additions that only accumulates (loss = loss + l_t) becomes one sum over the
  stacked terms, so that the terms are no longer a chain.
Nodes are grouped by level (see `_Graph.levels`): every edge of the graph goes from a lower
level to a higher one, so nodes of one level never depend on each other, and running the levels
in order respects every dependency.

The rewritten graph uses existing ops only (stack to gather operands, reshape, getitem to hand
each copy's value to its consumers, and the batched op itself), so its backward is the ops' own
rules. Whether and how an op batches is declared by its class (`Op.batch`; what that asks of
each node is in batch_kinds.py):
- "elementwise": broadcasting ops; a varying operand is stacked along a new first axis (with
  axes of length 1 so that it broadcasts as before), a shared one is passed as it is;
- "sum": elementwise addition, which may also be a chain that only accumulates;
- "matmul": 2-D operands; a shared right operand multiplies all stacked rows in one product;
- "reduce": reductions over `_saved` axes (shifted past the new axis);
- "rows": per-row ops along the last axis with a per-copy argument (cross-entropy's targets);
- "index": x[t] with one tensor x and an integer t per copy (a slice or an index array).
`rewrite` checks the values of the batched graph against the recorded ones before it is used.
"""
from .batch_builder import BUILT, Builder, Mismatch, agrees, make_node
from .batch_kinds import kind, merge_repeats, signature_of
from .function import as_declared
from .ops.arithmetic import AddScalar
from .ops.linalg import AddMM

MIN_GROUP = 3  # fewer copies are not worth a gather and a scatter
# the ops whose nodes a rewrite makes (gathers, extractions, sums of chains, fused products)
SYNTHESIZED = (AddMM,) + BUILT


def rewrite(nodes, root, keep=()):
    """Batch the graph of `nodes` (op-node shells, oldest first) with result `root`; the nodes
    in `keep` stay unbatched. Returns (the new op nodes in an order to run them, the new
    root, {original node: its unbatched copy}), or None when nothing batches or the batched
    values differ from the recorded ones."""
    if not all(map(as_declared, SYNTHESIZED)):  # their nodes would run a rule eager mode
        return None  # does not: a learner's, or a mock's, put in place of the declared one
    graph = _Graph(nodes, root, frozenset(keep))
    graph.flatten_sums()
    graph.reassociate()
    groups = graph.groups()
    graph.fuse_products({n for g in groups for n in g})
    if not groups and not graph.flattened:
        return None
    try:
        built = Builder(graph, groups).build()
    except (Mismatch, ValueError, IndexError, TypeError):  # numpy refused a stacked call
        return None
    if not agrees(graph, built):
        return None
    return built.order, built.root, built.copies


class _Graph:
    """The recorded nodes with their consumers, and their levels."""

    def __init__(self, nodes, root, keep):
        self.root, self.keep = root, keep
        self.nodes, self.inputs, self.merged = merge_repeats(nodes, keep)
        self.is_node = set(self.nodes)
        self.flattened = {}  # the top of an accumulating chain -> its terms
        self.reassociated = set()  # sums whose operands reassociate() changed (other rounding)
        self.count_consumers()

    # ---- accumulating chains ------------------------------------------------------------------
    def _link(self, t, parent):
        """Whether t is an inner addition of parent's chain (used by parent only)."""
        return (t in self.is_node and t not in self.keep and kind(t._op) == "sum"
                and _only(self.consumers.get(t), parent) and self._plain_sum(t)
                and t._data.shape == parent._data.shape)

    def _zero_start(self, t, parent):
        """Whether t is 0.0 + l (an accumulator started at 0.0) used by parent only: the
        chain's term is then l, and the first step's term is like the others' (its value
        differs at most in the sign of a zero)."""
        if not (t in self.is_node and t not in self.keep and t._op is AddScalar
                and as_declared(AddScalar)
                and _only(self.consumers.get(t), parent)):
            return False
        c, (x,) = t._saved, self.inputs[t]
        return (type(c) in (int, float) and c == 0 and x._data.shape == t._data.shape
                and x._data.dtype == t._data.dtype)

    def _plain_sum(self, t):
        shape, dtype = t._data.shape, t._data.dtype
        return all(i._data.shape == shape and i._data.dtype == dtype for i in self.inputs[t])

    def flatten_sums(self):
        dropped = set()
        for top in reversed(self.nodes):  # newest first: a chain's top comes before its links
            if top in dropped or top in self.keep or kind(top._op) != "sum" or \
                    not self._plain_sum(top):
                continue
            terms, chain, todo = [], [], [top]
            while todo:
                t = todo.pop()
                if isinstance(t, tuple):  # ("term", node)
                    terms.append(t[1])
                    continue
                chain.append(t)
                for i in reversed(self.inputs[t]):  # the first input first: terms in order
                    if self._link(i, t):
                        todo.append(i)
                    elif self._zero_start(i, t):  # loss = 0.0, then loss = loss + l_0
                        chain.append(i)
                        todo.append(("term", self.inputs[i][0]))
                    else:
                        todo.append(("term", i))
            if len(terms) >= MIN_GROUP:
                self.flattened[top] = terms
                dropped.update(chain[1:])
        if dropped:
            self.nodes = [n for n in self.nodes if n not in dropped]

    # ---- levels and groups --------------------------------------------------------------------
    def sources(self, n):
        """n's inputs in the flattened graph."""
        terms = self.flattened.get(n)
        return terms if terms is not None else self.inputs[n]

    def bounds(self):
        """(node -> its depth from the leaves, node -> the depth of the result less the
        node's distance to it): the first and the last level it can run at."""
        early = {}
        for n in self.nodes:
            early[n] = 1 + max((early[i] for i in self.sources(n) if i in early), default=0)
        distance = {self.root: 0}
        for n in reversed(self.nodes):
            d = distance.get(n, 0) + 1
            for i in self.sources(n):
                if i in early and distance.get(i, 0) < d:
                    distance[i] = d
        depth = early.get(self.root, 0)
        return early, {n: depth - distance.get(n, 0) for n in self.nodes}

    def reassociate(self):
        """(p + q) + c where p and c can be computed before q (x_t U + h W + b: q = h W
        waits for the previous step, p and c do not) becomes (p + c) + q: p + c can then run
        with the other steps', and the recurrence has one addition less. Whether q is on
        the longest path does not matter (a GRU's update gate is not, its reset gate is).
        Where p and q are computed at the same depth (the first step, whose h_0 is a leaf),
        q is the one that has the signature of the other steps' q."""
        early, _ = self.bounds()
        fixed = self.fixed()

        def depth(t):
            return early.get(t, 0)

        def signature(t):
            return signature_of(t, self.inputs[t], fixed) if t in self.inputs else None

        found, ties = [], []  # (n, m, c, p, q) to rewrite; the same with p, q undecided
        for n in self.nodes:
            if kind(n._op) != "sum" or n in self.keep or n in self.flattened:
                continue
            for m, c in (self.inputs[n], self.inputs[n][::-1]):
                if not (m in early and kind(m._op) == "sum" and m not in self.keep
                        and m not in self.flattened and _only(self.consumers.get(m), n)):
                    continue
                p, q = self.inputs[m]
                if depth(p) > depth(q):
                    p, q = q, p
                if len({p._data.dtype, q._data.dtype, c._data.dtype}) > 1 or \
                        depth(q) <= depth(c):
                    continue
                if depth(q) > depth(p):
                    found.append((n, m, c, p, q))
                    break
                ties.append((n, m, c, p, q))
                break
        # (only where there are ties: a signature per step costs, at 10,000 steps)
        recurrent = {signature(q) for _, _, _, _, q in found} - {None} if ties else set()
        for n, m, c, p, q in ties:
            if (signature(p) in recurrent) != (signature(q) in recurrent):
                found.append((n, m, c, q, p) if signature(p) in recurrent else (n, m, c, p, q))
        # In a chain ((p + q) + c) + d both sums qualify, the outer one with the inner one as
        # its m; rewriting both would leave the outer reading p + q, which the inner drops.
        # The inner one (the older) is rewritten, and the outer one stays as it is.
        position = {n: k for k, n in enumerate(self.nodes)}
        rewritten, chosen = set(), []
        for entry in sorted(found, key=lambda e: position[e[0]]):
            if entry[1] not in rewritten:
                rewritten.add(entry[0])
                chosen.append(entry)
        found = chosen
        before, dropped = {}, set()  # n -> the new node that goes just before it; m's gone
        for n, m, c, p, q in found:
            early_sum = make_node(m._op, (p, c), None, p._data + c._data)
            early_sum._seq = n._seq
            before[n] = early_sum
            dropped.add(m)
            self.inputs[early_sum] = (p, c)
            self.inputs[n] = (early_sum, q)
            self.is_node.add(early_sum)
            self.reassociated.add(n)
        if before:
            nodes = []
            for n in self.nodes:
                if n in before:
                    nodes.append(before[n])
                if n not in dropped:
                    nodes.append(n)
            self.nodes = nodes
            self.count_consumers()

    def fuse_products(self, grouped):
        """c + a @ b where neither runs batched (the recurrence's h W plus what was added to
        it) becomes one addmm node: the same value to the last bit (addition commutes), one
        node less per step."""
        fused, dropped = {}, set()
        for n in self.nodes:
            if kind(n._op) != "sum" or n in grouped or n in self.keep or n in self.flattened:
                continue
            for m, c in (self.inputs[n], self.inputs[n][::-1]):
                if not (m in self.is_node and kind(m._op) == "matmul" and m not in grouped
                        and m not in self.keep and _only(self.consumers.get(m), n)
                        and m._data.shape == n._data.shape):
                    continue
                a, b = self.inputs[m]
                if a._data.ndim != 2 or b._data.ndim != 2:
                    continue
                node = make_node(AddMM, (c, a, b), None, n._data)
                node._seq, node.name = n._seq, n.name
                self.inputs[node] = (c, a, b)
                self.is_node.add(node)
                self.level[node] = self.level[n]
                if n in self.reassociated:
                    self.reassociated.add(node)
                fused[n] = node
                dropped.add(m)
                break
        if fused:
            self.nodes = [fused.get(n, n) for n in self.nodes if n not in dropped]
            self.root = fused.get(self.root, self.root)
            for n in self.nodes:  # the consumers read the addmm node
                self.inputs[n] = tuple(fused.get(i, i) for i in self.inputs[n])
                terms = self.flattened.get(n)
                if terms is not None:
                    self.flattened[n] = [fused.get(t, t) for t in terms]
            self.count_consumers()

    def count_consumers(self):
        self.consumers = {}
        for n in self.nodes:
            for i in self.sources(n):
                self.consumers.setdefault(i, []).append(n)

    def fixed(self):
        """The parameters (leaves that require grad) and the nodes computed from them alone."""
        fixed = {i for n in self.nodes for i in self.sources(n)
                 if i._op is None and i.requires_grad}
        for n in self.nodes:
            if all(i in fixed for i in self.sources(n)):
                fixed.add(n)
        return fixed

    def levels(self):
        """node -> its level. Each node can run anywhere between its depth from the leaves
        (as soon as possible) and the depth of the result less its distance to it (as late
        as possible); it takes whichever of the two more copies of it share (x_t @ U: the
        first; each step's loss: the second), then is moved after its inputs where needed,
        so that every input has a lower level than its consumer."""
        early, late = self.bounds()
        fixed = self.fixed()
        self.signature = {n: signature_of(n, self.inputs[n], fixed) for n in self.nodes
                          if n not in self.keep and n not in self.flattened}
        count = {}
        for n, sig in self.signature.items():
            if sig is not None:
                for key in ((0, early[n], sig), (1, late[n], sig)):
                    count[key] = count.get(key, 0) + 1
        level = {}
        for n in self.nodes:  # oldest first: inputs before their consumers
            sig = self.signature.get(n)
            lvl = early[n]
            if sig is not None and count[1, late[n], sig] > count[0, early[n], sig]:
                lvl = late[n]
            level[n] = max([lvl] + [level[i] + 1 for i in self.sources(n) if i in level])
        return level

    def groups(self):
        """Lists of at least MIN_GROUP nodes of one level and one signature, oldest first."""
        self.level = self.levels()
        found = {}
        for n, sig in self.signature.items():
            if sig is not None:
                found.setdefault((self.level[n], sig), []).append(n)
        groups = [sorted(g, key=_seq) for g in found.values() if len(g) >= MIN_GROUP]
        grouped = {n for g in groups for n in g}
        # x[t] for every t computes nothing: batched, it only pays where a group reads it whole
        return [g for g in groups if kind(g[0]._op) != "index" or any(
            c in grouped for n in g for c in self.consumers.get(n, ()))]


def _seq(n):
    return n._seq


def _only(nodes, node):
    """Whether `nodes` (a list or None) is `node` alone (tensors compare by identity here:
    their == compares values)."""
    return nodes is not None and len(nodes) == 1 and nodes[0] is node
