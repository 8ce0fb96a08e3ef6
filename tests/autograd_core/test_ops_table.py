"""The table of test_ops.py, part 1: how a case is written, and the cases of the elementwise
ops and the reductions (part 2, test_ops_table_shapes.py: matmul, shape, joining, indexing).

Each case names the registered ops it exercises and draws an `Example`: a function of
tensors, numpy's forward for the same computation, and float64 input arrays. Shapes come
from hypothesis (up to 3 dims, sizes 1-4, broadcasting pairs); values come from a numpy
Generator seeded by hypothesis, kept away from the points where an op is not differentiable.
"""
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd_core as ag

SIDES = dict(min_side=1, max_side=4)
seeds = st.integers(0, 2**32 - 1)


def shapes(min_dims=0, max_dims=3):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, **SIDES)


def broadcast_shapes(n):
    return hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=3, **SIDES)


# ---- values (float64, from the seeded Generator) ----------------------------------------------
def normal(rng, shape):
    return np.asarray(rng.standard_normal(shape))


def wide(rng, shape):
    return 3.0 * normal(rng, shape)


def away(rng, shape, low=0.2):
    """|x| in [low, 2]: away from the kink of abs and relu, and from the pole of 1/x."""
    return np.asarray(rng.uniform(low, 2.0, shape) * rng.choice([-1.0, 1.0], shape))


def away_half(rng, shape):
    return away(rng, shape, low=0.5)


def positive(rng, shape):
    return np.asarray(rng.uniform(0.5, 2.0, shape))


def distinct(rng, *shape_list):
    """Arrays whose values, all together, are distinct and at least 0.25 apart (no ties)."""
    sizes = [int(np.prod(s)) for s in shape_list]
    total = sum(sizes)
    values = (rng.permutation(total) - total / 2) * 0.25 + rng.uniform(-0.1, 0.1)
    bounds = np.cumsum([0] + sizes)
    return [values[lo:hi].reshape(s) for lo, hi, s in zip(bounds, bounds[1:], shape_list)]


def away_from_points(rng, shape, points, margin=0.1):
    """Uniform in [-2, 2], at least `margin` from each of `points` (clip bounds)."""
    x = np.asarray(rng.uniform(-2.0, 2.0, shape))
    flat = x.reshape(-1)
    while True:
        bad = np.zeros(flat.shape, dtype=bool)
        for p in points:
            bad |= np.abs(flat - p) < margin
        if not bad.any():
            return x
        flat[bad] = rng.uniform(-2.0, 2.0, int(bad.sum()))


# ---- the table --------------------------------------------------------------------------------
@dataclass
class Example:
    label: str
    fn: object  # tensors -> Tensor (or a tuple / list of Tensors)
    ref: object  # ndarrays -> numpy's result for the same computation
    arrays: tuple  # float64 inputs
    out_dtype: object = None  # dtype of the outputs; None: the inputs' dtype

    def __repr__(self):
        return f"Example({self.label}; input shapes {[a.shape for a in self.arrays]})"


@dataclass(frozen=True)
class Case:
    name: str
    ops: tuple  # the registered ops the case must record
    strategy: object

    def __repr__(self):
        return self.name


def case_decorator(cases):
    """`@case(name, *ops)` registers `build(draw, rng) -> Example` in `cases` as a case for
    `ops` (default: the op `name`)."""
    def case(name, *ops):
        def register(build):
            @st.composite
            def strategy(draw):
                seed = draw(seeds)
                ex = build(draw, np.random.default_rng(seed))
                ex.label = f"{ex.label}, seed={seed}"
                return ex
            cases.append(Case(name, ops or (name,), strategy()))
            return build
        return register
    return case


CASES = []
case = case_decorator(CASES)


def pick(draw, variants):
    return variants[draw(st.integers(0, len(variants) - 1))]


# Elementwise with two tensor operands: broadcasting pairs of shapes.
def binary_case(name, variants, ref, gen_a, gen_b, ops=()):
    @case(name, *ops)
    def build(draw, rng):
        label, fn = pick(draw, variants)
        sa, sb = draw(broadcast_shapes(2)).input_shapes
        if gen_a is distinct:
            arrays = distinct(rng, sa, sb)
        else:
            arrays = [gen_a(rng, sa), gen_b(rng, sb)]
        return Example(label, fn, ref, tuple(arrays))


binary_case("add", [("a + b", lambda a, b: a + b), ("ag.add", ag.add)], np.add, normal, normal)
binary_case("sub", [("a - b", lambda a, b: a - b), ("ag.sub", ag.sub)], np.subtract,
            normal, normal)
binary_case("mul", [("a * b", lambda a, b: a * b), ("ag.mul", ag.mul),
                    ("np.multiply", np.multiply)], np.multiply, normal, normal)
binary_case("div", [("a / b", lambda a, b: a / b), ("ag.div", ag.div)], np.divide,
            normal, away_half)
