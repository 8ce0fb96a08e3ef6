"""The eager sweep's step for an op that gives its rule as text (Op.inline_backward).

engine._sweep hands a node's gradient to its op's rule, then adds each gradient the rule
returns into its input's, in a loop that asks of every input what the op already knows (how
many inputs, which get a gradient). For an op whose rule is text, both are one generated
function, made the first time a sweep meets the op and kept on the class (`Op.sweep_step`,
beside the rule it was made for: a rule put in its place is run through the general path).
It computes what the rule computes and adds it as the loop adds it, with the same numpy calls
in the same order, so the gradients keep their bits; each input's gradient is added before the
next one is computed, which changes nothing: the sweep adds in place only into arrays it
allocated for inputs not reached yet, and a rule reads only its node's gradient and values.

An op with a split rule (Op.backward_split: a matrix product whose weight's gradient the
sweep defers) gets a step too where its `inline_split` has a text for any node
(`inline_split(None)`): the other inputs' gradients as above, then the weight's as
`_Sweep.defer` makes it (its product now, or kept for the weight's other uses). It declines
(returns False, and the sweep runs the op's rule) where the weight needs no gradient, or
where a split rule other than the one the text describes was put in place.
"""
import linecache

import numpy as np

from .backmath import ArrayMath
from .function import declared_by_package
from .op_texts import inline_text
from .ops.linalg import product_text
from .replay_texts import NAMES as TEXT_NAMES

_NAMES = dict(TEXT_NAMES, sum_to=ArrayMath.sum_to, ndarray=np.ndarray)


def make_step(op):
    """The step of `op` (kept as op.sweep_step), run as step(node, g, acc, owned, sweep);
    None (kept too) where the op has no text for it."""
    if op.split_input is not None:
        return _make_split_step(op)
    text = inline_text(op, "inline_backward", None)
    if text is None:  # a rule put in place since the sweep asked (another thread): it runs,
        return None  # and the step is made once the described rule is back
    inputs = [f"i{k}" for k in range(len(text))]
    lines = ["def step(t, g, acc, owned, sweep):", f"    {', '.join(inputs)}, = t._inputs"]
    arrays = {f"x{k}": f"{name}._data" for k, name in enumerate(inputs)}
    same_shape = _keeps_shape(op) and len(text) == 1
    for name, expr in zip(inputs, text):
        if expr is not None:  # None: an input the rule gives nothing (not differentiated)
            lines += _adding(name, expr.format(g="g", out="t", **arrays), "    ", same_shape)
    return _made(op, op.described["inline_backward"], lines, {})


def check_learners_text(op, t, g):
    """Raise if the rule text of an op from outside this package (a learner's) gives other
    values than its `backward` on node t, the first the sweep runs its step on: the step runs
    the text in place of the rule, and a text that does not say what the rule does would
    change the gradients silently (this package's texts are held to their rules by the
    tests). Once per step made: the rule then runs once more on this node."""
    if op.split_input is not None:  # (a split rule's text: not asked here)
        return
    if declared_by_package(op, "inline_backward"):
        return
    text = inline_text(op, "inline_backward", None)
    if text is None:  # (a rule put in place since: it runs)
        return
    inputs = t._inputs
    names = dict(_NAMES, g=g, t=t, **{f"i{k}": i for k, i in enumerate(inputs)})
    arrays = {f"x{k}": f"i{k}._data" for k in range(len(inputs))}
    rule = op.backward(g, t, ArrayMath)
    for k, (inp, expr) in enumerate(zip(inputs, text)):
        if not inp.requires_grad or (expr is None and rule[k] is None):
            continue
        got = None if expr is None else eval(expr.format(g="g", out="t", **arrays), names)
        want = rule[k]
        if (got is None or want is None or np.shape(got) != np.shape(want)
                or np.result_type(got) != np.result_type(want)
                or not np.array_equal(got, want, equal_nan=True)):
            raise RuntimeError(
                f"backward: the inline_backward text of op {op.name or op.__name__!r} for "
                f"input {k} ({expr!r}) gives other values than its backward on this node; "
                f"the text stands for the rule in the sweep, so it must make the same numpy "
                f"calls in the same order (README, 'Adding an op')")


