"""Buffers a replayed call writes a loop's states into, so that stacking them costs no copy.

A loop that makes one state per step reads them stacked twice: the output layer batched over
all steps reads every h_t stacked (the forward), and the gradient of a weight that every step
multiplied is one product of the steps' factors stacked (the backward: h_0 .. h_{T-1} for
h W). Copying T arrays of (32, 128) float32 into one moves 800 KB, about an eighth of what the
forward's loop costs. Where each state is made by one numpy ufunc call (an op's inline
forward text, `np.tanh({x0})`), the plan keeps one buffer for them, each step's ufunc writes
its state into its row (`out=`), and a stack of consecutive rows is a view of the buffer; the
gradients a weight's uses receive go the same way into a buffer of the backward. A buffer has
one row more, in front: a factor list that starts with a state made elsewhere (h_0, zeros)
gets it copied there and is a view too. Consecutive rows, in order or newest first, stack as
a view wherever they are read stacked (Buffer.rows).

The buffers are made once and written again by every call, as the shells are (a later call
overwrites the values an earlier call's backward needs: that backward raises): memory that the
last call used is still in the caches, where a new 800 KB array each call is not. Nothing a
call hands out is a view of one: the result is a copy, a leaf's gradient a product or a copy,
and where a rule hands a buffer's row on as a leaf's gradient (to an observer that may keep
it) that buffer is made anew by the next call. The values are the same: the same ufunc writes
the same numbers elsewhere. Nothing writes into a state in place: grad mode refuses in-place
changes of the graph's tensors, and rules only read the forward's values.
"""
import ast
import re
from operator import is_

import numpy as np

from . import replay_texts as texts
from .function import as_declared
from .ops.joining import Stack

OUT = "{o}"  # where a placed producer's text names the row it writes

# A gradient row smaller than this is stacked by copying: the view of it that a rule writes
# into costs about what copying it costs.
GRADIENT_ROW_BYTES = 2048

_UFUNC_OF = {ast.Mult: "multiply", ast.Add: "add", ast.Sub: "subtract", ast.Div: "divide"}


class Buffer:
    """Rows of one shape and dtype: an array made on first use and written again by each
    replayed call (`ready`), unless a view of it was handed out (`let_go`)."""
    __slots__ = ("buf", "shape", "dtype", "lead", "views", "row_of", "handed_out")

    def __init__(self, rows, row, dtype):
        self.shape, self.dtype = (rows,) + row, dtype
        self.buf = self.views = self.row_of = None
        self.lead = None  # the shell copied into row 0 by a window, if one is
        self.handed_out = False

    def ready(self):
        """The array, made on first use and kept: each call writes it again."""
        if self.buf is None or self.handed_out:
            self.buf = np.empty(self.shape, self.dtype)
            self.views = self.row_of = None
            self.handed_out = False

    def ready_views(self):
        """The array and its rows as views, made once: a kernel writes a state, or a rule a
        gradient, into views[k] (no view is made per step), and a stack of the rows knows
        them by identity."""
        self.ready()
        if self.views is None:
            self.views = list(self.buf)
            self.row_of = {id(v): k for k, v in enumerate(self.views)}  # views live as long

    def rows(self, arrays):
        """The stack of `arrays` as a view, where they are these very views of consecutive
        rows, in order (buf[k:k + n]) or newest first (a backward's order: reversed); else
        None."""
        k = self.row_of.get(id(arrays[0])) if self.row_of is not None else None
        if k is None:
            return None
        n, views = len(arrays), self.views
        if k + n <= len(views) and all(map(is_, arrays, views[k:k + n])):
            return self.buf[k:k + n]
        if k + 1 >= n and all(map(is_, arrays, reversed(views[k + 1 - n:k + 1]))):
            return self.buf[k + 1 - n:k + 1][::-1]
        return None

    def let_go(self):
        """This array (a view of it) left the plan: the next `ready` makes a new one. It
        stays meanwhile, for another backward of the same call (retain_graph)."""
        self.handed_out = True


class Window:
    """Rows lo .. hi-1 of a buffer: a forward stack's array (`stacked`), or the stack of a
    weight's factors that the backward would make (`seed`)."""
    __slots__ = ("buffer", "lo", "hi", "shells")

    def __init__(self, buffer, lo, hi, shells=None):
        self.buffer, self.lo, self.hi, self.shells = buffer, lo, hi, shells

    def stacked(self):
        return self.buffer.buf[self.lo:self.hi]

    def seed(self, stacks):
        """Offer the rows as the concatenation of the shells' arrays to
        stacked_products.joined (which takes it only for those very arrays, in order)."""
        arrays = [s._data for s in self.shells]
        buf = self.buffer.buf
        if self.lo == 0:  # row 0 holds a copy of the first factor
            buf[0] = arrays[0]
        stacks[id(arrays[0])] = (arrays, _joined(buf[self.lo:self.hi]))


def _joined(rows):
    """Consecutive rows of a buffer as np.concatenate joins them: along their first axis."""
    return rows.reshape((rows.shape[0] * rows.shape[1],) + rows.shape[2:])


