"""The backward of a replayed plan: its steps, fixed when the plan is made, and the sweep that
runs them (replay_codegen generates the same sweep as code, block by block; this loop runs
what it does not compile). The steps are engine._sweep's, decided once: which fast path each
rule takes, where its gradients go, and what later steps wait for."""
import numpy as np

from . import stacked_products
from .backmath import ArrayMath
from .function import as_declared, fast_path_serves
from .ops.indexing import GetItem

# how a backward step runs its op's rule
RULE = "rule"  # op.backward
SPARSE = "sparse"  # op.backward_into, adding into one buffer per input (indexing)
SPLIT = "split"  # op.backward_split, the weight's product deferred
ROW = "row"  # one row of a batched node: its gradient kept until the node's step

# what waits for a backward step (the gradients that other steps kept for it)
WEIGHT = "weight"  # the deferred products of its uses as a weight (in `pending[slot]`)
ROWS = "rows"  # its rows' gradients, kept by its extractions (in `pending[-1 - slot]`)

BUFFERS = "buffers"  # pending[BUFFERS]: the plan's buffers, whose rows stack as views
STACKS = "stacks"  # pending[STACKS]: the stacks of rows and factors made so far
#                   (stacked_products.joined)


def _row_extractions(nodes):
    """{extraction: the batched node it reads} for the nodes (not leaves) that only
    extractions x[k] read, one per row k, every row once: the rows' gradients stacked are
    the node's gradient (one copy, where adding each into a zero buffer costs a call per
    row and a buffer to clear). Batching makes such extractions of its groups."""
    readers = {}
    for n in nodes:
        for i in n._inputs:
            readers.setdefault(i, []).append(n)
    found = {}
    for x, users in readers.items():
        if x._op is None or not x.requires_grad or x._data.ndim == 0:
            continue
        rows = [u._saved[0] for u in users
                if isinstance(u._op, type) and issubclass(u._op, GetItem) and
                u._op.backward_into is GetItem.declared["backward_into"] and as_declared(u._op)
                and u._saved[1] is True
                and type(u._saved[0]) is int]
        if len(rows) == len(users) == x._data.shape[0] and sorted(rows) == list(
                range(len(rows))):
            found.update((u, x) for u in users)
    return found


def gathered_rows(parts, x, pending):
    """The gradient of `x` whose row k is parts[k] (None: a row no gradient reached); the
    list's last entry is the row gradient that arrived first, whose dtype sets the result's
    as it sets that of the zero buffer the rows would be added into (engine add_into).
    The stack is kept in pending[STACKS]: the rows are often the factors of a weight's
    gradient too."""
    first = parts.pop()
    dtype = np.result_type(first, x._data)
    if all(p is not None for p in parts):
        out = stacked_rows(parts, pending)
        return out if out.dtype == dtype else out.astype(dtype)
    out = np.zeros(x._data.shape, dtype=dtype)
    for k, p in enumerate(parts):
        if p is not None:
            out[k] = p
    return out


def stacked_rows(rows, pending):
    """np.stack(rows) (arrays of one shape): a view where they are consecutive rows of one
    of the plan's buffers (pending[BUFFERS], in order or newest first: Buffer.rows), else the
    concatenation that pending[STACKS] holds or keeps (stacked_products.joined: a weight's
    factors, a window of a buffer seeded whole)."""
    row = rows[0]
    if not row.ndim:
        return np.stack(rows)
    for buffer in pending.get(BUFFERS, ()):  # consecutive rows of a buffer: a view of it
        out = buffer.rows(rows)
        if out is not None:
            return out
    out = stacked_products.joined(rows, pending.setdefault(STACKS, {}))
    return out.reshape((len(rows),) + row.shape)


