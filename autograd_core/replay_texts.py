"""The ops' inline texts (Op.inline_forward, inline_backward, inline_split) made ready for
replay's generated blocks (replay_codegen.py): found for a node, held to their form, filled
with the block's names, and, for a rule, whether each result is known to have its input's
shape (then the block adds it without checking)."""
import ast
import functools
import re

import numpy as np

from .op_texts import check_text, inline_text
from .graph import saved_arrays
from .exact_scalars import ONES, exact
from .ops.linalg import product


# What an inline text may name besides its fields (Op.inline_forward): every place that runs
# one (replay's blocks, the eager sweep's steps, the shape check below) starts from these.
NAMES = {"np": np, "product": product, "one": ONES, "exact": exact}


def for_node(op, declared, node, *arrays):
    """The op's inline text (Op.inline_forward, inline_backward, inline_split) for `node`,
    or None where the node runs the op's function (a layout copy's step is no op class)."""
    return inline_text(op, declared, node, *arrays) if isinstance(op, type) else None


def forward_text(s, forward, inputs, arity):
    """The inline forward text of a program entry (its shell, kernel, inputs and arity),
    checked, or None where the kernel is called (a layout copy, a replaced kernel, an op
    without one)."""
    op, recorded = s._op, getattr(s, "_inputs", None)  # a layout copy has none
    if recorded is None or forward is not getattr(op, "forward", None):
        return None
    text = for_node(op, "inline_forward", s, *[i._data for i in recorded])
    return None if text is None else checked(op, "inline_forward", text, arity)


_checked_texts = set()  # (op, which, text, inputs) already held to their form


def checked(op, which, text, count):
    """`text` (a function's result: a declared text was checked with its class) held to
    its form (op_texts.check_text) once per op and text."""
    key = (op, which, text, count)
    if key not in _checked_texts:
        check_text(op, which, text, count)
        _checked_texts.add(key)
    return text


def rule_text(text, op, which, node):
    """An inline rule's (or split rule's) text and the node's number of inputs, checked;
    None stays None. The block fills it once (`filled`), so that {{ }} stay braces."""
    if text is None:
        return None
    count = len(node._inputs)
    return checked(op, which, text, count), count


def _run_once(expr, node, count):
    """A rule's expression run once on a zero gradient of the node's shape and dtype and its
    recorded values (what `fitting` and `c_ordered` learn from), or None where it raises."""
    data = node._data
    try:
        with np.errstate(all="ignore"):
            return eval(filled(expr, "t", count), dict(NAMES),
                        {"t": node, "g": np.zeros(data.shape, data.dtype)})
    except Exception:  # noqa: BLE001  (any failure: the caller keeps the general path)
        return None


_fits = {}  # (expression, the node's and its inputs' and saved arrays' shapes and dtypes,
#              target shape) -> whether the expression's result has the target's shape


def fitting(text, kind, node, plan):
    """For each target of `plan`, whether the rule's expression for it gives an array of
    the target's shape for this node's shapes and dtypes (as it will every call: a plan's
    shapes are fixed), so that the block adds it without checking: the expression is run
    once on a zero gradient and the recorded values."""
    text, count = text
    exprs = text if kind == "rule" else text[0]
    data = node._data
    inputs = (tuple((i._data.shape, i._data.dtype) for i in node._inputs),
              tuple(a.shape for a in saved_arrays(node._saved)))
    fits = []
    for k, shape, _ in plan:
        expr = exprs[k]
        key = (expr, data.shape, data.dtype, inputs, shape)
        fit = _fits.get(key)
        if fit is None and expr is not None:  # a text that fails here keeps its checks
            value = _run_once(expr, node, count)
            fit = getattr(value, "shape", None) == shape
            if len(_fits) > 4096:
                _fits.clear()
            _fits[key] = fit
        fits.append(bool(fit))
    return tuple(fits)


_orders = {}  # (expression, shapes, dtypes and orders it reads) -> whether C-ordered


