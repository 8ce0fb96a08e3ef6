"""The random programs the fuzz tests run: choosers, literals, the Program listing and the
shape- and domain-tracking Builder (see test_fuzz.py for what is checked)."""
import math
import random
import re

import numpy as np
from hypothesis import strategies as st

import autograd_core as ag

MARGIN = 1e-3  # kinks, ties and thresholds stay at least this far from every input value
BOUND = 30.0  # larger magnitudes are scaled back
MAX_SIZE = 48  # elements per intermediate tensor
EPS = 1e-6  # finite-difference step
ATOL, RTOL = 2e-7, 2e-6  # atol is relative to the largest gradient (or 1)

_NAME = re.compile(r"\b[xv]\d+\b")
_LEAF = re.compile(r"^leaf\((.*), (\d+)(, zeros=True)?\)$")


# ---- choosers: hypothesis draws in the tests, random.Random in the coverage test ---------------
class HypothesisChooser:
    def __init__(self, draw):
        self._draw = draw

    def integer(self, lo, hi):
        return self._draw(st.integers(lo, hi))

    def choice(self, options):
        return self._draw(st.sampled_from(options))

    def boolean(self):
        return self._draw(st.booleans())


class RandomChooser:
    def __init__(self, seed):
        self._r = random.Random(seed)

    def integer(self, lo, hi):
        return self._r.randint(lo, hi)

    def choice(self, options):
        return self._r.choice(options)

    def boolean(self):
        return self._r.random() < 0.5


class Unsat(Exception):
    """The drawn op cannot be made from the pool: roll back and fall back."""


# ---- literals -----------------------------------------------------------------------------------
def fnum(x):
    """A float literal, parenthesised when negative (so that `(-0.5) ** v` parses right)."""
    s = repr(float(x))
    return f"({s})" if s.startswith("-") else s


def farray(a):
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return f"np.array({np.round(a, 2).tolist()!r})"
    return f"np.array({a.tolist()!r})"


def leaf_value(seed, key, shape, zeros=False):
    """Uniform in [-2, 2]; with `zeros`, about a third of the elements exactly 0."""
    rng = np.random.default_rng([seed, key])
    x = np.asarray(rng.uniform(-2.0, 2.0, shape), np.float64)
    if zeros:
        x[rng.random(shape) < 0.35] = 0.0
    return x


LEAF_SOURCE = """\
def leaf(shape, k, zeros=False):
    rng = np.random.default_rng([{seed}, k])
    x = np.asarray(rng.uniform(-2.0, 2.0, shape), np.float64)
    if zeros:
        x[rng.random(shape) < 0.35] = 0.0
    return ag.Tensor(x, requires_grad=True)"""


def projections(seed, shapes):
    rng = np.random.default_rng([seed, 999_999])
    return [np.asarray(rng.standard_normal(s), np.float64) for s in shapes]


def broadcast(*shapes):
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def matmul_shape(a, b):
    if not a or not b:
        return None
    try:
        return np.matmul(np.zeros(a), np.zeros(b)).shape
    except ValueError:
        return None


def index_text(index):
    """`index` (a tuple of ints, slices, None, Ellipsis, lists, ndarrays) as Python source."""
    parts = index if isinstance(index, tuple) else (index,)
    out = []
    for p in parts:
        if isinstance(p, slice):
            lo = "" if p.start is None else str(p.start)
            hi = "" if p.stop is None else str(p.stop)
            out.append(f"{lo}:{hi}" + ("" if p.step is None else f":{p.step}"))
        elif p is None:
            out.append("None")
        elif p is Ellipsis:
            out.append("...")
        elif isinstance(p, np.ndarray):
            out.append(farray(p))
        else:
            out.append(repr(p))
    if not isinstance(index, tuple):
        return out[0]
    return ", ".join(out) if len(out) != 1 else out[0] + ","


