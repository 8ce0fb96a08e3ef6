"""Each step's share of a parameter's gradient, carried down from where it leaves the steps.

A contribution is from step t when a node of step t sends it to a node outside the steps
(`step is None`): a weight used as is, a slice or transpose of one made before the loop, or the
input projection of all steps read one row block per step. Between the steps and the
parameters there are a few such nodes; each step's contributions are carried down through them
separately with the engine's own rules (`ag.node_vjp`), so the split stays exact.

Doing that naively costs O(T) per step: the projection of all steps is a (T*B, G) array, and
each step's share of it is a full-size array that is zero except in its own rows. So a share
that covers a block of rows along axis 0 (a "slab") is kept as just that block, and carried as
a block through the nodes that act on rows one by one (reshape, linear, matmul): the rule runs
on the block's rows alone, on a one-node copy of the op. Anywhere else it is spread to full
size, as before (correct, only slower).
"""
import numpy as np

import autograd_core as ag

OUTSIDE = None  # the row of what reaches a parameter from no step


class StepSplit:
    """`graph`: ag.walk_graph of the loss (newest first). `named`: name -> parameter.
    `row_of`: step index -> row of the result. After `carry`, `totals[name]` holds each
    row's share (rows, *shape) and `outside[name]` what came from no step."""

    def __init__(self, graph, named, row_of, rows):
        self.name_of = {p: n for n, p in named.items()}
        self.row_of = row_of
        # The nodes outside every step, newest first, that lead to a parameter without passing
        # through a step: nothing carried anywhere else can reach one.
        between = [t for t in graph if t.requires_grad and t.step is None]
        self.reaches = set()
        for t in reversed(between):  # oldest first: inputs before the nodes that use them
            if t in self.name_of or (not t.is_leaf and any(i in self.reaches for i in t.inputs)):
                self.reaches.add(t)
        self.between = [t for t in between if t in self.reaches]
        # Step nodes that send something across: their gradient is what the split needs.
        self.boundary = [t for t in graph if t.step is not None and not t.is_leaf
                         and any(i in self.reaches for i in t.inputs)]
        self.totals = {n: np.zeros((rows,) + p.shape) for n, p in named.items()}
        self.outside = {}
        self._dense = {}  # node -> row -> full-size array
        self._slabs = {}  # node -> [(row, lo, hi, block)]: rows lo:hi of axis 0

    # ---- what crosses out of the steps ---------------------------------------------------
    def cross(self, node, grad):
        """`node` (a step node in `boundary`) received `grad` in the sweep."""
        row = self.row_of[node.step]
        grad = np.asarray(grad)
        if node.op.name == "getitem":
            base = node.inputs[0]
            rows = _view_rows(node.data, base.data)
            if rows is not None:
                if base in self.reaches:
                    lo, hi = rows
                    self._slabs.setdefault(base, []).append(
                        (row, lo, hi, grad.reshape((hi - lo,) + base.shape[1:])))
                return
        self._send(node, row, grad)

    def seed(self, node, grad):
        """`grad` reaches `node` (outside the steps) from no step, e.g. the loss itself."""
        if node in self.reaches:
            self._add(node, OUTSIDE, np.asarray(grad))

    # ---- carried down to the parameters ----------------------------------------------------
    def carry(self):
        with ag.enable_grad():  # the one-node copies below are recorded
            for node in self.between:
                dense = self._dense.pop(node, {})
                for row, lo, hi, block in self._slabs.pop(node, ()):
                    if node.is_leaf or not self._carry_slab(node, row, lo, hi, block):
                        full = np.zeros(node.shape, dtype=block.dtype)
                        full[lo:hi] = block
                        dense[row] = full if row not in dense else dense[row] + full
                for row, g in dense.items():
                    if node in self.name_of:
                        self._arrive(node, row, g)
                    else:
                        self._send(node, row, g)

    def _arrive(self, param, row, g):
        name = self.name_of[param]
        g = np.asarray(g, dtype=np.float64).reshape(param.shape)
        if row is OUTSIDE:
            self.outside[param] = g if param not in self.outside else self.outside[param] + g
        else:
            self.totals[name][row] += g

    def _send(self, node, row, g):
        """The engine's rule of `node` on a full-size gradient."""
        for inp, gi in zip(node.inputs, ag.node_vjp(node, g)):
            if gi is not None and inp in self.reaches:
                self._add(inp, row, gi)

    def _add(self, node, row, g):
        rows = self._dense.setdefault(node, {})
        rows[row] = g if row not in rows else rows[row] + g

    def _carry_slab(self, node, row, lo, hi, block):
        """Carry rows lo:hi of node's gradient through an op that acts on rows one by one;
        False where the op is not one of those."""
        name, inputs = node.op.name, node.inputs
        if name == "reshape":
            rows = _reshaped_rows(lo, hi, node.shape, inputs[0].shape)
            if rows is None:
                return False
            if inputs[0] in self.reaches:
                a, b = rows
                self._slabs.setdefault(inputs[0], []).append(
                    (row, a, b, block.reshape((b - a,) + inputs[0].shape[1:])))
            return True
        if name not in ("linear", "matmul") or inputs[0].ndim != 2 or inputs[1].ndim != 2:
            return False
        # The same op on rows lo:hi of its row input (and of a per-row bias), a copy of one
        # node: its rule gives this block's share to every input.
        n = node.shape[0]
        parts = [(t, t.ndim == 2 and t.shape[0] == n and k != 1) for k, t in enumerate(inputs)]
        copies = [ag.Tensor(t.data[lo:hi] if by_row else t.data,
                            requires_grad=t in self.reaches) for t, by_row in parts]
        if not any(c.requires_grad for c in copies):
            return True
        op = ag.linear if name == "linear" else ag.matmul
        grads = ag.node_vjp(op(*copies), block)
        for (t, by_row), g in zip(parts, grads):
            if g is None:
                continue
            if by_row:
                self._slabs.setdefault(t, []).append((row, lo, hi, g))
            else:
                self._add(t, row, g)
        return True


def _view_rows(view, base):
    """(lo, hi) when `view` is exactly base[lo:hi] (or base[lo], hi = lo + 1) in base's own
    memory, else None: then g put back at the index lands in those rows alone."""
    if base.ndim == 0 or not isinstance(view, np.ndarray) or view.dtype != base.dtype:
        return None
    if view.ndim == base.ndim - 1:
        count, shape, strides = 1, view.shape, view.strides
    elif view.ndim == base.ndim:
        count, shape, strides = view.shape[0], view.shape[1:], view.strides[1:]
        if count > 1 and view.strides[0] != base.strides[0]:
            return None
    else:
        return None
    if shape != base.shape[1:] or strides != base.strides[1:] or base.strides[0] <= 0:
        return None
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    lo, rest = divmod(offset, base.strides[0])
    if rest or lo < 0 or lo + count > base.shape[0]:
        return None
    return lo, lo + count


def _reshaped_rows(lo, hi, shape, in_shape):
    """Rows lo:hi of an array of `shape` as rows of its (C-order) source of `in_shape`, when
    they are whole rows there."""
    if not shape or not in_shape:
        return None
    out_row, in_row = int(np.prod(shape[1:])), int(np.prod(in_shape[1:]))
    if out_row == 0 or in_row == 0:
        return None
    a, ra = divmod(lo * out_row, in_row)
    b, rb = divmod(hi * out_row, in_row)
    if ra or rb:
        return None
    return a, b