def compile_steps(nodes, index, batched):
    """The backward's steps, newest first, one per node that requires grad, with all that
    the recording fixes: the node's position in the list of gradients (`index`), its shell
    and op, how its rule runs (`kind`: the sweep's fast paths, taken as sweep_state._Sweep takes
    them, and what that kind needs), where each result goes ((result index, position,
    shape) per input that requires grad), and what waits for it (`waits`: WEIGHT, deferred
    products of its uses as a weight; ROWS, the rows of a batched node that its extractions
    gathered; or None)."""
    weights = set()  # positions of the weights whose products a split step defers
    rows = _row_extractions(nodes) if batched else {}
    gathering = {id(x) for x in rows.values()}
    steps = []
    for s in nodes:
        if not s.requires_grad:
            continue
        op, inputs = s._op, s._inputs
        kind, extra = RULE, None
        fast = fast_path_serves(op)
        if s in rows:  # one row of a batched node, which gathers its rows' gradients
            x = inputs[0]
            kind, extra = ROW, (-1 - index[x], s._saved[0], x._data.shape[0])
        elif fast and op.backward_into is not None:  # one input, requiring grad as s does
            kind, extra = SPARSE, (inputs[0], index[inputs[0]], inputs[0]._data.shape)
        elif fast and op.backward_split is not None and inputs[op.split_input].requires_grad:
            kind, extra = SPLIT, index[inputs[op.split_input]]
            weights.add(extra)
        targets = tuple((k, index[i], i._data.shape) for k, i in enumerate(inputs)
                        if i.requires_grad)
        # newest first: every use of s as a weight, every row of s, has been seen by now
        waits = WEIGHT if index[s] in weights else ROWS if id(s) in gathering else None
        steps.append((index[s], s, op, kind, extra, targets, waits))
    return steps


def weight_products(parts, g, pending):
    """stacked_products, with the stacks this sweep made so far."""
    return stacked_products.stacked_products(parts, g, pending.setdefault(STACKS, {}))


def sweep(steps, acc, owned, pending):
    """engine._sweep over a plan's steps (its fast paths, its order of accumulation), with
    none of its per-node checks: gradients in `acc` by slot, `owned` where the sweep
    allocated them (only those are added into in place: a rule may hand one array to two
    inputs, as add does), `pending` what steps keep for later ones (see WEIGHT, ROWS)."""
    xp, sum_to = ArrayMath, ArrayMath.sum_to
    for slot, t, op, kind, extra, targets, waits in steps:
        g = acc[slot]
        acc[slot] = None  # freed once its rule ran, as eager mode pops it
        if waits is WEIGHT:
            parts = pending.pop(slot, None)
            if parts is not None:
                g = weight_products(parts, g, pending)
        elif waits is ROWS:
            parts = pending.pop(-1 - slot, None)
            if parts is not None:
                g = gathered_rows(parts, t, pending)
        if g is None:
            continue
        if kind is ROW:  # kept, not added into a buffer: the rows are stacked at once
            key, row, count = extra
            parts = pending.get(key)
            if parts is None:  # the last entry: the first to arrive (eager mode's dtype)
                pending[key] = parts = [None] * count + [g]
            parts[row] = g
            continue
        if kind is RULE:
            grads = op.backward(g, t, xp)
        elif kind is SPLIT:  # sweep_state._Sweep.defer: W's product waits for its other uses
            split = op.backward_split(g, t)
            if split is None:
                grads = op.backward(g, t, xp)
            else:
                grads, left, right = split
                parts = pending.get(extra)
                if parts is None:
                    pending[extra] = parts = []
                parts.append((left, right))
        else:  # _SPARSE, sweep_state._Sweep.add_into: one zero buffer per input
            inp, at, shape = extra
            buf = acc[at]
            if buf is None or not owned[at]:
                fresh = np.zeros(shape, dtype=np.result_type(g, inp._data))
                if buf is not None:
                    fresh += buf
                buf = acc[at] = fresh
                owned[at] = True
            op.backward_into(g, t, buf)
            continue
        for k, at, shape in targets:  # engine._sweep's accumulation, inline as there
            gi = grads[k]
            if gi is None:
                continue
            prev = acc[at]
            if gi.shape != shape:
                gi = sum_to(gi, shape)
                if prev is None and type(gi) is np.ndarray:
                    acc[at] = gi
                    owned[at] = True
                    continue
            if prev is None:
                acc[at] = gi
            elif owned[at]:
                prev += gi
            else:
                acc[at] = prev = prev + gi
                if type(prev) is np.ndarray:
                    owned[at] = True