# ---- the program ---------------------------------------------------------------------------------
class Program:
    """Statements `targets = code`; leaves are `x<k> = leaf(shape, k)`. The loss is the
    projection of every tensor that no later statement reads. `probe` names one computed
    tensor whose gradient is checked too (through ag.grad and retain_grad)."""

    def __init__(self, seed, statements, guards=(), probe=-1):
        self.seed = seed
        self.statements = list(statements)  # (targets, code)
        self.guards = list(guards)  # (description, fn(ns) -> array, expected array)
        self.leaves = {}  # name -> shape
        names, computed, used, body = [], [], set(), []
        for targets, code in self.statements:
            m = _LEAF.match(code)
            if m:
                self.leaves[targets] = (tuple(eval(m.group(1))), m.group(3) is not None)
            else:
                used.update(_NAME.findall(code))
                body.append(f"{targets} = {code}")
                computed.extend(t.strip() for t in targets.split(","))
            names.extend(t.strip() for t in targets.split(","))
        self.sinks = [n for n in names if n not in used]
        self.values = {n: leaf_value(seed, int(n[1:]), s, z)
                       for n, (s, z) in self.leaves.items()}
        self.body = body
        self.n_ops = len(body)
        if isinstance(probe, str):
            self.probe = probe
        else:
            self.probe = computed[probe % len(computed)] if computed else None
        ns = self._namespace(self.values, True)
        exec(compile("\n".join(body), "<fuzz program>", "exec"), ns)
        self.R = projections(self.seed, [ns[s].shape for s in self.sinks])
        self.loss_text = " + ".join(f"({s} * R[{i}]).sum()" for i, s in enumerate(self.sinks))
        self._code = compile("\n".join(body + [f"loss = {self.loss_text}"]), "<fuzz program>",
                             "exec")
        if self.probe is not None:
            self.probe_shape = ns[self.probe].shape
            probed = []
            for line in body + [f"loss = {self.loss_text}"]:
                probed.append(line)
                if self.probe in (t.strip() for t in line.split(" = ")[0].split(",")):
                    probed.append(f"{self.probe} = {self.probe} + _delta")
            self._probed = compile("\n".join(probed), "<fuzz program>", "exec")

    def inputs(self):
        """Leaf values, and a zero shift `_delta` of the probed tensor."""
        out = {n: v.copy() for n, v in self.values.items()}
        if self.probe is not None:
            out["_delta"] = np.zeros(self.probe_shape)
        return out

    @staticmethod
    def _namespace(values, requires_grad):
        ns = {"ag": ag, "np": np}
        for n, v in values.items():
            ns[n] = ag.Tensor(v, requires_grad=requires_grad)
        return ns

    def run(self, values=None, requires_grad=True):
        """Run the program on leaf arrays (default: its own), shifting the probed tensor by
        values["_delta"] if given; returns the namespace."""
        values = self.values if values is None else values
        ns = self._namespace(values, requires_grad)
        ns["R"] = self.R
        exec(self._probed if "_delta" in values else self._code, ns)
        return ns

    def kinks_unchanged(self, ns):
        return all(np.array_equal(fn(ns), expected) for _, fn, expected in self.guards)

    def listing(self):
        lines = [
            f"# {self.n_ops} statements; runnable after:",
            "#   import numpy as np; import autograd_core as ag",
        ] + ["#   " + line for line in LEAF_SOURCE.format(seed=self.seed).splitlines()]
        lines += [f"{t} = {c}" for t, c in self.statements]
        shapes = [tuple(self.R[i].shape) for i in range(len(self.sinks))]
        lines.append(f"rng = np.random.default_rng([{self.seed}, 999999])")
        lines.append(f"R = [rng.standard_normal(s) for s in {shapes!r}]")
        lines.append(f"loss = {self.loss_text}")
        lines.append(f"# also checked: the gradient of loss with respect to {self.probe}")
        if self.guards:
            lines.append("# kinks kept away from: " + "; ".join(d for d, _, _ in self.guards))
        return "\n".join(lines)

    def __repr__(self):
        return f"Program(seed={self.seed}, {self.n_ops} statements; see the listing)"

    @classmethod
    def from_source(cls, seed, source, probe=-1):
        """A program from a listing's statement lines (comments and rng/R/loss lines are
        skipped), for regression examples."""
        statements = []
        for line in source.strip().splitlines():
            line = line.strip()
            if not line or line.startswith("#") or line.split(" = ")[0] in ("rng", "R", "loss"):
                continue
            targets, code = line.split(" = ", 1)
            statements.append((targets, code))
        return cls(seed, statements, probe=probe)


# ---- the builder ---------------------------------------------------------------------------------
KINKED = ("abs", "relu", "clip", "maximum", "minimum", "max", "min")
KINDS = ("tanh", "add", "mul", "sub", "div", "pow", "exp", "log", "sqrt", "sigmoid", "neg",
         "softplus", "logsigmoid",
         "astype", "sum", "mean", "logsumexp", "softmax", "log_softmax",
         "softmax_cross_entropy", "mean_softmax_cross_entropy", "matmul", "addmm", "linear", "reshape",
         "transpose", "swapaxes", "expand_dims", "squeeze", "broadcast_to", "sum_to",
         "concatenate", "stack", "split", "getitem", "scatter", "where") + KINKED
SMOOTH_KINDS = tuple(k for k in KINDS if k not in KINKED)


