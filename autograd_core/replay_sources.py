"""The text of a replay plan's generated blocks (replay_codegen.py cuts the plan into blocks
and makes each block's function from this text): the forward's kernels over each row, and the
backward's rules with each result added where its gradient goes, as replay_sweep.sweep adds it
(the same rules, the same order of accumulation, so the same bits)."""
import re

from . import replay_texts as texts
from .replay_buffers import writing_value


def _unpack(names):
    return "for " + ", ".join(names) + ", in rows:"


def forward_source(key, many):
    """One block of Plan._run's loop: each node's kernel on its inputs' arrays."""
    names, body, constants = [], [], {}
    for q, entry in enumerate(key):
        names.append(f"s{q}")
        if entry[1] == "stacked":
            names.append(f"B{q}")
            body.append(f"s{q}._data = B{q}.stacked()")
            continue
        forward, arity, text = entry[:3]
        if text is not None:
            into = {}
            if entry[3]:  # it writes into its row of a stack's buffer
                names += [f"B{q}", f"k{q}"]
                into["o"] = f"B{q}.views[k{q}]"  # (made once: no view made per step)
            names += [f"x{q}_{k}" for k in range(arity)]
            inputs = [f"x{q}_{k}._data" for k in range(arity)]
            body.append(f"s{q}._data = " + text.format(
                out=f"s{q}", **into, **{f"x{k}": x for k, x in enumerate(inputs)}))
            continue
        constants[f"F{q}"] = forward
        if arity < 0:
            names.append(f"x{q}")
            args = f"*[i._data for i in x{q}]"
        else:
            names += [f"x{q}_{k}" for k in range(arity)]
            args = ", ".join(f"x{q}_{k}._data" for k in range(arity))
        body.append(f"s{q}._data = F{q}(s{q}, {args})")
    lines = ["def block(rows):", "    " + _unpack(names)]
    lines += ["        " + line for line in body]
    return "\n".join(lines), constants


def backward_source(key, many, invariant=None):
    """One block of replay_sweep.sweep (see there for what each path does and why). With
    `many` (the block runs for several rows: the steps of a loop) a rule `g * (F)` takes its
    F from F computed once for every row, on the rows' arrays stacked. `invariant` (per node,
    the positions of its inputs that are the same tensor in every row: a loop's weights)
    lets the texts read those arrays, and their transposes, from names bound once."""
    names, body, constants, factors, bound = [], [], {}, [], []
    for q, (op, kind, waits, plan, text, into) in enumerate(key):
        hoisted = {k: f"X{q}_{k}" for k in (invariant[q] if invariant else ())}
        constants[f"op{q}"] = op
        names += [f"s{q}", f"t{q}"]
        body += [f"g = acc[s{q}]",
                 f"acc[s{q}] = None"]  # freed once its rule ran, as eager mode pops it
        if waits == "weight":  # the deferred products of a weight's other uses
            body += [f"parts = pop(s{q}, None)",
                     "if parts is not None:",
                     "    g = stacked(parts, g, pending)"]
        elif waits == "rows":  # the gradients its rows' extractions kept
            body += [f"parts = pop(-1 - s{q}, None)",
                     "if parts is not None:",
                     f"    g = gathered_rows(parts, t{q}, pending)"]
        body.append("if g is not None:")
        if kind == "row":
            names += [f"G{q}", f"K{q}", f"N{q}"]
            body += [f"    parts = get(G{q})",
                     "    if parts is None:",
                     f"        pending[G{q}] = parts = [None] * N{q} + [g]",
                     f"    parts[K{q}] = g"]
            continue
        if kind == "sparse":
            shape, first = plan
            names += [f"i{q}", f"b{q}"]
            body += _indent(_sparse(q, shape, first))
            continue
        inline = plan is not None and text is not None
        if inline:  # the rule's text in place of the call: one expression per input
            text, count, fits, factor = text
            exprs = text if kind == "rule" else text[0]
            if kind == "split":
                left, right = (texts.filled(part, f"t{q}", count, hoisted)
                               for part in text[1:])
                body += [f"    parts = get(w{q})",
                         "    if parts is None:",
                         f"        pending[w{q}] = parts = []",
                         f"    parts.append(({left}, {right}))"]
        elif kind == "rule":
            body.append(f"    r = op{q}.backward(g, t{q}, xp)")
        else:  # "split"
            body += [f"    sp = op{q}.backward_split(g, t{q})",
                     "    if sp is None:",
                     f"        r = op{q}.backward(g, t{q}, xp)",
                     "    else:",
                     "        r, left, right = sp",
                     f"        parts = get(w{q})",
                     "        if parts is None:",
                     f"            pending[w{q}] = parts = []",
                     "        parts.append((left, right))"]
        if plan is None:
            names.append(f"T{q}")
            body += [f"    for k, at, shape in T{q}:"]
            body += _indent(_indent(_contribution("r[k]", "at", "shape", False)))
        else:
            for j, (k, shape, first) in enumerate(plan):
                names.append(f"a{q}_{k}")
            names += [f"{v}{q}_{k}" for k in into for v in ("G", "r")]  # a gradient's row
            for j, (k, shape, first) in enumerate(plan):
                if not inline:
                    value, known = f"r[{k}]", False
                elif exprs[k] is None:  # the rule gives this input nothing
                    continue
                elif many and factor is not None:
                    factors.append((q, factor))
                    value, known = f"g * F{q}[n_]", fits[j]
                else:
                    value, known = texts.filled(exprs[k], f"t{q}", count, hoisted), fits[j]
                written = (k in into and known and first
                           and writing_value(value, f"G{q}_{k}.views[r{q}_{k}]"))
                if written:  # into its row, where eager mode's result is C-ordered (as
                    # g is, c_ordered) and of the row's dtype; else as before
                    body += _indent(["if g.flags.c_contiguous:",
                                     "    try:",
                                     f"        acc[a{q}_{k}] = {written}",
                                     "    except TypeError:",
                                     f"        acc[a{q}_{k}] = {value}",
                                     "else:",
                                     f"    acc[a{q}_{k}] = {value}"])
                else:
                    body += _indent(_contribution(value, f"a{q}_{k}", shape, first, known))
        if kind == "split":
            names.append(f"w{q}")
        bound += [(q, k, name) for k, name in hoisted.items()]
    used = "\n".join(body)
    bound = [b for b in bound if re.search(rf"\b{b[2]}T?\b", used)]
    lines = ["def block(rows, acc, own, pending):",
             "    pop, get = pending.pop, pending.get"]
    for q, k, name in bound:  # a loop's weight: its array, and its transpose, once
        lines += [f"    {name} = rows[0][{names.index(f't{q}')}]._inputs[{k}]._data",
                  f"    {name}T = {name}.T"]
    for q, (text, source, _, _) in factors:  # each row's array, stacked; F of them all
        row = f"r[{names.index(f't{q}')}]"
        array = f"{row}._data" if source == "{out}._data" else f"{row}._inputs[0]._data"
        lines += [f"    F{q} = stacked_rows([{array} for r in rows], pending)",
                  f"    F{q} = " + text.format(a=f"F{q}")]
    if factors:
        lines.append("    for n_, (" + ", ".join(names) + ",) in enumerate(rows):")
    else:
        lines.append("    " + _unpack(names))
    lines += ["        " + line for line in body]
    return "\n".join(lines), constants