class Placement:
    """Where a plan's states are written (see place), and the gradients its weights' uses
    receive (see _place_gradients)."""

    def __init__(self):
        self.producers = {}  # id(shell) -> (Buffer, row, its text writing into {o})
        self.stacks = {}  # id(forward stack's shell) -> Window
        self.windows = []  # Windows the backward may stack again (factors, states)
        self.buffers = []
        self.gradients = {}  # gradient slot -> (Buffer, row)
        self.gradient_windows = []  # (Buffer, lo, hi)
        self.gradient_buffers = []

    def ready(self):
        for buffer in self.buffers:
            buffer.ready_views()

    def seed(self, stacks):
        for window in self.windows:
            window.seed(stacks)

    def seed_gradients(self, stacks):
        """The gradient buffers made ready for a backward, their windows offered to
        `stacks`."""
        for buffer in self.gradient_buffers:
            buffer.ready_views()
        for buffer, lo, hi in self.gradient_windows:
            views, rows = buffer.views[lo:hi], buffer.buf[lo:hi]
            stacks[id(views[0])] = (views, _joined(rows))

    def let_go_of(self, arrays):
        """The buffers that `arrays` (what a backward hands out: the leaves' gradients)
        are views of are made anew by the next call, so that what was handed out (to an
        observer that keeps it) never changes."""
        for a in arrays:
            base = getattr(a, "base", None)
            if base is not None:
                for buffer in self.buffers:
                    if buffer.buf is base:
                        buffer.let_go()
                for buffer in self.gradient_buffers:
                    if buffer.buf is base:
                        buffer.let_go()


NOTHING = Placement()  # a plan whose forward is not generated places nothing


def writing_into(text):
    """`text` (an inline forward) as a call writing its result into {o}, where it is one
    numpy ufunc call with its inputs given by position (and perhaps its output, replaced);
    else None. The call is written anew from its parsed inputs (a comment or parentheses
    around the text are not carried over)."""
    call = _ufunc_call(text)
    if call is None:
        return None
    name, args = call
    return f"np.{name}({', '.join(args)}, out={OUT})"


def _ufunc_call(text, outputs=True):
    """(the ufunc's name, its inputs' source texts) where `text` is one call of a numpy
    ufunc with one output, its inputs by position (and, with `outputs`, perhaps its output
    after them, which is left out); else None."""
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name) and call.func.value.id == "np"
            and not call.keywords and not any(isinstance(a, ast.Starred) for a in call.args)):
        return None
    ufunc = getattr(np, call.func.attr, None)
    if not isinstance(ufunc, np.ufunc) or ufunc.nout != 1:
        return None
    args = call.args
    if len(args) == ufunc.nin + 1 and outputs:
        args = args[:-1]
    if len(args) != ufunc.nin:
        return None
    return call.func.attr, [f"({ast.get_source_segment(text, a)})" for a in args]


def writing_value(value, out):
    """`value` (a rule's expression as a block writes it) computed into the array `out`
    names, refusing any cast (casting="no": a gradient of another dtype than the buffer's
    raises, and the block then computes it as before), or None where it is not one ufunc
    call or one operator that is one (a * b is np.multiply(a, b) for arrays)."""
    try:
        node = ast.parse(value, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.BinOp) and type(node.op) in _UFUNC_OF:
        name, args = _UFUNC_OF[type(node.op)], (node.left, node.right)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        name, args = "negative", (node.operand,)
    else:
        call = _ufunc_call(value, outputs=False)
        if call is None:
            return None
        name, texts_ = call
        return f"np.{name}({', '.join(texts_)}, out={out}, casting='no')"
    texts_ = [f"({ast.get_source_segment(value, a)})" for a in args]
    return f"np.{name}({', '.join(texts_)}, out={out}, casting='no')"


def place(program, steps):
    """Which states of `program` ((shell, forward, inputs, arity), creation order) are
    written into buffers: those a forward stack reads (all of its inputs, or none), then
    those a weight's factors in the backward `steps` (replay_sweep.compile_steps) read."""
    writable = {}  # id(shell) -> its text writing into {o}
    for s, forward, inputs, arity in program:
        # a row is C-ordered: a state that eager mode makes in another order keeps it (a
        # product of it may round otherwise); 0-d rows are no views
        if (arity <= 3 and type(s._data) is np.ndarray and s._data.ndim
                and s._data.flags.c_contiguous):
            text = texts.forward_text(s, forward, inputs, arity)
            into = None if text is None else writing_into(text)
            if into is not None:
                writable[id(s)] = into
    placement = Placement()
    for s, _, inputs, _ in program:
        if s._op is Stack and as_declared(Stack) and s._saved == 0 and len(inputs) > 1:
            window = _claim(placement, writable, list(inputs), copy=False)
            if window is not None:
                placement.stacks[id(s)] = window
                window.shells = list(inputs)  # a rule's factor stacks them again
                placement.windows.append(window)
    lists, gradients = _factor_lists(steps)
    for shells in lists:
        window = _claim(placement, writable, shells, copy=True)
        if window is not None:
            window.shells = shells
            placement.windows.append(window)
    _place_gradients(placement, steps, gradients)
    return placement


