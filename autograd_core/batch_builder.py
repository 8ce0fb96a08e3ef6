"""Building the batched graph that batching.rewrite planned: each group of copies as one call on
stacked operands, each copy's value handed to its consumers, and the check that the batched
values are the recorded ones (see batching.py)."""
import numpy as np

from .ops.arithmetic import Add
from .ops.indexing import GetItem
from .ops.joining import Stack
from .ops.linalg import MatMul
from .ops.reductions import Sum
from .ops.shape import Reshape
from .tensor import Tensor, _new, fill

# the ops of the nodes a Builder makes itself (beside the groups' own op)
BUILT = (Add, GetItem, MatMul, Reshape, Stack, Sum)


def same_nodes(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


class Built:
    """The rewritten graph as the builder makes it."""

    def __init__(self):
        self.units = []  # per node or group, in order of level: the new nodes it made
        self.copies = {}  # original node -> its unbatched copy
        self.member = {}  # batched original node -> (group output, position)
        self.extracted = {}  # batched original node -> its getitem node
        self.group_of = {}  # batched original node -> its group (a list)
        self.output = {}  # id(group) -> the batched node, shaped (copies,) + member shape
        self.gathered = {}  # ids of the operands stacked for a group -> their stack node
        self.order = self.root = None

    def value(self, n):
        """The node of the new graph holding the original node n's value."""
        copy = self.copies.get(n)
        if copy is not None:
            return copy
        if n in self.member:
            node = self.extracted.get(n)
            if node is None:
                out, k = self.member[n]
                node = self.extracted[n] = make_node(GetItem, (out,), (k, True), out._data[k])
                self.pending.append(node)
            return node
        return n  # a leaf


def make_node(op, inputs, saved, data):
    """A new node of the rewritten graph (a shell, as replay's)."""
    needs = any(i.requires_grad for i in inputs)
    return fill(_new(Tensor), data, needs, op, tuple(inputs), saved, 0, None)


class Builder:
    def __init__(self, graph, groups):
        self.graph, self.groups = graph, groups
        self.built = Built()

    def build(self):
        g, b = self.graph, self.built
        level = g.level
        grouped = {}
        for group in self.groups:
            for n in group:
                grouped[n] = group
        b.group_of = grouped
        done = set()
        # Nodes in order of level: every input is made before its consumer.
        units = sorted(((level[n], n._seq, n) for n in g.nodes), key=lambda u: u[:2])
        for lvl, seq, n in units:
            b.pending = []
            group = grouped.get(n)
            if group is None:
                self._copy(n)
            elif id(group) not in done:
                done.add(id(group))
                self._batch(group)
            else:
                continue
            b.units.append(b.pending)
        b.pending = []  # getitems made while asking for the root's value
        b.root = b.value(g.root)
        b.order = [node for unit in b.units for node in unit] + b.pending
        return b

    def _copy(self, n):
        b, g = self.built, self.graph
        terms = g.flattened.get(n)
        if terms is not None:  # an accumulating chain: one sum of the stacked terms
            b.copies[n] = self._sum(terms, n.name)
            return
        inputs = tuple(b.value(i) for i in self.graph.inputs[n])
        copy = fill(_new(Tensor), n._data, any(i.requires_grad for i in inputs), n._op, inputs,
                    n._saved, n._seq, n._step)
        copy.name = n.name
        b.pending.append(copy)
        b.copies[n] = copy

    def _sum(self, terms, name):
        """The sum of `terms` (nodes of one shape): the terms that are a batched group's
        copies, in order, are summed from its output without gathering them again."""
        b = self.built
        source = b.group_of.get(terms[-1])
        if source is not None and same_nodes(terms[-len(source):], source):
            out = b.output[id(source)]
            total = make_node(Sum, (out,), (0,), out._data.sum(axis=0))
            b.pending.append(total)
            for t in reversed(terms[:-len(source)]):  # what precedes it, added one by one
                part = b.value(t)
                total = make_node(Add, (part, total), None, part._data + total._data)
                b.pending.append(total)
        else:
            parts = [b.value(t) for t in terms]
            stacked = make_node(Stack, parts, 0, np.stack([p._data for p in parts]))
            total = make_node(Sum, (stacked,), (0,), stacked._data.sum(axis=0))
            b.pending += [stacked, total]
        total.name = name
        return total

    def _operand(self, group, k):
        """The k-th operands of the group's copies: (node, shared). A varying operand comes
        stacked along a new first axis."""
        b = self.built
        inputs = self.graph.inputs
        first = inputs[group[0]][k]
        if all(inputs[n][k] is first for n in group):
            return b.value(first), True
        ins = [inputs[n][k] for n in group]
        source = b.group_of.get(ins[0])
        if source is not None:
            start = b.member[ins[0]][1]
            if same_nodes(source[start:start + len(ins)], ins):  # consecutive copies
                out = b.output[id(source)]
                if len(ins) == len(source):
                    return out, False
                part = slice(start, start + len(ins))
                node = make_node(GetItem, (out,), (part, True), out._data[part])
                b.pending.append(node)
                return node, False
        key = tuple(map(id, ins))
        node = b.gathered.get(key)  # the same operands gathered for another group
        if node is None:
            parts = [b.value(i) for i in ins]
            node = b.gathered[key] = make_node(Stack, parts, 0, np.stack([p._data for p in parts]))
            b.pending.append(node)
        return node, False

    def _reshape(self, node, shape):
        out = make_node(Reshape, (node,), None, node._data.reshape(shape))
        self.built.pending.append(out)
        return out

    def _batch(self, group):
        b = self.built
        first = group[0]
        op, kind, count = first._op, first._op.batch, len(group)
        shape = (count,) + first._data.shape
        first_inputs = self.graph.inputs[first]
        operands = [self._operand(group, k) for k in range(len(first_inputs))]
        if kind in ("elementwise", "sum"):
            inputs = []
            for (node, shared), i in zip(operands, first_inputs):
                missing = first._data.ndim - i._data.ndim
                if not shared and missing > 0:  # broadcast as the copies did
                    node = self._reshape(node, (count,) + (1,) * missing + i._data.shape)
                inputs.append(node)
            out = self._apply(op, inputs, first._saved, shape, first._data.dtype)
        elif kind == "matmul":
            (a, a_shared), (w, w_shared) = operands
            if w_shared and not a_shared:  # all rows times one matrix: a 2-D product
                rows = self._reshape(a, (-1, a._data.shape[-1]))
                flat = make_node(MatMul, (rows, w), None, rows._data @ w._data)
                b.pending.append(flat)
                out = self._reshape(flat, shape)
            else:
                out = self._apply(op, [a, w], None, shape, first._data.dtype)
        elif kind == "reduce":
            axes = tuple(a + 1 for a in first._saved)
            out = self._apply(op, [operands[0][0]], axes, shape, first._data.dtype)
        elif kind == "rows":
            if operands[0][1]:  # one input for every copy (several targets on one logits)
                raise Mismatch
            targets = np.stack([n._saved[0] for n in group])
            out = self._apply(op, [operands[0][0]], (targets, None), shape, first._data.dtype)
        else:  # "index": x[t] for several t
            x = operands[0][0]
            ks = [n._saved[0] for n in group]
            index = (slice(ks[0], ks[-1] + 1) if ks == list(range(ks[0], ks[-1] + 1))
                     and ks[0] >= 0 else np.array(ks))
            out = make_node(GetItem, (x,), (index, type(index) is slice),
                        np.asarray(x._data[index]))
            b.pending.append(out)
        b.output[id(group)] = out
        for k, n in enumerate(group):
            b.member[n] = (out, k)

    def _apply(self, op, inputs, saved, shape, dtype):
        """The op on batched operands, through its own forward kernel."""
        out = make_node(op, inputs, saved, np.empty(shape, dtype=dtype))
        data = op.forward(out, *[i._data for i in inputs])
        if type(data) is not np.ndarray or data.shape != shape:
            raise Mismatch
        out._data = data
        self.built.pending.append(out)
        return out


class Mismatch(Exception):
    """The copies cannot run as one call after all (another output shape, or an operand the
    op cannot take unstacked)."""


def agrees(graph, built):
    """Whether every value of the batched graph is the recorded one, up to rounding (1e-12 of
    its size in float64: the replay tests hold gradients to that; 1e-4 in float32), and
    every merged repeat recorded the same bits as the node that stands for it."""
    for n, earlier in graph.merged:
        a, b = np.asarray(n._data), np.asarray(earlier._data)
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            return False
    for n in graph.nodes:
        if n in built.member:
            new = built.member[n][0]._data[built.member[n][1]]
        elif n in graph.reassociated:  # its copy holds the recorded value: compute it anew
            copy = built.copies[n]
            new = np.asarray(copy._op.forward(copy, *[i._data for i in copy._inputs]))
        elif n in graph.flattened:
            new = built.copies[n]._data
        else:
            continue  # computed by the same call on the same operands
        old = n._data
        if new.shape != old.shape:
            return False
        if old.size:
            scale = max(1.0, float(np.max(np.abs(old))))
            tol = (1e-4 if old.dtype.itemsize <= 4 else 1e-12) * scale
            with np.errstate(invalid="ignore"):
                close = (np.abs(new - old) <= tol) | (new == old)
                zeros = (new == 0) & (old == 0)
                if not np.all(close & (~zeros | (np.signbit(new) == np.signbit(old)))):
                    return False
    return True
