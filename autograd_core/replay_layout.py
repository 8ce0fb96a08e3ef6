"""Operand order for a replayed plan's products.

A matrix product's speed can depend on its operands' memory order: on one BLAS a (32, 128) @
(128, 128) product takes twice as long when the right operand is a transposed view, as a
weight written `w.T` is. A recurrent loop multiplies by the same weight at every step. Where an
op declares such operands (`Op.layout`) and one array feeds them at MIN_USES steps or more, the
replayed forward copies it once per call into the order that this machine's BLAS runs faster
(measured when the plan is made, on the first use's own operands) and hands the copy to the
kernels. The rules keep reading the original, whose order their own products may prefer.

A BLAS may sum in another order for another layout (a (1, 32) @ (32, 32) product here does), and
a choice made by timing would then show in the values from one run to the next: a copy is taken
only where every use's product has the same bits both ways (every use: the first, h_0 @ W with
h_0 zeros, may prove nothing, and later ones may have other shapes). Only a batched replay does
this; `ag.replay(fn, batch=False)` runs eager mode's calls and stays bit for bit eager mode.
"""
import itertools
import time

import numpy as np

MIN_USES = 4  # uses of one array in one call before a copy of it can pay
TRIES = 5  # timed calls per order (their minimum is compared)
GAIN = 0.9  # another order is taken when its product costs at most this share of the first's


def copy_kernel(out, x):
    """`x` in `out.order` (a program step's kernel, called as an op's `forward`)."""
    return np.ascontiguousarray(x) if out.order == "C" else np.asfortranarray(x)


class CopyStep:
    """What a program step that copies says of itself where the program's readers ask an
    op (it is no op of the graph: nothing differentiates it, and no rule reads it)."""
    name = "layout_copy"
    layout = ()
    forward = staticmethod(copy_kernel)


class Copy:
    """A program step's output that is no node of the graph: one array in another order."""
    __slots__ = ("_data", "order")
    _op = CopyStep
    requires_grad = False

    def __init__(self, array, order):
        self.order = order
        self._data = array


def reorder(program):
    """`program` (entries (shell, kernel, inputs, arity), oldest first) with a copy step
    after each array that MIN_USES declared operands share and that another order makes
    faster here, and those operands read from the copy. Returns `program` itself when no
    order pays."""
    uses = {}  # id(shell) -> (shell, [(entry position, input position)])
    for k, (s, _, inputs, _) in enumerate(program):
        for i in s._op.layout:
            if i < len(inputs) and inputs[i]._data.ndim == 2:
                uses.setdefault(id(inputs[i]), (inputs[i], []))[1].append((k, i))
    copies = {}  # id(shell) -> its Copy
    for shell, places in uses.values():
        if len(places) >= MIN_USES:
            order = _faster_order(program, places)
            if order is not None:
                copies[id(shell)] = Copy(None, order)  # filled by its step, every call
    if not copies:
        return program
    produced = {id(s) for s, _, _, _ in program}
    out = [(c, copy_kernel, (shell,), 1) for shell, _ in uses.values()
           for c in [copies.get(id(shell))] if c is not None and id(shell) not in produced]
    for s, kernel, inputs, arity in program:
        swapped = tuple(copies.get(id(x), x) if k in s._op.layout else x
                        for k, x in enumerate(inputs))
        out.append((s, kernel, swapped, arity))
        if id(s) in copies:  # computed once per call, then copied
            out.append((copies[id(s)], copy_kernel, (s,), 1))
    return out


def _faster_order(program, places):
    """"C" or "F" when the first use's kernel, given its shared operand in that order, runs
    enough faster to pay the copy at every call, and every use's kernel gives the same bits
    with the copy; None to keep the order it has."""
    k, i = places[0]
    s, kernel, inputs, _ = program[k]
    arrays = [x._data for x in inputs]
    shared = arrays[i]
    first = {j for _, j in itertools.takewhile(lambda place: place[0] == k, places)}
    now = _cost(kernel, s, arrays)
    best, best_cost = None, now * GAIN
    for order in ("C", "F"):
        if shared.flags.c_contiguous if order == "C" else shared.flags.f_contiguous:
            continue
        start = time.perf_counter()
        moved = copy_kernel(Copy(None, order), shared)
        copy_time = time.perf_counter() - start
        if not _same_bits_everywhere(program, places, moved):
            continue  # another summation inside the BLAS: the choice would show in values
        trial = [moved if j in first else a for j, a in enumerate(arrays)]
        cost = _cost(kernel, s, trial)
        if cost < best_cost and (now - cost) * len(places) > 2 * copy_time:
            best, best_cost = order, cost
    return best


def _same_bits_everywhere(program, places, moved):
    """Whether every use in `places` gives the same bits when its kernel reads `moved` (the
    shared operand in another order) where the replayed program will (each of its positions
    that read the shared operand). Every use is tried, not one of each shape: the first may
    prove nothing (h_0 @ W with h_0 zeros has the same bits in any order)."""
    positions = {}  # entry position -> the input positions that read the shared operand
    for k, j in places:
        positions.setdefault(k, set()).add(j)
    for k, shared in positions.items():
        s, kernel, inputs, _ = program[k]
        arrays = [x._data for x in inputs]
        trial = [moved if j in shared else a for j, a in enumerate(arrays)]
        if not _same_bits(kernel(s, *trial), kernel(s, *arrays)):
            return False
    return True


def _same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _cost(kernel, s, arrays):
    """The least time of TRIES calls of `kernel` (one warm-up first); its results are
    dropped, the shell is not written."""
    kernel(s, *arrays)
    best = float("inf")
    for _ in range(TRIES):
        start = time.perf_counter()
        kernel(s, *arrays)
        best = min(best, time.perf_counter() - start)
    return best