def _place_gradients(placement, steps, uses):
    """The gradients that a weight's uses receive, where each is one inline rule's result
    that can be written into a row (writes_row): rows of a buffer of the backward, whose
    stack is then a view (`uses`: per weight, its uses' (slot, shell) in creation order)."""
    made = {}  # slot -> [(kind, node, op, input position, shape)] of what contributes to it
    for _, t, op, kind, extra, targets, _ in steps:
        for k, at, shape in ([(None, extra[1], None)] if kind == "sparse" else targets):
            made.setdefault(at, []).append((kind, t, op, k, shape))
    for nodes in uses:
        first = nodes[0][1]._data
        if first.nbytes < GRADIENT_ROW_BYTES or any(
                n._data.shape != first.shape or n._data.dtype != first.dtype
                or slot in placement.gradients or not _writes_row(made.get(slot, ()))
                for slot, n in nodes):
            continue
        buffer = Buffer(len(nodes), first.shape, first.dtype)
        for k, (slot, _) in enumerate(nodes):
            placement.gradients[slot] = (buffer, k)
        placement.gradient_buffers.append(buffer)
        placement.gradient_windows.append((buffer, 0, len(nodes)))


def _writes_row(contributions):
    """Whether a slot's gradient is one inline rule's result that the generated backward
    writes into a row (replay_codegen: a C-ordered result of the known shape, one ufunc
    call or operator)."""
    if len(contributions) != 1 or contributions[0][0] != "rule":
        return False
    _, t, op, k, shape = contributions[0]
    text = texts.rule_text(texts.for_node(op, "inline_backward", t), op, "inline_backward", t)
    if text is None or text[0][k] is None or not texts.c_ordered(text, k, t):
        return False
    if not texts.fitting(text, "rule", t, [(k, shape, True)])[0]:
        return False
    return writing_value(texts.filled(text[0][k], "t", text[1]), "out") is not None


def _claim(placement, writable, shells, copy):
    """A Window holding `shells` as consecutive rows, placing them where none is yet, or
    None. With `copy`, a first shell that is not written there may be copied into row 0."""
    first, rest = shells[0], shells[1:]
    row, dtype = first._data.shape, first._data.dtype
    if len({id(s) for s in shells}) != len(shells) or any(
            s._data.shape != row or s._data.dtype != dtype for s in rest):
        return None
    where = placement.producers  # id(shell) -> (Buffer, row, text)
    if not any(id(s) in where for s in shells):  # a new buffer; row 0 stays for a copy
        if not all(id(s) in writable for s in rest):
            return None
        if id(first) not in writable and not copy:
            return None
        buffer = Buffer(len(shells) + 1, row, dtype)
        placement.buffers.append(buffer)
        start = 1 if id(first) in writable else 0
        for k, s in enumerate(shells[1 - start:], start=1):
            _put(placement, writable, s, buffer, k)
        if start == 0:
            buffer.lead = first
        return Window(buffer, start, start + len(shells))
    # every shell already placed sits where the window puts it: one buffer, in order
    anchor = next(k for k, s in enumerate(shells) if id(s) in where)
    buffer, at, _ = where[id(shells[anchor])]
    lo = at - anchor
    if lo < 0 or lo + len(shells) > buffer.shape[0]:
        return None
    for k, s in enumerate(shells):
        placed = where.get(id(s))
        if placed is not None and placed[0] is buffer and placed[1] == lo + k:
            continue
        if k == 0 and lo == 0 and copy and (buffer.lead is None or buffer.lead is first):
            buffer.lead = first  # copied into row 0 before the backward stacks
            continue
        return None  # elsewhere, or a row another state holds or nobody writes
    return Window(buffer, lo, lo + len(shells))


def _put(placement, writable, s, buffer, k):
    placement.producers[id(s)] = (buffer, k, writable[id(s)])


def _factor_lists(steps):
    """For each weight that several products read, in the order the backward stacks its
    factors (creation order), where an inline split text names them: the lists of forward
    shells a factor side reads ({xK}), and the lists of (slot, shell) of the uses whose
    gradient ({g}) a side is."""
    uses = {}  # weight slot -> [(left, right)], newest first: a shell, "g" or None
    for slot, t, op, kind, weight, _, _ in steps:
        if kind != "split":
            continue
        text = texts.for_node(op, "inline_split", t)
        sides = [None, None]
        if text is not None:
            for side, part in enumerate(text[1:]):
                found = re.fullmatch(r"\{x(\d+)\}", part)
                if found:
                    sides[side] = t._inputs[int(found.group(1))]
                elif part == "{g}":
                    sides[side] = (slot, t)
        uses.setdefault(weight, []).append(sides)
    shells, gradients = [], []
    for pairs in uses.values():
        if len(pairs) < 2:
            continue
        for side in (0, 1):
            found = [p[side] for p in reversed(pairs)]
            if all(isinstance(s, tuple) for s in found):
                gradients.append(found)
            elif all(s is not None and not isinstance(s, tuple) for s in found):
                shells.append(found)
    return shells, gradients