def _keeps_shape(op):
    """Whether a one-input op's output always has its input's shape, so that its rule's
    result, g times a factor of that shape, needs no shape check (the sweep hands each node a
    gradient of the node's shape): a unary elementwise op of this package, whose forward is
    its own and takes no array argument. An op of a learner's that declares itself elementwise
    may broadcast (batching.py allows it: x + an array it keeps), so its results are checked."""
    return (op.batch == "elementwise" and len(op.inputs) == 1 and not op.constants
            and declared_by_package(op, "forward"))


def _make_split_step(op):
    try:
        texts = inline_text(op, "inline_split", None)
    except Exception:  # noqa: BLE001 - a text function written for a node only (a
        op.sweep_step = None  # learner's op whose function reads out._inputs): no step,
        return None  # the rule runs
    if texts is None:
        if op.backward_split is op.described["inline_split"]:
            op.sweep_step = None  # no text for every node (matmul: 1-D operands, no split)
        return None  # (else a split rule put in place: asked again when it is put back)
    grads, left, right = texts
    k = op.split_input
    if any(f"{{x{j}}}" in left + right for j in range(k + 1, len(grads))):
        op.sweep_step = None  # the factors read an input that a node may lack: no step
        return None
    inputs = [f"i{j}" for j in range(len(grads))]
    arrays = {f"x{j}": f"{name}._data" for j, name in enumerate(inputs)}
    # the inputs up to the weight are there on every node (left and right read only them);
    # one after it may be absent (linear's bias)
    lines = ["def step(t, g, acc, owned, sweep):",
             "    inputs = t._inputs",
             *(f"    {name} = inputs[{j}]" for j, name in enumerate(inputs[:k + 1])),
             f"    if not {inputs[k]}.requires_grad or t._op.backward_split is not split:",
             "        return False  # the op's rule runs instead"]
    for j, (name, expr) in enumerate(zip(inputs, grads)):
        if j == k or expr is None:
            continue
        expr = expr.format(g="g", out="t", **arrays)
        if j < k:
            lines += _adding(name, expr, "    ")
        else:
            lines += [f"    if len(inputs) > {j}:", f"        {name} = inputs[{j}]"]
            lines += _adding(name, expr, "        ")
    weight = inputs[k]
    lines += [f"    left = {left.format(g='g', out='t', **arrays)}",
              f"    right = {right.format(g='g', out='t', **arrays)}",
              f"    if {weight} in sweep.shared:  # its other uses' products come with it",
              f"        sweep.defer({weight}, left, right, t)",
              "    else:  # as defer does: its only use, so its product is its gradient",
              f"        acc[{weight}] = {product_text('left.T', 'right', two_d=True)}",
              f"        owned.add({weight})"]
    # made for the rule the class was declared with (not one put in place meanwhile, by
    # another thread: the sweep then runs that one, and this step once the rule is back)
    return _made(op, op.declared["backward"], lines, {"split": op.described["inline_split"]})


def _adding(name, expr, indent, same_shape=False):
    """The lines that compute input `name`'s gradient `expr` and add it as the sweep does
    (summed to the input's shape first, unless it is known to have it)."""
    lines = [f"if {name}.requires_grad:",
             f"    gi = {expr}",
             f"    prev = acc.get({name})"]
    if not same_shape:
        lines += [f"    if gi.shape != {name}._data.shape:",
                  f"        gi = sum_to(gi, {name}._data.shape)",
                  "        if prev is None and type(gi) is ndarray:  # summed: a new array",
                  f"            owned.add({name})"]
    lines += ["    if prev is None:",
              f"        acc[{name}] = gi",
              f"    elif {name} in owned:",
              "        prev += gi",
              "    else:",
              f"        acc[{name}] = prev = prev + gi",
              "        if type(prev) is ndarray:  # 0-d results are immutable scalars",
              f"            owned.add({name})"]
    return [indent + line for line in lines]


def _made(op, rule, lines, names):
    """The step compiled from `lines`, kept on the op beside the rule it was made for."""
    namespace = dict(_NAMES, **names)
    code = "\n".join(lines) + "\n"
    name = f"<sweep step of {op.__module__}.{op.__qualname__}>"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)  # for tracebacks
    exec(compile(code, name, "exec"), namespace)
    step = namespace["step"]
    op.sweep_step = (rule, step)
    return step
