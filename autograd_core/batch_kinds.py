"""What batching asks of each recorded node: how its op batches (`Op.batch`, where the op is
as declared), what copies of it batched together must share (their signature), and which
nodes merely repeat an earlier one (`w.T` written inside a loop) and can be merged with it.
batching.py groups and rewrites the graph from these answers."""
import math

import numpy as np

from .function import as_declared, declared_by_package
from .ops.arithmetic import Add
from .ops.indexing import GetItem
from .ops.linalg import MatMul

# the kinds whose groups and rewrites are made of nodes of the op that declares them (a
# chain's stack and sum, a 2-D product and a fused addmm, a slice of rows), whatever the
# group's op: kind -> that op
_MADE_AS = {op.batch: op for op in (Add, MatMul, GetItem)}


def merge_repeats(nodes, keep):
    """(the nodes without repeats, {node: its inputs}): a node that applies the same op with
    the same parameters to the same inputs as an earlier one (w.T or u[:, :h] written inside
    the loop) is dropped, and its consumers read the earlier one."""
    same, first, kept, inputs, merged = {}, {}, [], {}, []  # node -> the one it repeats
    for n in nodes:
        ins = tuple(same.get(i, i) for i in n._inputs)
        # (this package's ops as declared: a learner's rule need not give one use's sum as
        # two uses do, a clipping rule does not)
        key = (None if n in keep or not as_declared(n._op)
               or not declared_by_package(n._op, "backward") else _parameters_key(n._saved))
        if key is not None:  # the output's shape and dtype too: reshape and astype save none
            key = (n._op, tuple(map(id, ins)), key, n._data.shape, n._data.dtype)
            earlier = first.get(key)
            if earlier is not None:
                same[n] = earlier
                merged.append((n, earlier))
                continue
            first[key] = n
        kept.append(n)
        inputs[n] = ins
    return kept, inputs, merged


def _parameters_key(saved):
    """A hashable stand-in for an op's saved parameters, or None when they hold arrays (or
    anything else that is not a plain value)."""
    if type(saved) is float:  # -0.0 == 0.0, but x * -0.0 is not x * 0.0
        return None if saved != saved else ("float", saved, math.copysign(1.0, saved))
    if _plain(saved) or type(saved) is str:
        return (type(saved).__name__, saved)
    if type(saved) is slice:
        return ("slice", saved.start, saved.stop, saved.step)
    if type(saved) is tuple:
        parts = tuple(_parameters_key(v) for v in saved)
        return None if any(p is None for p in parts) else ("tuple",) + parts
    return None


def _plain(value):
    return value is None or type(value) in (int, float, bool)


def kind(op):
    """How op batches (Op.batch), or None where its kernel or rule is not the one its class
    was declared with (function.as_declared): a batched group, and each of batching.py's
    rewrites, runs the declared ones on the stacked or merged operands. The kinds whose
    rewrites make nodes of this package's own ops (a chain's stack and sum, a fused addmm, a
    2-D product, a slice of rows) hold only for ops with those ops' own kernel and rule: a
    learner's subclass with its own rule that declares such a kind runs copy by copy."""
    if not as_declared(op):
        return None
    batches = op.batch
    own = _MADE_AS.get(batches)
    if own is not None and op.declared != own.declared:  # (functions compare by identity)
        return None
    return batches


def signature_of(n, inputs, fixed):
    """What copies batched together must share, or None when n cannot batch; `fixed`: the
    parameters and the nodes computed from them alone."""
    op, data = n._op, n._data
    batches = kind(op)
    if batches is None or type(data) is not np.ndarray:
        return None
    # A parameter, or what is computed from parameters alone (w.T, a slice of the bias), is
    # an operand the copies share: copies with another one go to another group, rather than
    # stacking parameters.
    operands = tuple((i._data.shape, i._data.dtype, id(i) if i in fixed else None)
                     for i in inputs)
    common = (op, data.shape, data.dtype, operands)
    saved = _parameters_key(n._saved)
    if batches in ("elementwise", "sum"):
        return common + (saved,) if _plain(n._saved) and saved is not None else None
    if batches == "matmul":  # the right operand (the weight) is shared: one 2-D product
        if not all(len(i._data.shape) == 2 for i in inputs):
            return None
        return common + (id(inputs[1]),)
    if batches == "reduce":
        return common + (saved,) if saved is not None else None
    if batches == "rows":
        target = n._saved[0]
        return common + (target.shape, target.dtype)
    if batches == "index":
        index, basic = n._saved
        if type(index) is not int or not basic:
            return None
        return common + (id(inputs[0]),)
    return None