binary_case("pow", [("a ** b", lambda a, b: a ** b), ("ag.pow", ag.pow)], np.power,
            positive, normal)
binary_case("maximum", [("ag.maximum", ag.maximum), ("np.maximum", np.maximum)], np.maximum,
            distinct, distinct)
binary_case("minimum", [("ag.minimum", ag.minimum), ("np.minimum", np.minimum)], np.minimum,
            distinct, distinct)


# One tensor and a Python number, on either side: each form has its own op.
def scalar_case(name, variants):
    """variants: (label, fn, values); fn works on tensors and on ndarrays alike."""
    @case(name)
    def build(draw, rng):
        label, fn, gen = pick(draw, variants)
        return Example(label, fn, fn, (gen(rng, draw(shapes())),))


scalar_case("add_scalar", [("x + 2.5", lambda x: x + 2.5, normal),
                           ("3.0 + x", lambda x: 3.0 + x, normal),
                           ("x + 2 (int)", lambda x: x + 2, normal),
                           ("x - 1.5", lambda x: x - 1.5, normal)])
scalar_case("rsub_scalar", [("1.5 - x", lambda x: 1.5 - x, normal),
                            ("2 - x (int)", lambda x: 2 - x, normal)])
scalar_case("mul_scalar", [("x * 3.0", lambda x: x * 3.0, normal),
                           ("-2.0 * x", lambda x: -2.0 * x, normal),
                           ("x * 3 (int)", lambda x: x * 3, normal)])
scalar_case("div_scalar", [("x / 4.0", lambda x: x / 4.0, normal),
                           ("x / -3 (int)", lambda x: x / -3, normal)])
scalar_case("rdiv_scalar", [("2.0 / x", lambda x: 2.0 / x, away_half),
                            ("-3 / x (int)", lambda x: -3 / x, away_half)])
scalar_case("pow_scalar", [("x ** 2", lambda x: x ** 2, normal),
                           ("x ** 2.0", lambda x: x ** 2.0, normal),
                           ("x ** 3", lambda x: x ** 3, normal),
                           ("x ** 0.5", lambda x: x ** 0.5, positive),
                           ("x ** -1.5", lambda x: x ** -1.5, positive),
                           ("x ** -1", lambda x: x ** -1, away_half)])
scalar_case("rpow_scalar", [("2.0 ** x", lambda x: 2.0 ** x, normal),
                            ("0.5 ** x", lambda x: 0.5 ** x, normal),
                            ("3 ** x (int)", lambda x: 3 ** x, normal)])


# Elementwise functions of one tensor.
def unary_case(name, variants, ref, gen):
    @case(name)
    def build(draw, rng):
        label, fn = pick(draw, variants)
        return Example(label, fn, ref, (gen(rng, draw(shapes())),))


unary_case("neg", [("-x", lambda x: -x), ("ag.neg", ag.neg), ("np.negative", np.negative)],
           np.negative, normal)
unary_case("exp", [("ag.exp", ag.exp), ("x.exp()", lambda x: x.exp()), ("np.exp", np.exp)],
           np.exp, normal)
unary_case("log", [("ag.log", ag.log), ("x.log()", lambda x: x.log()), ("np.log", np.log)],
           np.log, positive)
unary_case("sqrt", [("ag.sqrt", ag.sqrt), ("x.sqrt()", lambda x: x.sqrt()),
                    ("np.sqrt", np.sqrt)], np.sqrt, positive)
unary_case("abs", [("ag.abs", ag.abs), ("abs(x)", abs), ("x.abs()", lambda x: x.abs()),
                   ("np.abs", np.abs)], np.abs, away)
unary_case("tanh", [("ag.tanh", ag.tanh), ("x.tanh()", lambda x: x.tanh()),
                    ("np.tanh", np.tanh)], np.tanh, wide)
unary_case("sigmoid", [("ag.sigmoid", ag.sigmoid), ("x.sigmoid()", lambda x: x.sigmoid())],
           lambda x: 1.0 / (1.0 + np.exp(-x)), wide)
unary_case("logsigmoid", [("ag.logsigmoid", ag.logsigmoid)], lambda x: -np.logaddexp(0.0, -x),
           wide)
unary_case("softplus", [("ag.softplus", ag.softplus)], lambda x: np.logaddexp(0.0, x), wide)
unary_case("relu", [("ag.relu", ag.relu), ("x.relu()", lambda x: x.relu())],
           lambda x: np.maximum(x, 0.0), away)


@case("clip")
def _clip(draw, rng):
    lo, hi = pick(draw, [(-0.5, 0.5), (None, 0.3), (-0.3, None), (0.25, 1.0)])
    x = away_from_points(rng, draw(shapes()), [b for b in (lo, hi) if b is not None])
    if draw(st.booleans()):
        return Example(f"ag.clip(x, {lo}, {hi})", lambda t: ag.clip(t, lo, hi),
                       lambda a: np.clip(a, lo, hi), (x,))
    return Example(f"x.clip(min={lo}, max={hi})", lambda t: t.clip(min=lo, max=hi),
                   lambda a: np.clip(a, lo, hi), (x,))


