"""The table of test_ops.py, part 2: matmul, shape, joining and indexing ops."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd_core as ag
from tests.autograd_core.test_ops_table import Example, pick, case_decorator, normal, shapes

CASES = []
case = case_decorator(CASES)


# ---- matmul -----------------------------------------------------------------------------------
@case("matmul")
def _matmul(draw, rng):
    kind = draw(st.sampled_from(["1-D @ 1-D", "1-D @ N-D", "N-D @ 1-D", "2-D @ 2-D",
                                 "batched"]))
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch = st.lists(st.integers(1, 3), max_size=1).map(tuple)
    if kind == "1-D @ 1-D":
        sa, sb = (k,), (k,)
    elif kind == "1-D @ N-D":
        sa, sb = (k,), draw(batch) + (k, m)
    elif kind == "N-D @ 1-D":
        sa, sb = draw(batch) + (n, k), (k,)
    elif kind == "2-D @ 2-D":
        sa, sb = (n, k), (k, m)
    else:  # broadcast batch axes: different ndim, size-1 axes on either side
        ba, bb = draw(hnp.mutually_broadcastable_shapes(
            num_shapes=2, min_dims=0, max_dims=1, min_side=1, max_side=3)).input_shapes
        sa, sb = ba + (n, k), bb + (k, m)
    label, fn = pick(draw, [("a @ b", lambda a, b: a @ b), ("ag.matmul", ag.matmul),
                             ("a.matmul(b)", lambda a, b: a.matmul(b))])
    return Example(f"{kind}: {label}", fn, np.matmul, (normal(rng, sa), normal(rng, sb)))


@case("addmm")
def _addmm(draw, rng):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    sc = draw(st.sampled_from([(n, m), (m,), (1, m), (n, 1), ()]))
    return Example(f"c{sc} + a @ b: ag.addmm", ag.addmm, lambda c, a, b: c + a @ b,
                   (normal(rng, sc), normal(rng, (n, k)), normal(rng, (k, m))))


@case("linear")
def _linear(draw, rng):
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    sb = draw(st.sampled_from([None, (m,), (n, m), (1, m), ()]))
    if sb is None:
        return Example("x @ W.T: ag.linear", ag.linear, lambda x, w: x @ w.T,
                       (normal(rng, (n, k)), normal(rng, (m, k))))
    return Example(f"x @ W.T + b{sb}: ag.linear", ag.linear, lambda x, w, b: x @ w.T + b,
                   (normal(rng, (n, k)), normal(rng, (m, k)), normal(rng, sb)))


# ---- shape ------------------------------------------------------------------------------------
def draw_reshape_target(draw, size):
    dims, rest = [], size
    for _ in range(draw(st.integers(0, 2))):
        d = draw(st.sampled_from([f for f in range(1, rest + 1) if rest % f == 0]))
        dims.append(d)
        rest //= d
    dims = list(draw(st.permutations(dims + [rest])))
    if draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


@case("reshape")
def _reshape(draw, rng):
    shape = draw(shapes())
    x = normal(rng, shape)
    target = draw_reshape_target(draw, x.size)
    label, fn = pick(draw, [
        (f"ag.reshape(x, {target})", lambda t: ag.reshape(t, target)),
        (f"x.reshape(*{target})", lambda t: t.reshape(*target)),
        ("x.flatten()", lambda t: t.flatten())])
    ref = (lambda a: a.reshape(-1)) if label == "x.flatten()" else (lambda a: a.reshape(target))
    return Example(label, fn, ref, (x,))


@case("expand_dims", "reshape")
def _expand_dims(draw, rng):
    shape = draw(shapes())
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    return Example(f"ag.expand_dims(x, {axis})", lambda t: ag.expand_dims(t, axis),
                   lambda a: np.expand_dims(a, axis), (normal(rng, shape),))


@case("squeeze", "reshape")
def _squeeze(draw, rng):
    shape = list(draw(shapes(max_dims=2)))
    for _ in range(draw(st.integers(1, 2))):  # insert size-1 axes
        shape.insert(draw(st.integers(0, len(shape))), 1)
    shape = tuple(shape)
    ones = [i for i, s in enumerate(shape) if s == 1]
    axis = draw(st.sampled_from([None, "one", "tuple"]))
    if axis == "one":
        axis = draw(st.sampled_from(ones))
        axis = axis - len(shape) if draw(st.booleans()) else axis
    elif axis == "tuple":
        axis = tuple(draw(st.lists(st.sampled_from(ones), unique=True, min_size=1)))
    label, fn = pick(draw, [(f"ag.squeeze(x, {axis})", lambda t: ag.squeeze(t, axis)),
                             (f"x.squeeze({axis})", lambda t: t.squeeze(axis))])
    return Example(label, fn, lambda a: np.squeeze(a, axis), (normal(rng, shape),))


@case("transpose")
def _transpose(draw, rng):
    shape = draw(shapes())
    nd = len(shape)
    perm = tuple(a - nd if draw(st.booleans()) else a
                 for a in draw(st.permutations(range(nd))))
    label, fn, ref = pick(draw, [
        ("ag.transpose(x)", ag.transpose, np.transpose),
        ("x.T", lambda t: t.T, lambda a: a.T),
        (f"ag.transpose(x, {perm})", lambda t: ag.transpose(t, perm),
         lambda a: np.transpose(a, perm)),
        (f"x.transpose(*{perm})", lambda t: t.transpose(*perm), lambda a: a.transpose(*perm)),
        (f"x.transpose({perm})", lambda t: t.transpose(perm), lambda a: a.transpose(perm))])
    return Example(label, fn, ref, (normal(rng, shape),))


@case("swapaxes", "transpose")
def _swapaxes(draw, rng):
    shape = draw(shapes(min_dims=1))
    a1, a2 = (draw(st.integers(-len(shape), len(shape) - 1)) for _ in range(2))
    label, fn = pick(draw, [(f"ag.swapaxes(x, {a1}, {a2})", lambda t: ag.swapaxes(t, a1, a2)),
                             (f"x.swapaxes({a1}, {a2})", lambda t: t.swapaxes(a1, a2))])
    return Example(label, fn, lambda a: np.swapaxes(a, a1, a2), (normal(rng, shape),))


def draw_broadcast_pair(draw):
    """(small, big): `small` broadcasts to `big` (leading axes dropped, some axes set to 1)."""
    big = draw(shapes())
    small = big[draw(st.integers(0, len(big))):]
    small = tuple(1 if draw(st.booleans()) else s for s in small)
    return small, big


@case("broadcast_to")
def _broadcast_to(draw, rng):
    small, big = draw_broadcast_pair(draw)
    return Example(f"ag.broadcast_to(x, {big})", lambda t: ag.broadcast_to(t, big),
                   lambda a: np.broadcast_to(a, big), (normal(rng, small),))


def _np_sum_to(a, shape):
    lead = a.ndim - len(shape)
    a = a.sum(axis=tuple(range(lead)))
    stretched = tuple(i for i, s in enumerate(shape) if s == 1 and a.shape[i] != 1)
    return a.sum(axis=stretched, keepdims=True)


@case("sum_to")
def _sum_to(draw, rng):
    small, big = draw_broadcast_pair(draw)
    return Example(f"ag.sum_to(x, {small})", lambda t: ag.sum_to(t, small),
                   lambda a: _np_sum_to(a, small), (normal(rng, big),))


@case("astype")
def _astype(draw, rng):
    x = normal(rng, draw(shapes()))
    label, fn, out_dtype = pick(draw, [
        ("x.astype(np.float64)", lambda t: t.astype(np.float64), np.float64),
        ("ag.astype(x, 'float64')", lambda t: ag.astype(t, "float64"), np.float64),
        ("ag.astype(x, x.dtype)", lambda t: ag.astype(t, t.dtype), None)])
    return Example(label, fn, lambda a: a.astype(np.float64), (x,), out_dtype)


# ---- joining ----------------------------------------------------------------------------------
@case("concatenate")
def _concatenate(draw, rng):
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        s = list(shape)
        s[axis] = draw(st.integers(1, 3))
        parts.append(normal(rng, tuple(s)))
    return Example(f"ag.concatenate(xs, axis={axis})", lambda *ts: ag.concatenate(ts, axis),
                   lambda *arrs: np.concatenate(arrs, axis), tuple(parts))


@case("stack")
def _stack(draw, rng):
    shape = draw(shapes())
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    parts = tuple(normal(rng, shape) for _ in range(draw(st.integers(1, 3))))
    return Example(f"ag.stack(xs, axis={axis})", lambda *ts: ag.stack(list(ts), axis),
                   lambda *arrs: np.stack(arrs, axis), parts)


@case("split", "getitem")
def _split(draw, rng):
    shape = draw(shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    if draw(st.booleans()):
        how = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    else:
        how = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    return Example(f"ag.split(x, {how}, axis={axis})", lambda t: tuple(ag.split(t, how, axis)),
                   lambda a: tuple(np.split(a, how, axis)), (normal(rng, shape),))


# ---- indexing ---------------------------------------------------------------------------------
def draw_index(draw, rng, shape):
    """An index for an array of `shape` (ndim >= 1), and a label."""
    nd, s0 = len(shape), shape[0]
    i = draw(st.integers(-s0, s0 - 1))
    start, stop = draw(st.integers(-s0, s0)), draw(st.integers(-s0, s0))
    step = draw(st.sampled_from([1, 2, -1, -2]))
    repeated = np.concatenate([[i], rng.integers(-s0, s0, size=draw(st.integers(1, 4))), [i]])
    choices = {
        "int": i,
        "slice": slice(start, stop, step),
        "int, slice": (i, slice(1, None)) if nd > 1 else (i,),
        "None, ..., None": (None, Ellipsis, None),
        "..., int": (Ellipsis, draw(st.integers(-shape[-1], shape[-1] - 1))),
        "slice, None": (slice(None, None, -1), None),
        "boolean mask (full shape)": rng.random(shape) < 0.5,
        "boolean mask (axis 0)": rng.random(s0) < 0.5,
        "int array, repeated": repeated,
        "2-D int array, repeated": np.resize(repeated, (2, 3)),
        "list, repeated": [int(v) for v in repeated],
        "integer Tensor, repeated": ag.Tensor(repeated),
        "slice, int array": (slice(None), rng.integers(0, shape[1], size=4)) if nd > 1 else
                            (rng.integers(0, s0, size=4),),
        "int array, int array": (repeated, np.resize(rng.integers(0, shape[1], 3), repeated.shape))
                                if nd > 1 else (repeated,),
    }
    label = draw(st.sampled_from(sorted(choices)))
    return label, choices[label]


def _np_index(index):
    if isinstance(index, ag.Tensor):
        return index.numpy()
    return index


@case("getitem")
def _getitem(draw, rng):
    shape = draw(shapes(min_dims=1))
    label, index = draw_index(draw, rng, shape)
    return Example(f"x[{label}] = x[{index!r}]", lambda t: t[index],
                   lambda a: a[_np_index(index)], (normal(rng, shape),))


def _np_scatter(g, shape, index):
    out = np.zeros(shape, dtype=g.dtype)
    np.add.at(out, _np_index(index), g)
    return out


@case("scatter")
def _scatter(draw, rng):
    shape = draw(shapes(min_dims=1))
    label, index = draw_index(draw, rng, shape)
    g = normal(rng, np.zeros(shape)[_np_index(index)].shape)
    return Example(f"ag.scatter(g, {shape}, [{label}] {index!r})",
                   lambda t: ag.scatter(t, shape, index),
                   lambda a: _np_scatter(a, shape, index), (g,))