def c_ordered(text, k, node):
    """Whether the rule's expression for input k (`text`: rule_text's) gives a C-ordered
    array for a C-ordered gradient and this node's recorded arrays (as it will each call:
    their orders are the recording's), run once as `fitting` runs it."""
    text, count = text
    expr = text[k]
    if expr is None:
        return False
    data = node._data
    arrays = [data] + [i._data for i in node._inputs] + list(saved_arrays(node._saved))
    key = (expr, tuple((a.shape, a.dtype.str, a.flags.c_contiguous, a.flags.f_contiguous)
                       for a in arrays if isinstance(a, np.ndarray)))
    found = _orders.get(key)
    if found is None:  # a text that fails here is not written into a row
        value = _run_once(expr, node, count)
        found = type(value) is np.ndarray and value.flags.c_contiguous
        if len(_orders) > 4096:
            _orders.clear()
        _orders[key] = found
    return found


def filled(text, node, count, hoisted=None):
    """A rule's expression for the block: {out} the node's variable, {g} the gradient's,
    {x0}.. the node's inputs' arrays. `hoisted` ({k: name}) names the inputs that are the
    same array in every row of a loop's block, bound once before its loop (as `name`, and
    `name`T for {xk}.T, a transpose made once)."""
    fields = {f"x{k}": f"{node}._inputs[{k}]._data" for k in range(count)}
    for k, name in (hoisted or {}).items():
        text = re.sub(r"\{x%d\}\.T(?![A-Za-z0-9_])" % k, name + "T", text)
        fields[f"x{k}"] = name
    return text.format(out=node, g="g", **fields)


# A rule's factor is computed ahead for all of a loop's steps only where a step's array is at
# most this large: there the two ufunc calls saved per step cost more than their arithmetic
# (a (1, 32) state: the unroll's backward ~10% faster), where on a (32, 128) state the pass
# over all the steps' stacked arrays left the backward ~10% slower.
FACTOR_BYTES = 4096

_SOURCES = ("{out}._data", "{x0}")  # the forward arrays a factor may read (one of them)


@functools.lru_cache(maxsize=256)  # asked once per node of a plan (~60 us to parse)
def factor(expr):
    """For a one-input rule's expression of the form `{g} * (F)`, where F reads one forward
    array (the output's, or the input's) and computes something from it: (F with that array
    as {a}, which array: "{out}._data" or "{x0}"). Otherwise None. A replayed loop computes F
    for all its steps at once on their stacked arrays (elementwise: the same bits as each
    step's own) and multiplies each step's gradient by its row."""
    head = "{g} * ("
    if expr is None or not (expr.startswith(head) and expr.endswith(")")):
        return None
    inner = expr[len(head):-1]
    names = {"g": "g", "out": "out", "x0": "x0"}
    try:
        whole = ast.parse(expr.format(**names), mode="eval").body
        part = ast.parse(inner.format(**names), mode="eval").body
    except (SyntaxError, ValueError, KeyError, IndexError):
        return None
    if not (isinstance(whole, ast.BinOp) and isinstance(whole.op, ast.Mult)
            and isinstance(whole.left, ast.Name) and whole.left.id == "g"
            and ast.dump(whole.right) == ast.dump(part)):
        return None  # `{g} * (a) + (b)` and the like
    if isinstance(part, (ast.Name, ast.Attribute, ast.Constant)):
        return None  # nothing to compute ahead
    for source in _SOURCES:
        rest = inner.replace(source, "")
        if rest != inner and "{" not in rest.replace("{{", "").replace("}}", ""):
            return inner.replace(source, "{a}"), source
    return None


def loop_factor(text, kind, t):
    """A one-input rule `g * (F)` of an elementwise op (Op.batch) whose F a loop's block
    computes for all its rows at once (`factor`): (F, the array it reads, that
    array's dtype and shape: rows share one block only where they agree, so that their stack
    has each row's dtype), or None."""
    if kind != "rule" or text[1] != 1 or getattr(t._op, "batch", None) != "elementwise":
        return None  # only an elementwise F has, for each step, its own rows of the stack
    found = factor(text[0][0])
    if found is None:
        return None
    source = np.asarray(t._data if found[1] == "{out}._data" else t._inputs[0]._data)
    if source.nbytes > FACTOR_BYTES:
        return None
    return found + (source.dtype.str, source.shape)