@case("where")
def _where(draw, rng):
    sc, sa, sb = draw(broadcast_shapes(3)).input_shapes
    cond = rng.random(sc) < 0.5
    a, b = normal(rng, sa), normal(rng, sb)
    variants = [
        ("ag.where(cond, a, b)", lambda x, y: ag.where(cond, x, y),
         lambda x, y: np.where(cond, x, y), (a, b)),
        ("ag.where(Tensor(cond), a, b)", lambda x, y: ag.where(ag.Tensor(cond), x, y),
         lambda x, y: np.where(cond, x, y), (a, b)),
        ("ag.where(cond, a, 0.5)", lambda x: ag.where(cond, x, 0.5),
         lambda x: np.where(cond, x, 0.5), (a,)),
        ("ag.where(cond, -1.5, b)", lambda y: ag.where(cond, -1.5, y),
         lambda y: np.where(cond, -1.5, y), (b,)),
    ]
    label, fn, ref, arrays = pick(draw, variants)
    return Example(f"{label}, cond shape {cond.shape}", fn, ref, arrays)


# ---- reductions -------------------------------------------------------------------------------
def draw_axis(draw, ndim):
    """None, an int, a negative int or a tuple (possibly empty, possibly with negatives)."""
    if ndim == 0:
        return draw(st.sampled_from([None, ()]))
    kind = draw(st.sampled_from(["none", "int", "negative int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(0, ndim - 1))
    if kind == "negative int":
        return draw(st.integers(-ndim, -1))
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def _np_logsumexp(x, axis=None, keepdims=False):
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


def reduction_case(name, agfn, ref, gen):
    @case(name)
    def build(draw, rng):
        shape = draw(shapes())
        axis, keepdims = draw_axis(draw, len(shape)), draw(st.booleans())
        x = distinct(rng, shape)[0] if gen is distinct else gen(rng, shape)
        r = lambda a: ref(a, axis=axis, keepdims=keepdims)  # noqa: E731
        if draw(st.booleans()):
            return Example(f"ag.{name}(x, axis={axis}, keepdims={keepdims})",
                           lambda t: agfn(t, axis, keepdims), r, (x,))
        return Example(f"x.{name}(axis={axis}, keepdims={keepdims})",
                       lambda t: getattr(t, name)(axis=axis, keepdims=keepdims), r, (x,))


reduction_case("sum", ag.sum, np.sum, normal)
reduction_case("mean", ag.mean, np.mean, normal)
reduction_case("max", ag.max, np.max, distinct)
reduction_case("min", ag.min, np.min, distinct)
reduction_case("logsumexp", ag.logsumexp, _np_logsumexp, wide)


def _np_softmax(x, axis):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _np_log_softmax(x, axis):
    return x - _np_logsumexp(x, axis=axis, keepdims=True)


def softmax_case(name, agfn, ref):
    @case(name)
    def build(draw, rng):
        shape = draw(shapes(min_dims=1))
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        x = wide(rng, shape)
        label, fn, axis = pick(draw, [
            (f"ag.{name}(x, axis={axis})", lambda t: agfn(t, axis), axis),
            (f"x.{name}({axis})", lambda t: getattr(t, name)(axis), axis),
            (f"ag.{name}(x) (axis -1)", agfn, -1)])
        return Example(label, fn, lambda a: ref(a, axis), (x,))


softmax_case("softmax", ag.softmax, _np_softmax)
softmax_case("log_softmax", ag.log_softmax, _np_log_softmax)


@case("softmax_cross_entropy")
def _softmax_cross_entropy(draw, rng):
    shape = draw(shapes(min_dims=1))
    x = wide(rng, shape)
    target = rng.integers(0, shape[-1], size=shape[:-1])

    def ref(a):
        return -np.take_along_axis(_np_log_softmax(a, -1), target[..., None], -1)[..., 0]
    return Example(f"ag.softmax_cross_entropy(x{shape}, target)",
                   lambda t: ag.softmax_cross_entropy(t, target), ref, (x,))


@case("mean_softmax_cross_entropy")
def _mean_softmax_cross_entropy(draw, rng):
    shape = draw(shapes(min_dims=2))  # (..., rows, classes)
    x = wide(rng, shape)
    target = rng.integers(0, shape[-1], size=shape[:-1])

    def ref(a):
        losses = -np.take_along_axis(_np_log_softmax(a, -1), target[..., None], -1)[..., 0]
        return losses.mean(axis=-1)
    return Example(f"ag.mean_softmax_cross_entropy(x{shape}, target)",
                   lambda t: ag.mean_softmax_cross_entropy(t, target), ref, (x,))