def _indent(lines):
    return ["    " + line for line in lines]


def _contribution(value, at, shape, first, known=False):
    """Add one rule result into acc[at] as the sweep does: sum_to where the shapes differ,
    in place only into an array the sweep owns. `shape` is a tuple, or the name of one.
    `known`: the value is an array of that shape (an inline rule's: replay_texts.fitting)."""
    if known and first:
        return [f"acc[{at}] = {value}"]
    if known:
        return [f"gi = {value}",
                f"prev = acc[{at}]",
                "if prev is None:",
                f"    acc[{at}] = gi",
                f"elif own[{at}]:",
                "    prev += gi",
                "else:",
                f"    acc[{at}] = prev = prev + gi",
                "    if type(prev) is ndarray:",
                f"        own[{at}] = True"]
    shape = shape if isinstance(shape, str) else repr(shape)
    lines = [f"gi = {value}",
             "if gi is not None:",
             f"    if gi.shape != {shape}:",
             f"        gi = sum_to(gi, {shape})"]
    if first:  # nothing came before: acc[at] is None, own[at] False
        lines += [f"        if type(gi) is ndarray: own[{at}] = True",
                  f"    acc[{at}] = gi"]
        return lines
    lines[2:2] = [f"    prev = acc[{at}]"]
    lines += ["        if prev is None and type(gi) is ndarray:",
              f"            own[{at}] = True",
              "    if prev is None:",
              f"        acc[{at}] = gi",
              f"    elif own[{at}]:",
              "        prev += gi",
              "    else:",
              f"        acc[{at}] = prev = prev + gi",
              "        if type(prev) is ndarray:",
              f"            own[{at}] = True"]
    return lines


def _sparse(q, shape, first):
    """backward_into: the rule adds into one zero buffer per input, owned by the sweep."""
    make = f"zeros({shape!r}, dtype=result_type(g, i{q}._data))"
    if first:
        lines = [f"buf = acc[b{q}] = {make}",
                 f"own[b{q}] = True"]
    else:
        lines = [f"buf = acc[b{q}]",
                 f"if buf is None or not own[b{q}]:",
                 f"    fresh = {make}",
                 "    if buf is not None:",
                 "        fresh += buf",
                 f"    acc[b{q}] = buf = fresh",
                 f"    own[b{q}] = True"]
    return lines + [f"op{q}.backward_into(g, t{q}, buf)"]
