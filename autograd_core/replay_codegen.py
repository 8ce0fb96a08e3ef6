"""A confirmed replay plan's forward and backward as generated Python.

replay_plan.Plan runs its nodes through two loops that decide, node by node, what each node
needs: how many inputs its kernel takes, which of the sweep's paths its rule takes, where its
gradients go and whether they may be added in place. All of that is fixed once the plan is
confirmed. Here the node lists are cut into blocks that repeat back to back (the nodes a loop
over time steps recorded), and each distinct block becomes one generated function with those
decisions made in its source; it loops over the block's repeats ("rows": each row holds its
nodes, their inputs and their gradient slots). Straight-line code for a whole plan would be
simpler but costs seconds to compile at 30,000 nodes; blocks cost one function per distinct
block, shared by every plan that has it.

The generated backward is replay_sweep.sweep, statement for statement: the same
rules called in the same order, the same order of accumulation, so the same bits. A slot's
first contribution is known when the code is made (it assigns); later ones add, in place only
into arrays the sweep allocated (`own`), since a rule may hand one array to two inputs as add
does. A rule may return None for an input at run time: every contribution checks. The
blocks' text is written in replay_sources.py.
"""
import itertools
import linecache

import numpy as np

from .replay_sweep import gathered_rows, stacked_rows, weight_products
from .backmath import ArrayMath
from . import replay_texts as texts
from .replay_sources import backward_source, forward_source

__all__ = ["compile_forward", "compile_backward"]

LONGEST = 128  # the longest block looked for (the nodes of one time step)
TRIES = 8  # periods tried at each place (the next places where its key comes again)
MERGED = 64  # nodes that repeat nowhere are run together in blocks of at most this many
SHORT = 8  # a repeat covering fewer nodes runs with them
VARIADIC = 6  # a kernel with more inputs than this gets them as one tuple (stack, concatenate)


def budget(nodes):
    """Nodes of generated code a plan of `nodes` nodes may compile (about 0.1 ms each): a
    small fraction of what one eager call of it costs. Above it, the plan keeps its loops."""
    return 64 + nodes // 16


_cache = {}  # block key -> generated function, shared by all plans
_CACHE_SIZE = 1024
_files = []  # the generated functions' names in linecache (tracebacks show their lines)
_numbers = itertools.count(1)


def compile_forward(program, placement):
    """[(function, rows)] running `program` ((shell, forward, inputs, arity) in creation
    order) as Plan._run does, or None where it would compile too much. The nodes that
    `placement` (replay_buffers.Placement) puts in a buffer write into their rows, and a
    stack of them is the buffer."""
    keys, row, ends = [], [], []  # row: every node's row, one after the other
    for s, forward, inputs, arity in program:
        row.append(s)
        if id(s) in placement.stacks:  # its inputs wrote their rows: it is the buffer's
            keys.append((None, "stacked", None))
            row.append(placement.stacks[id(s)])
        elif arity <= VARIADIC:
            placed = placement.producers.get(id(s))
            if placed is not None:
                buffer, k, text = placed
                row += (buffer, k)
            else:
                text = texts.forward_text(s, forward, inputs, arity)
            keys.append((forward, arity, text, placed is not None))
            row += inputs
        else:
            keys.append((forward, -1, None))
            row.append(inputs)
        ends.append(len(row))
    return _compile(keys, row, ends, forward_source, budget(len(program)))


def compile_backward(steps, slots, root_slot, gradients):
    """[(function, rows)] running the backward `steps` (replay_sweep.compile_steps's
    tuples, newest first) as replay_sweep.sweep does, or None where it would compile too much.
    Each function is called as function(rows, acc, own, pending). An inline rule whose
    result is the first contribution to a slot of `gradients` ({slot: (Buffer, row)},
    replay_buffers) writes it into that row."""
    seen = [False] * slots  # whether a slot got a contribution yet, in sweep order
    seen[root_slot] = True
    keys, row, ends, inputs = [], [], [], []
    for slot, t, op, kind, extra, targets, waits in steps:
        row += (slot, t)
        inputs.append(t._inputs)
        if kind == "sparse":
            inp, at, shape = extra
            keys.append((op, kind, waits, (shape, not seen[at]), None, ()))
            seen[at] = True
            row += (inp, at)
        elif kind == "row":  # kept for the batched node's step, which nothing else feeds
            keys.append((op, kind, waits, None, None, ()))
            row += extra
        elif len(targets) > VARIADIC:  # their accumulation stays a loop (a stack's inputs)
            for _, at, _ in targets:
                seen[at] = True
            keys.append((op, kind, waits, None, None, ()))
            row.append(targets)
        else:
            which = "inline_backward" if kind == "rule" else "inline_split"
            text = texts.rule_text(texts.for_node(op, which, t), op, which, t)
            plan, into = [], []
            for k, at, shape in targets:
                plan.append((k, shape, not seen[at]))
                if (kind == "rule" and not seen[at] and at in gradients and text is not None
                        and texts.c_ordered(text, k, t)):
                    into.append(k)
                seen[at] = True
                row.append(at)
            if text is not None:
                text += (texts.fitting(text, kind, t, plan), texts.loop_factor(text, kind, t))
            for k, at, _ in targets:
                if k in into:
                    row += gradients[at]
            keys.append((op, kind, waits, tuple(plan), text, tuple(into)))
        if kind == "split":
            row.append(extra)
        ends.append(len(row))
    return _compile(keys, row, ends, backward_source, budget(len(steps)), inputs)


