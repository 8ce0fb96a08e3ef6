"""An op's inline texts: its kernel, rule and split rule written as Python expressions
(`Op.inline_forward`, `inline_backward`, `inline_split`) that the eager sweep's steps and
replay's generated code run in place of the functions they describe. Here: which function each
describes, the check of their form (refused where the class is made, naming the op), and the
one lookup of a text that still says what runs."""
from string import Formatter

# each text, and the function it stands for
DESCRIBES = {"inline_forward": "forward", "inline_backward": "backward",
             "inline_split": "backward_split"}


def inline_text(op, which, node, *arrays):
    """`op`'s inline text `which` ("inline_forward", "inline_backward", "inline_split") for
    `node` (and, for the kernel, its inputs' arrays), or None: where the op declares none, its
    function for the node declines, or the function the text describes was replaced since
    the class was made (a learner's own rule put in place: the text no longer says what runs)."""
    text = getattr(op, which, None)
    if text is None:
        return None
    if getattr(op, DESCRIBES[which], None) is not op.described.get(which):
        return None
    if text is not op.declared.get(which):  # a text put in place since the class was made
        return None  # describes no function it was declared beside: the rule runs
    return text(node, *arrays) if callable(text) else text


def check_text(op, what, text, count):
    """Refuse (TypeError, naming the op) an inline text `what` that is not of its form for an
    op of `count` inputs: inline_forward one expression, inline_backward one per input (or
    None), inline_split (those, left, right); each expression Python naming only {out}, {g}
    (not in a kernel) and {x0}..; a brace in the code itself is written {{ }}."""
    where = f"op {op.name!r} ({op.__name__}): {what} {text!r}"
    allowed = {f"x{k}" for k in range(count)} | {"out"} | ({"g"} if what != "inline_forward"
                                                          else set())

    def expression(part):
        try:
            fields = [f for _, f, spec, conv in Formatter().parse(part)
                      if f is not None and (f not in allowed or spec or conv)]
        except ValueError as e:
            raise TypeError(f"{where}: {e}") from None
        if fields:
            raise TypeError(f"{where} names {', '.join(map(repr, fields))}: only "
                            f"{{{'}, {'.join(sorted(allowed))}}} (a brace of the code itself "
                            f"is written {{{{ }}}})")
        try:
            compile(part.format(**{n: n for n in allowed}), "<inline text>", "eval")
        except SyntaxError as e:
            raise TypeError(f"{where} is no Python expression ({e.msg})") from None

    def rule(parts):
        if not isinstance(parts, tuple) or len(parts) != count:
            raise TypeError(f"{where}: a rule's text is a tuple of one expression (or None) "
                            f"per input, {count} here")
        for part in parts:
            if part is not None:
                expression(part)

    if what == "inline_forward":
        if not isinstance(text, str):
            raise TypeError(f"{where}: a kernel's text is one expression")
        expression(text)
    elif what == "inline_backward":
        rule(text)
    else:
        if not isinstance(text, tuple) or len(text) != 3 or not all(
                isinstance(p, str) for p in text[1:]):
            raise TypeError(f"{where}: a split rule's text is (one expression or None per "
                            f"input, left, right)")
        rule(text[0])
        expression(text[1])
        expression(text[2])
    return text


def check_class_texts(cls):
    """An op's inline texts given as text (a function of the node is checked where its
    result is used) are refused when the class is made if they are not of their form."""
    for what in DESCRIBES:
        text = cls.__dict__.get(what)
        if text is not None and not callable(text):
            check_class_text(cls, what, text)


def check_class_text(cls, what, text):
    """check_text for an op class whose inputs are a fixed tuple of roles (for one taking a
    variable number, `*leaves`, the count is known only per node: not checked here)."""
    roles = cls.inputs
    if isinstance(roles, tuple) and not any(r.startswith("*") for r in roles):
        check_text(cls, what, text, len(roles))
