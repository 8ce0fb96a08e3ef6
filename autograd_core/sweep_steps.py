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
"""
import linecache

import numpy as np

from .backmath import ArrayMath
from .function import inline_text
from .replay_texts import NAMES as TEXT_NAMES

_NAMES = dict(TEXT_NAMES, sum_to=ArrayMath.sum_to, ndarray=np.ndarray)


def make_step(op):
    """The step of `op` (kept as op.sweep_step), run as step(node, g, acc, owned)."""
    text = inline_text(op, "inline_backward", None)
    inputs = [f"i{k}" for k in range(len(text))]
    lines = ["def step(t, g, acc, owned):", f"    {', '.join(inputs)}, = t._inputs"]
    arrays = {f"x{k}": f"{name}._data" for k, name in enumerate(inputs)}
    for name, expr in zip(inputs, text):
        if expr is None:  # an input the rule gives nothing (not differentiated)
            continue
        lines += [f"    if {name}.requires_grad:",
                  f"        gi = {expr.format(g='g', out='t', **arrays)}",
                  f"        prev = acc.get({name})",
                  f"        if gi.shape != {name}._data.shape:",
                  f"            gi = sum_to(gi, {name}._data.shape)",
                  "            if prev is None and type(gi) is ndarray:  # summed: a new array",
                  f"                owned.add({name})",
                  "        if prev is None:",
                  f"            acc[{name}] = gi",
                  f"        elif {name} in owned:",
                  "            prev += gi",
                  "        else:",
                  f"            acc[{name}] = prev = prev + gi",
                  "            if type(prev) is ndarray:  # 0-d results are immutable scalars",
                  f"                owned.add({name})"]
    namespace = dict(_NAMES)
    code = "\n".join(lines) + "\n"
    name = f"<sweep step of {op.__module__}.{op.__qualname__}>"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)  # for tracebacks
    exec(compile(code, name, "exec"), namespace)
    step = namespace["step"]
    op.sweep_step = (op.described["inline_backward"], step)
    return step