def _compile(keys, row, ends, source, limit, inputs=None):
    """Cut `keys` (one per node) into repeating blocks, make (or find) each block's
    function, and gather each block's rows (node k's part of `row` ends at ends[k]):
    [(function, rows)], or None once more than `limit` nodes of code would have to be
    generated. With `inputs` (each node's input tensors: the backward's), a block that
    repeats is also told which of its nodes' inputs are the same tensor in every repeat
    (_invariant), for its source to read them once."""
    ids = {}
    interned = [ids.setdefault(k, len(ids)) for k in keys]
    runs, made = [], 0
    # lazily: in a graph that repeats nowhere the budget stops the search early
    for start, period, repeats in _merge(_blocks(interned), MERGED):
        key = tuple(keys[start:start + period]), repeats > 1
        if inputs is not None:
            key += (_invariant(inputs, start, period, repeats),)
        fn = _cache.get(key)
        if fn is None:
            made += period
            if made > limit:
                return None
            fn = _make(source(*key))
            if len(_cache) >= _CACHE_SIZE:
                _forget()
            _cache[key] = fn
        first = ends[start - 1] if start else 0
        rows = []
        for last in range(start + period - 1, start + period * repeats, period):
            rows.append(tuple(row[first:ends[last]]))
            first = ends[last]
        runs.append((fn, rows))
    return runs


def _invariant(inputs, start, period, repeats):
    """Per node of a block, the positions of its inputs that are the same tensor in all the
    block's repeats (a loop's weights), or None for a block that runs once."""
    if repeats == 1:
        return None
    return tuple(tuple(k for k, i in enumerate(inputs[start + q])
                       if all(inputs[start + q + r * period][k] is i
                              for r in range(1, repeats)))
                 for q in range(period))


def _blocks(keys):
    """(start, period, repeats) covering `keys` in order, lazily: at each place, the block of
    at most LONGEST keys whose back-to-back repeats cover the most (the shortest such block).
    The periods tried are the distances to the next few places where the same key comes
    again."""
    n = len(keys)
    again, after = [n] * n, {}  # again[j]: the next place keys[j] comes again, or n
    for j in range(n - 1, -1, -1):
        again[j] = after.get(keys[j], n)
        after[keys[j]] = j
    i = 0
    while i < n:
        period, repeats = 1, 1
        j, tries = again[i], TRIES
        while j < n and j - i <= LONGEST and 2 * (j - i) <= n - i and tries:
            p = j - i
            if repeats == 1 or p % period:  # a multiple of a repeating block covers no more
                tries -= 1
                block, end = keys[i:j], j + p
                while keys[end - p:end] == block:
                    end += p
                c = (end - p - i) // p
                if c > 1 and c * p > period * repeats:
                    period, repeats = p, c
            j = again[j]
        yield i, period, repeats
        i += period * repeats


def _merge(runs, most):
    """Runs that repeat nowhere, or cover fewer than SHORT nodes, joined into blocks of at
    most `most` nodes that run once (a function per short repeat would cost more than it
    saves)."""
    held = None
    for start, period, repeats in runs:
        size = period * repeats
        if repeats == 1 or size < SHORT:
            if held is not None and held[1] + size <= most:
                held = (held[0], held[1] + size, 1)
                continue
            if held is not None:
                yield held
            held = (start, size, 1)
            continue
        if held is not None:
            yield held
            held = None
        yield start, period, repeats
    if held is not None:
        yield held


def _make(source):
    code, constants = source
    name = f"<replay block {next(_numbers)}>"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    _files.append(name)
    namespace = dict(constants, **texts.NAMES, xp=ArrayMath, sum_to=ArrayMath.sum_to,
                     ndarray=np.ndarray, zeros=np.zeros, result_type=np.result_type,
                     stacked=weight_products, gathered_rows=gathered_rows,
                     stacked_rows=stacked_rows)
    exec(compile(code, name, "exec"), namespace)
    return namespace["block"]


def _forget():
    _cache.clear()
    while _files:
        linecache.cache.pop(_files.pop(), None)