class Builder:
    def __init__(self, ch, seed, kinds, max_leaf_elems):
        self.ch, self.seed, self.kinds = ch, seed, kinds
        self.max_leaf_elems = max_leaf_elems
        self.ns = {"ag": ag, "np": np}
        self.statements, self.pool, self.guards = [], [], []
        self.leaf_elems = 0
        self.counter = 0
        self.n_ops = 0

    # -- state ---------------------------------------------------------------------------------
    def snapshot(self):
        return (dict(self.ns), list(self.statements), list(self.pool), list(self.guards),
                self.leaf_elems, self.counter, self.n_ops)

    def restore(self, snap):
        (self.ns, self.statements, self.pool, self.guards, self.leaf_elems, self.counter,
         self.n_ops) = snap

    def val(self, name):
        return self.ns[name]._data

    def shape(self, name):
        return self.ns[name].shape

    def pick(self, pred=None):
        """A pool tensor (recent ones first when shrinking) whose shape satisfies `pred`."""
        cands = [n for n in self.pool if pred is None or pred(self.shape(n))]
        if not cands:
            raise Unsat
        return cands[-1 - self.ch.integer(0, len(cands) - 1)]

    def guard(self, description, fn):
        self.guards.append((description, fn, fn(self.ns)))

    # -- emitting statements -------------------------------------------------------------------
    def leaf(self, shape, zeros=False):
        shape = tuple(int(s) for s in shape)
        size = int(np.prod(shape))
        if self.leaf_elems + size > self.max_leaf_elems:
            raise Unsat
        name = f"x{self.counter}"
        self.counter += 1
        self.leaf_elems += size
        self.ns[name] = ag.Tensor(leaf_value(self.seed, int(name[1:]), shape, zeros),
                                  requires_grad=True)
        self.statements.append((name, f"leaf({shape!r}, {name[1:]}"
                                      f"{', zeros=True' if zeros else ''})"))
        self.pool.append(name)
        return name

    def emit(self, code, outputs=1):
        """Run `code` as a new statement; return the new tensor's name (or names), with any
        value beyond +-BOUND scaled back by a further statement."""
        names = [f"v{self.counter + i}" for i in range(outputs)]
        self.counter += outputs
        targets = ", ".join(names)
        exec(f"{targets} = {code}", self.ns)
        for n in names:
            t = self.ns[n]
            assert isinstance(t, ag.Tensor), f"`{code}` gave a {type(t).__name__}"
            if t.size == 0 or t.size > MAX_SIZE:
                raise Unsat
            assert t.dtype == np.float64, f"`{code}` gave dtype {t.dtype}"
            assert t.requires_grad, f"`{code}` does not require grad"
            assert np.isfinite(t._data).all(), f"`{code}` is not finite: {t._data}"
        self.statements.append((targets, code))
        self.n_ops += 1
        self.pool.extend(names)
        names = [self.tame(n) for n in names]
        return names[0] if outputs == 1 else names

    def tame(self, name):
        m = float(np.max(np.abs(self.val(name))))
        if m <= BOUND:
            return name
        s = 10.0 ** math.ceil(math.log10(m / 3))
        if self.ch.boolean():
            return self.emit(f"{name} / {s!r}")
        return self.emit(f"ag.tanh({name} * {1 / s!r})")

    # -- domains -------------------------------------------------------------------------------
    def bounded(self, a, b):
        m = float(np.max(np.abs(self.val(a))))
        if m <= b:
            return a
        if self.ch.boolean():
            return self.emit(f"ag.tanh({a}) * {fnum(b)}")
        return self.emit(f"{a} / {10.0 ** math.ceil(math.log10(m / b))!r}")

    def positive(self, a):
        v = self.val(a)
        if v.min() >= 0.1 and v.max() <= BOUND:
            return a
        how = self.ch.integer(0, 2)
        if how == 0:
            return self.emit(f"ag.exp(ag.tanh({a}))")
        if how == 1:
            b = self.bounded(a, 3.0)
            return self.emit(f"{b} * {b} + 0.5")
        return self.emit(f"ag.sigmoid({a}) + 0.1")

    def away_from_zero(self, a):
        if np.min(np.abs(self.val(a))) >= 0.2:
            return a
        p = self.positive(a)
        return p if self.ch.boolean() else self.emit(f"-{p}")

    def thresholds(self, values, count=1, natural=None):
        """`count` increasing thresholds, each at least MARGIN from every value (the
        `natural` one when it is far enough; else drawn from the gaps of the data)."""
        v = np.unique(np.asarray(values, dtype=np.float64).ravel())

        def ok(t):
            return np.min(np.abs(v - t)) >= MARGIN

        if count == 1 and natural is not None and ok(natural):
            return [natural]
        cands = [round(float(lo + hi) / 2, 4) for lo, hi in zip(v, v[1:]) if hi - lo >= 3 * MARGIN]
        cands += [round(float(v[0]) - 0.5, 2), round(float(v[-1]) + 0.5, 2)]
        cands = sorted(c for c in set(cands) if ok(c))
        if len(cands) < count:
            raise Unsat
        chosen = []
        for _ in range(count):
            rest = [c for c in cands if not chosen or c > chosen[-1]]
            rest = rest[:len(rest) - (count - 1 - len(chosen))]
            if not rest:
                raise Unsat
            chosen.append(rest[self.ch.integer(0, len(rest) - 1)])
        return chosen

    def related_shape(self, shape):
        """A shape that broadcasts with `shape` (some leading dims dropped, some dims 1, maybe
        one new leading dim)."""
        shape = list(shape)
        drop = self.ch.integer(0, len(shape))
        out = [1 if self.ch.integer(0, 2) == 0 else s for s in shape[drop:]]
        if drop == 0 and self.ch.integer(0, 3) == 0:
            out = [self.ch.integer(1, 3)] + out
        return tuple(out)

    def const(self, shape, low=-1.5, high=1.5, sign_free=True):
        rng = np.random.default_rng([self.seed, 7, self.counter])
        a = rng.uniform(low, high, shape)
        if not sign_free:
            a *= rng.choice([-1.0, 1.0], shape)
        return farray(a)

    # -- the ops -------------------------------------------------------------------------------
    def fallback(self):
        a = self.pick()
        self.emit(self.ch.choice([f"ag.tanh({a})", f"ag.sigmoid({a})", f"{a} * 0.5",
                                  f"{a} + 1.0"]))

    def op_tanh(self):
        a = self.pick()
        self.emit(self.ch.choice([f"ag.tanh({a})", f"{a}.tanh()", f"np.tanh({a})"]))

    def op_sigmoid(self):
        a = self.pick()
        self.emit(self.ch.choice([f"ag.sigmoid({a})", f"{a}.sigmoid()"]))

    def op_softplus(self):
        self.emit(f"ag.softplus({self.pick()})")

    def op_logsigmoid(self):
        self.emit(f"ag.logsigmoid({self.pick()})")

    def op_exp(self):
        a = self.bounded(self.pick(), 3.0)
        self.emit(self.ch.choice([f"ag.exp({a})", f"{a}.exp()", f"np.exp({a})"]))

    def op_log(self):
        a = self.positive(self.pick())
        self.emit(self.ch.choice([f"ag.log({a})", f"{a}.log()", f"np.log({a})"]))

    def op_sqrt(self):
        a = self.positive(self.pick())
        self.emit(self.ch.choice([f"ag.sqrt({a})", f"{a}.sqrt()", f"np.sqrt({a})"]))

    def op_neg(self):
        a = self.pick()
        self.emit(self.ch.choice([f"-{a}", f"ag.neg({a})", f"np.negative({a})"]))

    def op_astype(self):
        a = self.pick()
        self.emit(self.ch.choice([f"{a}.astype(np.float64)", f"ag.astype({a}, 'float64')"]))

    # binary arithmetic: the other operand is a pool tensor, the same tensor, a Python scalar,
    # an ndarray or a new leaf, on either side
    def other_operand(self, a, role):
        """Source text for an operand that broadcasts with `a`. role: 'any', 'denominator'
        (|x| >= 0.2), 'base' (x >= 0.1), 'exponent' (|x| <= 2)."""
        src = self.ch.choice(["pool", "scalar", "same", "scalar", "const", "leaf"])
        sa = self.shape(a)
        if src == "scalar":  # Python floats and ints, and numpy scalars
            c = self.ch.choice({
                "any": [0.5, -1.5, 2, 3.0, -1], "denominator": [2.0, -0.5, 4],
                "base": [2.0, 0.5, 3, 2], "exponent": [2.0, 0.5, -1.0, 1.5, -0.5, 0.0]}[role])
            if role != "exponent" and self.ch.integer(0, 3) == 0:
                return f"np.float64({float(c)!r})"
            return fnum(c) if isinstance(c, float) else (f"({c})" if c < 0 else str(c))
        if src == "const":
            shape = self.related_shape(sa)
            if role == "denominator":
                return self.const(shape, 0.5, 1.5, sign_free=False)
            if role == "base":
                return self.const(shape, 0.5, 2.0)
            if role == "exponent":
                return self.const(shape, -1.5, 1.5)
            return self.const(shape)
        if src == "same":
            b = a
        elif src == "leaf":
            b = self.leaf(self.related_shape(sa))
        else:
            b = self.pick(lambda s: (o := broadcast(sa, s)) is not None
                          and int(np.prod(o)) <= MAX_SIZE)
        if role == "denominator":
            b = self.away_from_zero(b)
        elif role == "base":
            b = self.positive(self.bounded(b, 2.0))
        elif role == "exponent":
            b = self.bounded(b, 2.0)
        return b

    def binary(self, symbol, function, npfunction, role_left, role_right):
        a = self.pick()
        a_right = self.ch.boolean()  # a is the right operand
        if a_right:
            if role_right == "denominator":
                a = self.away_from_zero(a)
            elif role_right == "exponent":
                a = self.bounded(a, 3.0 if role_left == "base" else 2.0)
            left, right = self.other_operand(a, role_left), a
        else:
            if role_left == "base":
                right = self.other_operand(a, role_right)
                # an integer exponent needs no positive base
                if right in ("2.0", "(-1.0)", "0.0") and self.ch.boolean():
                    left = self.away_from_zero(self.bounded(a, 3.0)) \
                        if right == "(-1.0)" else self.bounded(a, 3.0)
                    right = {"2.0": "2", "(-1.0)": "(-1)", "0.0": "0"}[right] \
                        if self.ch.boolean() else right
                else:
                    left = self.positive(self.bounded(a, 2.0))
            else:
                left, right = a, self.other_operand(a, role_right)
        if not (_NAME.fullmatch(left) or _NAME.fullmatch(right)):
            raise Unsat
        forms = [f"{left} {symbol} {right}", f"{function}({left}, {right})"]
        if npfunction:
            forms.append(f"{npfunction}({left}, {right})")
        self.emit(self.ch.choice(forms))

    def op_add(self):
        self.binary("+", "ag.add", "np.add", "any", "any")

    def op_sub(self):
        self.binary("-", "ag.sub", "np.subtract", "any", "any")

    def op_mul(self):
        self.binary("*", "ag.mul", "np.multiply", "any", "any")

    def op_div(self):
        self.binary("/", "ag.div", "np.divide", "any", "denominator")

    def op_pow(self):
        if self.ch.integer(0, 3) == 0:  # integer-valued exponents: any base, zero included
            a = self.bounded(self.pick(), 3.0)
            rng = np.random.default_rng([self.seed, 17, self.counter])
            if self.ch.boolean():  # exact zeros in the base
                a = self.emit(f"{a} * {farray(rng.integers(0, 2, self.shape(a)).astype(float))}")
            e = farray(rng.integers(0, 4, self.related_shape(self.shape(a))).astype(float))
            self.emit(self.ch.choice([f"{a} ** {e}", f"ag.pow({a}, {e})", f"np.power({a}, {e})"]))
            return
        self.binary("**", "ag.pow", "np.power", "base", "exponent")

    # kinked elementwise ops
    def shifted(self, a, t):
        if t == 0:
            return a
        return self.emit(f"{a} - {fnum(t)}" if t > 0 else f"{a} + {fnum(-t)}")

    def op_relu(self):
        a = self.pick()
        (t,) = self.thresholds(self.val(a), natural=0.0)
        a = self.shifted(a, t)
        self.guard(f"relu: {a} vs 0", lambda ns, a=a: ns[a]._data > 0)
        self.emit(self.ch.choice([f"ag.relu({a})", f"{a}.relu()"]))

    def op_abs(self):
        a = self.pick()
        (t,) = self.thresholds(self.val(a), natural=0.0)
        a = self.shifted(a, t)
        self.guard(f"abs: {a} vs 0", lambda ns, a=a: ns[a]._data > 0)
        self.emit(self.ch.choice([f"ag.abs({a})", f"abs({a})", f"np.abs({a})", f"{a}.abs()"]))

    def op_clip(self):
        a = self.pick()
        v = self.val(a)
        kind = self.ch.integer(0, 3)
        if kind == 3:  # tensor bounds
            b = self.pick(lambda s: broadcast(s, v.shape) == v.shape)
            if np.min(np.abs(v - self.val(b))) < MARGIN:
                raise Unsat
            self.guard(f"clip: {a} vs {b}", lambda ns, a=a, b=b: ns[a]._data > ns[b]._data)
            self.emit(self.ch.choice([f"ag.clip({a}, min={b})", f"ag.clip({a}, max={b})"]))
            return
        lo, hi = self.thresholds(v, count=2)
        self.guard(f"clip: {a} vs {lo}, {hi}",
                   lambda ns, a=a: (ns[a]._data < lo) + 2 * (ns[a]._data > hi))
        lo_s, hi_s = fnum(lo), fnum(hi)
        self.emit([f"ag.clip({a}, {lo_s}, {hi_s})", f"ag.clip({a}, min={lo_s})",
                   f"ag.clip({a}, max={hi_s})"][kind] if self.ch.boolean() else
                  [f"{a}.clip({lo_s}, {hi_s})", f"{a}.clip(min={lo_s})",
                   f"{a}.clip(max={hi_s})"][kind])

    def extremum2(self, fn):
        a = self.pick()
        va = self.val(a)
        src = self.ch.choice(["scalar", "pool", "const"])
        if src == "pool":
            b = self.pick(lambda s: (o := broadcast(va.shape, s)) is not None
                          and int(np.prod(o)) <= MAX_SIZE)
            bv = self.val(b)
        elif src == "const":
            b = self.const(self.related_shape(va.shape))
            bv = eval(b, {"np": np})
        else:
            (t,) = self.thresholds(va, natural=0.0)
            b, bv = fnum(t), t
        if np.min(np.abs(va - bv)) < MARGIN:
            raise Unsat
        if src == "pool":
            self.guard(f"{fn}: {a} vs {b}", lambda ns, a=a, b=b: ns[a]._data > ns[b]._data)
        else:
            self.guard(f"{fn}: {a} vs {b}", lambda ns, a=a, bv=bv: ns[a]._data > bv)
        left, right = (a, b) if self.ch.boolean() else (b, a)
        self.emit(self.ch.choice([f"ag.{fn}({left}, {right})", f"np.{fn}({left}, {right})"]))

    def op_maximum(self):
        self.extremum2("maximum")

    def op_minimum(self):
        self.extremum2("minimum")

    # reductions
    def axis_arg(self, ndim):
        """(normalized axes, source text of the axis argument or '')."""
        kind = self.ch.integer(0, 3)
        if ndim == 0 or kind == 0:
            return tuple(range(ndim)), ("" if self.ch.boolean() else "axis=None")
        if kind == 1:
            ax = self.ch.integer(-ndim, ndim - 1)
            return (ax % ndim,), f"axis={ax}"
        if kind == 2:
            axes = [i for i in range(ndim) if self.ch.boolean()] or [0]
            axes = [i - ndim if self.ch.boolean() else i for i in axes]
            if len(axes) > 1 and self.ch.boolean():
                axes = axes[::-1]
            return tuple(sorted(i % ndim for i in axes)), f"axis={tuple(axes)!r}"
        return (), "axis=()"

    def reduction(self, name, forms, kinked=False):
        a = self.pick()
        x = self.val(a)
        axes, axis_text = self.axis_arg(x.ndim)
        keep = self.ch.boolean()
        args = ", ".join(s for s in (axis_text, "keepdims=True" if keep else "") if s)
        if kinked:
            k = len(axes)
            moved = np.moveaxis(x, axes, range(x.ndim - k, x.ndim))
            moved = moved.reshape(moved.shape[:x.ndim - k] + (-1,))
            if moved.shape[-1] > 1:
                s = np.sort(moved, axis=-1)
                gap = s[..., -1] - s[..., -2] if name == "max" else s[..., 1] - s[..., 0]
                if gap.min() < MARGIN:
                    raise Unsat

            def pattern(ns, a=a, axes=axes, name=name):
                y = ns[a]._data
                m = np.moveaxis(y, axes, range(y.ndim - len(axes), y.ndim))
                m = m.reshape(m.shape[:y.ndim - len(axes)] + (-1,))
                return np.argmax(m, -1) if name == "max" else np.argmin(m, -1)
            self.guard(f"{name} over {axes}: {a}", pattern)
        self.emit(self.ch.choice(forms).format(a=a, args=args, cargs=", " + args if args else ""))

    def op_sum(self):
        self.reduction("sum", ["ag.sum({a}{cargs})", "{a}.sum({args})", "np.sum({a}{cargs})"])

    def op_mean(self):
        self.reduction("mean", ["ag.mean({a}{cargs})", "{a}.mean({args})", "np.mean({a}{cargs})"])

    def op_max(self):
        self.reduction("max", ["ag.max({a}{cargs})", "{a}.max({args})", "np.max({a}{cargs})"],
                       kinked=True)

    def op_min(self):
        self.reduction("min", ["ag.min({a}{cargs})", "{a}.min({args})", "np.min({a}{cargs})"],
                       kinked=True)

    def op_logsumexp(self):
        self.reduction("logsumexp", ["ag.logsumexp({a}{cargs})", "{a}.logsumexp({args})"])

    def softmax(self, fn):
        a = self.pick(lambda s: len(s) >= 1)
        nd = self.ns[a].ndim
        ax = self.ch.integer(-nd, nd - 1)
        self.emit(self.ch.choice([f"ag.{fn}({a}, axis={ax})", f"{a}.{fn}({ax})",
                                  f"ag.{fn}({a})"]))

    def op_softmax(self):
        self.softmax("softmax")

    def op_log_softmax(self):
        self.softmax("log_softmax")

    # matmul: 1-D, 2-D and batched, the partner a pool tensor, the same tensor, a new leaf
    # or an ndarray, on either side
    def op_matmul(self):
        a = self.pick(lambda s: len(s) >= 1)
        sa = self.shape(a)
        src = self.ch.choice(["leaf", "pool", "same", "const"])
        if src == "same":
            if len(sa) == 1:
                forms = [f"{a} @ {a}"]
            else:
                t = f"ag.swapaxes({a}, -1, -2)"
                forms = [f"{a} @ {t}", f"{t} @ {a}"]
                if len(sa) == 2:
                    forms.append(f"{a}.T @ {a}")
                if sa[-1] == sa[-2]:
                    forms.append(f"{a} @ {a}")
            left, right = None, None
            code = self.ch.choice(forms)
        elif src == "pool":
            b = self.pick(lambda s: matmul_shape(sa, s) is not None
                          or matmul_shape(s, sa) is not None)
            sb = self.shape(b)
            ok_right = matmul_shape(sa, sb) is not None
            ok_left = matmul_shape(sb, sa) is not None
            left, right = (a, b) if ok_right and (not ok_left or self.ch.boolean()) else (b, a)
            code = None
        else:
            on_right = self.ch.boolean()
            k = sa[-1] if on_right else (sa[0] if len(sa) == 1 else sa[-2])
            m = self.ch.integer(1, 3)
            form = self.ch.integer(0, 2)
            if form == 0:
                shape = (k,)
            elif form == 1:
                shape = (k, m) if on_right else (m, k)
            else:
                batch = tuple(s if self.ch.boolean() else 1 for s in sa[:-2]) or \
                    (self.ch.integer(1, 3),)
                shape = batch + ((k, m) if on_right else (m, k))
            b = self.leaf(shape) if src == "leaf" else self.const(shape)
            left, right = (a, b) if on_right else (b, a)
            code = None
        if code is None:
            forms = [f"{left} @ {right}", f"ag.matmul({left}, {right})",
                     f"np.matmul({left}, {right})"]
            if _NAME.fullmatch(left):
                forms.append(f"{left}.matmul({right})")
            code = self.ch.choice(forms)
        self.emit(code)

    def op_addmm(self):
        a = self.pick()
        s = self.shape(a)
        if len(s) != 2:
            a = self.emit(f"{a}.reshape({s[0] if s else 1}, -1)")
        n, k = self.shape(a)
        src = self.ch.choice(["leaf", "pool", "same", "const"])
        a_left = self.ch.boolean()  # a is the left factor
        if src == "same":
            left, right = (a, f"{a}.T") if a_left else (f"{a}.T", a)
            out = (n, n) if a_left else (k, k)
        elif src == "pool":
            b = self.pick((lambda t: len(t) == 2 and t[0] == k) if a_left else
                          (lambda t: len(t) == 2 and t[1] == n))
            left, right = (a, b) if a_left else (b, a)
            out = (n, self.shape(b)[1]) if a_left else (self.shape(b)[0], k)
        else:
            m = self.ch.integer(1, 3)
            shape = (k, m) if a_left else (m, n)
            b = self.leaf(shape) if src == "leaf" else self.const(shape)
            left, right = (a, b) if a_left else (b, a)
            out = (n, m) if a_left else (m, k)
        csrc = self.ch.choice(["pool", "leaf", "scalar", "const"])
        c = "0.5" if csrc == "scalar" else self.bias(out, csrc)
        self.emit(f"ag.addmm({c}, {left}, {right})")

    def bias(self, out, src):
        """A term that broadcasts to `out`: from the pool, a new leaf or a constant."""
        if src == "pool":
            return self.pick(lambda t: broadcast(t, out) == out)
        shape = self.related_shape(out)
        if broadcast(shape, out) != out:
            shape = out
        return self.leaf(shape) if src == "leaf" else self.const(shape)

    def op_linear(self):
        x = self.pick()
        s = self.shape(x)
        if len(s) != 2:
            x = self.emit(f"{x}.reshape({s[0] if s else 1}, -1)")
        n, k = self.shape(x)
        src = self.ch.choice(["leaf", "pool", "same", "const"])
        if src == "same":  # x @ x.T: the weight is the input itself
            w, m = x, n
        elif src == "pool":
            w = self.pick(lambda t: len(t) == 2 and t[1] == k)
            m = self.shape(w)[0]
        else:
            m = self.ch.integer(1, 3)
            w = self.leaf((m, k)) if src == "leaf" else self.const((m, k))
        bsrc = self.ch.choice(["none", "pool", "leaf", "const"])
        if bsrc == "none":
            self.emit(f"ag.linear({x}, {w})")
        else:
            self.emit(f"ag.linear({x}, {w}, {self.bias((n, m), bsrc)})")

    def op_softmax_cross_entropy(self):
        self._class_targets("softmax_cross_entropy", lambda s: len(s) >= 1, 19)

    def op_mean_softmax_cross_entropy(self):  # (..., rows, classes), at least one row
        self._class_targets("mean_softmax_cross_entropy", lambda s: len(s) >= 2 and s[-2] >= 1,
                            23)

    def _class_targets(self, op, fits, stream):
        a = self.pick(fits)
        s = self.shape(a)
        rng = np.random.default_rng([self.seed, stream, self.counter])
        target = farray(rng.integers(0, s[-1], s[:-1]))
        if self.ch.boolean():
            target = f"ag.Tensor({target})"
        self.emit(f"ag.{op}({a}, {target})")

    # shape ops
    def op_reshape(self):
        a = self.pick()
        n = self.ns[a].size
        shape, rest = [], n
        for _ in range(self.ch.integer(0 if n == 1 else 1, 4) - 1):
            divisors = [d for d in range(1, rest + 1) if rest % d == 0]
            d = self.ch.choice(divisors)
            shape.append(d)
            rest //= d
        if n != 1 or self.ch.boolean():  # a one-element tensor may become 0-d
            shape.append(rest)
        if shape and self.ch.boolean():
            shape[self.ch.integer(0, len(shape) - 1)] = -1
        shape = tuple(shape)
        forms = [f"ag.reshape({a}, {shape!r})", f"{a}.reshape({shape!r})"]
        if len(shape) >= 2:
            forms.append(f"{a}.reshape{shape!r}")
        if len(shape) == 1:
            forms.append(f"{a}.flatten()")
        self.emit(self.ch.choice(forms))

    def op_transpose(self):
        a = self.pick()
        nd = self.ns[a].ndim
        perm = list(range(nd))
        for i in range(nd - 1, 0, -1):
            j = self.ch.integer(0, i)
            perm[i], perm[j] = perm[j], perm[i]
        perm = tuple(p - nd if self.ch.integer(0, 3) == 0 else p for p in perm)
        self.emit(self.ch.choice([f"ag.transpose({a})", f"{a}.T", f"ag.transpose({a}, {perm!r})",
                                  f"{a}.transpose({perm!r})"]))

    def op_swapaxes(self):
        a = self.pick(lambda s: len(s) >= 1)
        nd = self.ns[a].ndim
        i, j = self.ch.integer(-nd, nd - 1), self.ch.integer(-nd, nd - 1)
        self.emit(self.ch.choice([f"ag.swapaxes({a}, {i}, {j})", f"{a}.swapaxes({i}, {j})"]))

    def op_expand_dims(self):
        a = self.pick()
        nd = self.ns[a].ndim
        self.emit(f"ag.expand_dims({a}, {self.ch.integer(-nd - 1, nd)})")

    def op_squeeze(self):
        a = self.pick()
        s = self.shape(a)
        ones = [i for i, d in enumerate(s) if d == 1]
        if not ones:
            ax = self.ch.integer(0, len(s))
            a = self.emit(f"ag.expand_dims({a}, {ax})")
            ones, s = [ax], self.shape(a)
        forms = [f"ag.squeeze({a})", f"{a}.squeeze()"]
        ax = self.ch.choice(ones)
        ax = ax - len(s) if self.ch.boolean() else ax
        forms += [f"ag.squeeze({a}, axis={ax})", f"ag.squeeze({a}, {(ax,)!r})"]
        self.emit(self.ch.choice(forms))

    def op_broadcast_to(self):
        a = self.pick()
        s = self.shape(a)
        target = tuple(self.ch.integer(1, 3) if d == 1 else d for d in s)
        if self.ch.boolean() or target == s:
            target = (self.ch.integer(1, 3),) + target
        self.emit(f"ag.broadcast_to({a}, {target!r})")

    def op_sum_to(self):
        a = self.pick()
        s = self.shape(a)
        drop = self.ch.integer(0, len(s))
        target = tuple(1 if self.ch.boolean() else d for d in s[drop:])
        self.emit(f"ag.sum_to({a}, {target!r})")

    # joining and splitting
    def op_concatenate(self):
        a = self.pick(lambda s: len(s) >= 1)
        s = self.shape(a)
        nd = len(s)
        ax = self.ch.integer(-nd, nd - 1)
        axn = ax % nd
        parts = [a]
        for _ in range(self.ch.integer(1, 2)):
            src = self.ch.choice(["same", "pool", "slice", "const"])
            if src == "const":
                shape = list(s)
                shape[axn] = self.ch.integer(1, 2)
                parts.append(self.const(tuple(shape)))
            elif src == "pool":
                parts.append(self.pick(lambda t: len(t) == nd and all(
                    t[i] == s[i] for i in range(nd) if i != axn)))
            elif src == "slice":
                parts.append(f"{a}[{index_text((slice(None),) * axn + (slice(0, 1),))}]")
            else:
                parts.append(a)
        order = parts[::-1] if self.ch.boolean() else parts
        lst = "[" + ", ".join(order) + "]"
        self.emit(self.ch.choice([f"ag.concatenate({lst}, axis={ax})",
                                  f"ag.concatenate({lst}, {ax})"] +
                                 ([f"ag.concatenate({lst})"] if axn == 0 else [])))

    def op_stack(self):
        a = self.pick()
        s = self.shape(a)
        parts = [a]
        for _ in range(self.ch.integer(1, 2)):
            src = self.ch.choice(["same", "pool", "tanh", "const"])
            if src == "const":
                parts.append(self.const(s))
            elif src == "pool":
                parts.append(self.pick(lambda t: t == s))
            elif src == "tanh":
                parts.append(f"ag.tanh({a})")
            else:
                parts.append(a)
        nd = len(s)
        ax = self.ch.integer(-nd - 1, nd)
        lst = "(" + ", ".join(parts) + ")"
        self.emit(self.ch.choice([f"ag.stack({lst}, axis={ax})", f"ag.stack({lst}, {ax})"]))

    def op_split(self):
        a = self.pick(lambda s: any(d >= 2 for d in s))
        s = self.shape(a)
        axes = [i for i, d in enumerate(s) if d >= 2]
        ax = self.ch.choice(axes)
        n = s[ax]
        ax_text = ax - len(s) if self.ch.boolean() else ax
        sections = [d for d in range(2, min(n, 4) + 1) if n % d == 0]
        if sections and self.ch.boolean():
            parts = self.ch.choice(sections)
            arg = str(parts)
        else:
            cuts = sorted({self.ch.integer(1, n - 1) for _ in range(self.ch.integer(1, 2))})
            parts, arg = len(cuts) + 1, repr(cuts)
        self.emit(f"ag.split({a}, {arg}, axis={ax_text})", outputs=parts)

    # indexing
    def random_slice(self, n):
        kind = self.ch.integer(0, 5)
        if kind == 0:
            return slice(None)
        if kind == 1:
            return slice(self.ch.integer(-n, n - 1), None)
        if kind == 2:
            return slice(None, self.ch.integer(1, n))
        if kind == 3:
            lo = self.ch.integer(0, n - 1)
            return slice(lo, self.ch.integer(lo + 1, n))
        if kind == 4:
            return slice(None, None, -1)
        return slice(None, None, self.ch.integer(2, 3)) if n > 1 else slice(None, None, -1)

    def int_array(self, n, count=None):
        count = count or self.ch.integer(1, 4)
        idx = [self.ch.integer(-n, n - 1) for _ in range(count)]
        if count > 1 and self.ch.boolean():
            idx[-1] = idx[0]  # a repeated index
        return idx

    def op_getitem(self):
        a = self.pick()
        s = self.shape(a)
        nd = len(s)
        kind = self.ch.integer(0, 8)
        if nd == 0:
            kind = 6
        rng = np.random.default_rng([self.seed, 11, self.counter])
        if kind == 0:  # int
            ax = self.ch.integer(0, nd - 1)
            index = (slice(None),) * ax + (self.ch.integer(-s[ax], s[ax] - 1),)
            if ax == nd - 1 and ax > 0 and self.ch.boolean():
                index = (Ellipsis,) + index[-1:]
        elif kind == 1:  # slices
            index = tuple(self.random_slice(d) for d in s[:self.ch.integer(1, nd)])
        elif kind == 2:  # integer array (repeats allowed) along one axis
            ax = self.ch.integer(0, nd - 1)
            idx = self.int_array(s[ax])
            form = self.ch.integer(0, 2)  # a list, an ndarray or an integer tensor
            if form == 2:
                lead = "" if ax == 0 else ", ".join([":"] * ax) + ", "
                self.emit(f"{a}[{lead}ag.Tensor({farray(np.array(idx))})]")
                return
            index = (slice(None),) * ax + (np.array(idx) if form == 1 else idx,)
        elif kind == 3:  # full boolean mask
            mask = rng.random(s) < 0.6
            mask.flat[rng.integers(mask.size)] = True
            index = (mask,)
        elif kind == 4:  # boolean mask along axis 0
            mask = rng.random(s[0]) < 0.6
            mask[rng.integers(s[0])] = True
            index = (mask,)
        elif kind == 5:  # data-dependent mask
            (t,) = self.thresholds(self.val(a))
            op = self.ch.choice([">", "<"])
            if not np.any(eval(f"v {op} t", {"v": self.val(a), "t": t})):
                raise Unsat
            self.guard(f"mask {a} {op} {t}",
                       lambda ns, a=a, op=op, t=t: eval(f"v {op} t", {"v": ns[a]._data, "t": t}))
            self.emit(f"{a}[{a} {op} {fnum(t)}]")
            return
        elif kind == 6:  # None / Ellipsis / 0-d
            forms = [(None,), (Ellipsis, None), (Ellipsis,)]
            if nd:
                forms += [(None, Ellipsis, self.ch.integer(-s[-1], s[-1] - 1)),
                          (Ellipsis, self.random_slice(s[-1]))]
            else:
                forms.append(())
            index = self.ch.choice(forms)
        elif kind == 7:  # several integer arrays (broadcast together), maybe split by a slice
            if nd < 2:
                raise Unsat
            count = self.ch.integer(1, 3)
            split = nd > 2 and self.ch.boolean()  # a slice between them: numpy moves the
            i0 = self.int_array(s[0], count)        # indexed axes to the front
            i1 = self.int_array(s[-1] if split else s[1], count)
            middle = (slice(None),) * (nd - 2) if split else ()
            index = (np.array(i0),) + middle + (np.array(i1),)
        else:  # a 2-D integer array
            rows = self.ch.integer(1, 2)
            idx = [self.int_array(s[0], 2) for _ in range(rows)]
            index = (np.array(idx),)
        text = "()" if index == () else index_text(index[0] if len(index) == 1 else index)
        self.emit(f"{a}[{text}]")

    def op_scatter(self):
        a = self.pick()
        s = self.shape(a)
        kind = self.ch.integer(0, 2) if s else 2
        if kind == 0:  # integer array along axis 0 (repeats accumulate)
            n = self.ch.integer(1, 4)
            idx = [self.ch.integer(-n, n - 1) for _ in range(s[0])]
            shape, index = (n,) + s[1:], farray(np.array(idx))
        elif kind == 1:  # slice
            shape, index = (s[0] + 2,) + s[1:], f"slice(1, {s[0] + 1})"
        else:  # int: a new leading axis
            n = self.ch.integer(1, 3)
            shape, index = (n,) + s, str(self.ch.integer(-n, n - 1))
        self.emit(f"ag.scatter({a}, {shape!r}, {index})")

    def op_where(self):
        a = self.pick()
        other = self.other_operand(a, "any")
        left, right = (a, other) if self.ch.boolean() else (other, a)
        out = broadcast(self.shape(a), np.shape(eval(other, {"np": np, **self.ns})))
        if out is None:
            raise Unsat
        if self.ch.boolean():  # a fixed mask
            shape = self.related_shape(out)
            if broadcast(shape, out) != out:
                shape = out
            rng = np.random.default_rng([self.seed, 13, self.counter])
            cond = farray(rng.random(shape) < 0.5)
        else:  # a condition on data
            c = self.pick(lambda t: broadcast(t, out) == out)
            (t,) = self.thresholds(self.val(c), natural=0.0)
            op = self.ch.choice([">", "<", ">=", "<="])
            self.guard(f"where {c} {op} {t}",
                       lambda ns, c=c, op=op, t=t: eval(f"v {op} t", {"v": ns[c]._data, "t": t}))
            cond = f"{c} {op} {fnum(t)}"
        self.emit(f"ag.where({cond}, {left}, {right})")

    # -- the whole program ---------------------------------------------------------------------
    def build(self, n_ops):
        ch = self.ch
        base = [ch.integer(1, 4) for _ in range(ch.integer(0, 3))]
        while int(np.prod(base)) > self.max_leaf_elems // 2:
            base.pop()
        for _ in range(ch.integer(1, 3)):
            try:  # some inputs hold exact zeros
                self.leaf(self.related_shape(base) if self.pool else base,
                          zeros=self.ch.integer(0, 3) == 0)
            except Unsat:
                pass
        while self.n_ops < n_ops:
            kind = ch.choice(self.kinds)
            snap = self.snapshot()
            try:
                getattr(self, "op_" + kind)()
            except Unsat:
                self.restore(snap)
                self.fallback()
        n_computed = sum(1 for n in self.pool if n.startswith("v"))
        probe = -1 - self.ch.integer(0, n_computed - 1)
        return Program(self.seed, self.statements, self.guards, probe)


@st.composite
def programs(draw, kinds=KINDS, min_ops=5, max_ops=40, max_leaf_elems=64):
    seed = draw(st.integers(0, 2**32 - 1))
    n_ops = draw(st.integers(min_ops, max_ops))
    return Builder(HypothesisChooser(draw), seed, kinds, max_leaf_elems).build(n_ops)
