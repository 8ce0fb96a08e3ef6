"""Review 27: hostile checks of three changes.

1. ops/linalg._gradient_product_text: the replayed split rules of MatMul, AddMM and Linear
   write `(g.dot(W) if g.dtype is W.dtype else product(g, W))` where the node's shapes are
   2-D with more than one element each (W hoisted as X.._k / X.._kT in a loop over one
   weight). Attacked with gradients of another dtype (float64, float16, a numpy-scalar-made
   float64, a root gradient of another or an equal-but-not-identical dtype), weights that are
   byte-swapped, of a dtype with metadata, F-ordered, strided, read-only, NaN / inf / -0.0,
   1xN, Nx1, 1x1, empty and batched shapes, a weight shared by every step or one per step,
   inputs that require no grad, `.data =` between calls, retain_graph, create_graph, and a
   learner's backward_split put in place at run time. Each replayed call is held to eager
   mode bit for bit (batch=False) and, for batch=True, to the replay with the texts before
   the change (`product(g, W)`) bit for bit and to eager mode to 1e-12.
2. tensor._make writing the slots itself and tensor.versions_of (shared version counters of
   views; an in-place change between a replayed forward and its backward must still raise).
3. benchmarks/lean_engine: its MLP loss and gradients against torch (float64), against the
   floor, on a graph where a node feeds two others, and the MLP benchmark's agreement check.

Every attack held on the code as committed (no bug found): the tests are regression tests.
"""
import copy
import pickle
import re
import warnings

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_codegen
from autograd_core.ops import linalg
from autograd_core.ops.linalg import AddMM, Linear, MatMul
from autograd_core.tensor import Tensor, _make, fill
from autograd_core.versions import version_of, versions_of

from tests.autograd_core.replay_checks import assert_bits, run

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.ReplayWarning",
                                        "ignore::RuntimeWarning")

OPS = ("matmul", "linear", "addmm")


def _old_text(out, b, b_text, b_array):
    """The split rule's product text before the change."""
    return f"product({{g}}, {b_text})"


def _sources():
    import linecache
    return "\n".join("".join(linecache.cache[n][2]) for n in replay_codegen._files
                     if n in linecache.cache)


def _bits(result):
    v, gs = result
    return (np.asarray(v).dtype.str, np.asarray(v).tobytes(),
            [None if g is None else (g.dtype.str, g.shape, g.tobytes()) for g in gs])


def _replayed(fn, params, argsets, batch, calls, monkeypatch=None, old=False):
    """The results of `calls` replayed calls (argsets cycle), with the texts before the
    change where `old`, and the generated sources."""
    replay_codegen._forget()
    if old:
        monkeypatch.setattr(linalg, "_gradient_product_text", _old_text)
    try:
        step = ag.replay(fn, batch=batch)
        results = [run(step, params, argsets[k % len(argsets)]) for k in range(calls)]
        return results, _sources()
    finally:
        if old:
            monkeypatch.undo()
        replay_codegen._forget()


def _eager(fn, params, argsets, calls):
    return [run(fn, params, argsets[k % len(argsets)]) for k in range(calls)]


def _hold(fn, params, argsets=((),), calls=4, monkeypatch=None, dot=None):
    """Replayed calls against eager mode (batch=False: bits) and, with `monkeypatch`, batch=True
    against the texts before the change (bits) and eager mode (1e-12 relative, scaled).
    `dot`: whether the batch=False blocks must contain the new text (True), must not
    (False), or either (None)."""
    want = _eager(fn, params, argsets, calls)
    got, text = _replayed(fn, params, argsets, False, calls)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_bits(g, w, f"batch=False call {k}")
    if dot is not None:
        assert bool(re.search(r"\bg\.dot\(", text)) == dot, text
    if monkeypatch is not None:
        new, _ = _replayed(fn, params, argsets, True, calls)
        before, _ = _replayed(fn, params, argsets, True, calls, monkeypatch, old=True)
        for k, (n, b, w) in enumerate(zip(new, before, want)):
            assert _bits(n) == _bits(b), f"batch=True call {k}: other bits than before"
            v, gs = n
            np.testing.assert_allclose(v, w[0], rtol=1e-5 if v.dtype != np.float64 else 1e-12)
            for g, e in zip(gs, w[1]):
                if e is not None:
                    assert g.dtype == e.dtype and g.shape == e.shape
                    scale = max(1.0, float(np.nanmax(np.abs(e))) if e.size else 1.0)
                    tol = 1e-12 if e.dtype == np.float64 else 1e-3
                    np.testing.assert_allclose(g, e, rtol=tol, atol=tol * scale)
    return text


def _loop(op, dtype, grad_dtypes, rows, inner, outn, steps, shared, weight=None,
          x_grad=True, w_grad=True):
    """A loop whose step's product (op: matmul / linear / addmm) of a (rows, inner) x gets a
    gradient of grad_dtypes[t % len] (its output times a tensor of that dtype); the weight
    is one tensor for every step (`shared`) or one per step; `weight(array)` may remake it
    (a layout, a dtype, values)."""
    rng = np.random.default_rng(rows * 100 + inner * 10 + outn)
    wshape = (outn, inner) if op == "linear" else (inner, outn)
    ws = []
    for _ in range(1 if shared else steps):
        a = (rng.standard_normal(wshape) * 0.5).astype(dtype)
        if weight is not None:
            a = weight(a)
        ws.append(ag.Tensor(a, requires_grad=w_grad))
    c = ag.Tensor((rng.standard_normal((rows, outn)) * 0.5).astype(dtype), requires_grad=True)
    scales = [ag.Tensor(rng.standard_normal((rows, outn)).astype(d)) for d in grad_dtypes]
    xs = ag.Tensor(rng.standard_normal((steps, rows, inner)).astype(dtype),
                   requires_grad=x_grad)

    def fn(xs, *ws):
        loss = 0.0
        for t in range(xs.shape[0]):
            a = xs[t] * 1.0
            w = ws[t % len(ws)]
            p = (ag.matmul(a, w) if op == "matmul" else ag.linear(a, w, c) if op == "linear"
                 else ag.addmm(c, a, w))
            loss = loss + (p * scales[t % len(scales)]).sum() + ag.tanh(p).sum()
        return loss
    return fn, [xs, c] + ws, ((xs,) + tuple(ws),)


# ---- 1. the text itself: the same call as product, for every shape and dtype -------------

def _node(op, x, w):
    xt, wt = ag.Tensor(x, requires_grad=True), ag.Tensor(w, requires_grad=True)
    if op == "matmul":
        return ag.matmul(xt, wt)
    if op == "linear":
        return ag.linear(xt, wt)
    c = ag.Tensor(np.zeros((), x.dtype), requires_grad=True)
    return ag.addmm(c, xt, wt)


def _eval_split(op, out, g):
    """The node's split text for x's gradient evaluated on `g`, and what eager mode's
    backward_split gives (or the exception types)."""
    from autograd_core import replay_texts
    text = {"matmul": MatMul, "linear": Linear, "addmm": AddMM}[op].inline_split(out)
    k = 1 if op == "addmm" else 0
    expr = replay_texts.filled(text[0][k], "t", len(out._inputs))
    try:
        got = eval(expr, dict(replay_texts.NAMES), {"t": out, "g": g})
    except Exception as e:  # noqa: BLE001
        got = type(e)
    split = {"matmul": MatMul, "linear": Linear, "addmm": AddMM}[op].backward_split
    try:
        want = split(g, out)[0][k]
    except Exception as e:  # noqa: BLE001
        want = type(e)
    return text[0][k], got, want


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("n, k, m", [(0, 3, 4), (1, 1, 1), (1, 1, 4), (1, 4, 1), (4, 1, 1),
                                     (1, 4, 4), (4, 4, 1), (4, 1, 4), (2, 3, 2), (7, 33, 65),
                                     (3, 0, 2)])
@pytest.mark.parametrize("wdtype, gdtype", [
    ("f4", "f4"), ("f4", "f8"), ("f8", "f4"), ("f4", "f2"), ("f2", "f2"), ("f4", ">f4"),
    (">f8", "f8"), (">f8", ">f8"), ("f4", "=f4"), ("f4", "meta"), ("meta", "f4")])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_the_split_text_is_product_for_every_shape_dtype_and_layout(op, n, k, m, wdtype,
                                                                    gdtype, layout):
    """The text, evaluated on a gradient, gives what eager mode's backward_split gives: the
    same dtype and bits (or the same exception); the new dot text is chosen exactly where
    both shapes have more than one element. ('=f4' and 'meta' are dtypes equal to float32
    but not the same object: newbyteorder('=') and one with metadata.)"""
    def dt(s):
        if s == "meta":
            return np.dtype(np.float32, metadata={"review": 27})
        if s == "=f4":
            return np.dtype("float32").newbyteorder("=")
        return np.dtype(s)
    rng = np.random.default_rng(n * 31 + k * 7 + m)
    x = rng.standard_normal((n, k)).astype(dt(wdtype))
    w = rng.standard_normal((m, k) if op == "linear" else (k, m)) * 3
    w = w.astype(dt(wdtype))
    if layout == "F":
        w = np.asfortranarray(w)
    out = _node(op, x, w)
    g = rng.standard_normal(out.shape).astype(dt(gdtype))
    text, got, want = _eval_split(op, out, g)
    assert (".dot(" in text) == (out.size > 1 and w.size > 1), text
    if isinstance(want, type):
        assert got is want
    else:
        assert type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_the_sign_of_zero_of_a_1x1_product_is_eager_modes():
    """[[-1.]] @ [[0.]] is 0.0 with np.matmul and -0.0 with dot: a 1x1 node's replayed text
    stays product's call, so each leaf x_t's gradient keeps eager mode's +0.0."""
    w = ag.Tensor(np.zeros((1, 1)), requires_grad=True)
    xs = [ag.Tensor(np.ones((1, 1)), requires_grad=True) for _ in range(4)]

    def fn(*xs):
        loss = 0.0
        for x in xs:
            loss = loss - ag.matmul(x, w).sum()
        return loss
    replay_codegen._forget()
    step = ag.replay(fn, batch=False)
    for _ in range(4):
        got, want = run(step, xs + [w], xs), run(fn, xs + [w], xs)
        assert not any(np.signbit(g).any() for g in want[1][:4])
        assert not any(np.signbit(g).any() for g in got[1][:4])
        assert_bits(got, want)
    replay_codegen._forget()
    _hold(fn, xs + [w], (tuple(xs),), dot=False)


# ---- 1. replayed calls: eager bits, and batch=True the bits of the texts before -----------

@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype, grad_dtypes", [(np.float32, (np.float32,)),
                                                (np.float32, (np.float64,)),
                                                (np.float32, (np.float16,)),
                                                (np.float32, (np.float32, np.float64)),
                                                (np.float64, (np.float64,)),
                                                (np.float16, (np.float16,))])
@pytest.mark.parametrize("rows, inner, outn", [(1, 4, 4), (3, 4, 1), (1, 1, 4), (1, 1, 1),
                                               (7, 33, 65)])
@pytest.mark.parametrize("shared", [True, False])
def test_replayed_products_keep_eager_bits(monkeypatch, op, dtype, grad_dtypes, rows, inner,
                                          outn, shared):
    """Gradients of the weight's dtype, of another (float64, float16) and of both in turns
    inside one loop; 1xN, Nx1, 1x1 and larger nodes; a weight shared by the steps (hoisted)
    or one per step."""
    fn, params, args = _loop(op, dtype, grad_dtypes, rows, inner, outn, 5, shared)
    dot = rows * outn > 1 and inner * outn > 1
    text = _hold(fn, params, args, monkeypatch=monkeypatch, dot=dot)
    hoisted = re.search(r"g\.dot\(X\d+_\d+T?\) if g\.dtype is X\d+_\d+\.dtype", text)
    assert bool(hoisted) == (dot and shared), text


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder(">"))


def _strided(a):
    big = np.zeros((a.shape[0] * 2, a.shape[1] * 3), a.dtype)
    big[::2, ::3] = a
    return big[::2, ::3]


def _read_only(a):
    a.flags.writeable = False
    return a


WEIGHTS = {
    "F-ordered": np.asfortranarray, "strided": _strided, "read-only": _read_only,
    "byte-swapped": _byteswapped,
    "metadata": lambda a: a.astype(np.dtype(a.dtype, metadata={"review": 27})),
    "native '='": lambda a: a.astype(a.dtype.newbyteorder("=")),
    "float64 beside float32": lambda a: a.astype(np.float64),
    "nan": lambda a: np.where(np.arange(a.size).reshape(a.shape) % 3 == 0, np.nan, a).astype(
        a.dtype),
    "inf": lambda a: np.where(np.arange(a.size).reshape(a.shape) % 4 == 1, -np.inf, a).astype(
        a.dtype),
    "-0.0": lambda a: np.full_like(a, -0.0),
}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("weight", list(WEIGHTS))
@pytest.mark.parametrize("shared", [True, False])
def test_odd_weights_keep_eager_bits(monkeypatch, op, weight, shared):
    fn, params, args = _loop(op, np.float32, (np.float64, np.float32), 7, 33, 65, 4, shared,
                             weight=WEIGHTS[weight])
    _hold(fn, params, args, monkeypatch=monkeypatch)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("wdtype", ["f4", ">f8", "f2", "meta"])
@pytest.mark.parametrize("shared", [True, False])
def test_a_weight_of_another_dtype_beside_float64_activations(monkeypatch, op, wdtype, shared):
    """float64 x and gradients beside a float32 / float16 / byte-swapped weight (or one of
    float64 with metadata: equal, not the same object): dx stays float64, so a dot of mixed
    dtypes (other bits than np.matmul's where W is a transpose) would show."""
    dt = np.dtype(np.float64, metadata={"review": 27}) if wdtype == "meta" else np.dtype(wdtype)
    fn, params, args = _loop(op, np.float64, (np.float64,), 7, 33, 65, 4, shared,
                             weight=lambda a: a.astype(dt))
    _hold(fn, params, args, monkeypatch=monkeypatch, dot=True)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("x_grad, w_grad", [(False, True), (True, False)])
def test_inputs_that_require_no_grad(monkeypatch, op, x_grad, w_grad):
    fn, params, args = _loop(op, np.float32, (np.float32,), 3, 4, 4, 4, True,
                             x_grad=x_grad, w_grad=w_grad)
    _hold(fn, params, args, monkeypatch=monkeypatch)


def test_a_numpy_scalar_made_float64_gradient_reaches_a_float32_product(monkeypatch):
    """p * np.float64(2.5) is float64 under NEP 50: p's gradient is float64 (product's
    call, not dot)."""
    rng = np.random.default_rng(5)
    w = ag.Tensor(rng.standard_normal((33, 65)).astype(np.float32), requires_grad=True)
    xs = ag.Tensor(rng.standard_normal((4, 7, 33)).astype(np.float32), requires_grad=True)

    def fn(xs):
        loss = 0.0
        for t in range(xs.shape[0]):
            p = ag.matmul(xs[t] * 1.0, w)
            loss = loss + (p * np.float64(2.5)).sum() + (p * 2.5).sum()
        return loss
    _hold(fn, [xs, w], ((xs,),), monkeypatch=monkeypatch, dot=True)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("gdtype", ["f4", "f8", ">f4", "=f4", "f2"])
def test_a_root_gradient_of_another_dtype(op, gdtype):
    """The replayed function returns the product itself; backward(gradient) of another
    dtype, byte order, or an equal dtype that is another object, reaches it."""
    rng = np.random.default_rng(8)
    wshape = (65, 33) if op == "linear" else (33, 65)
    w = ag.Tensor(rng.standard_normal(wshape).astype(np.float32), requires_grad=True)
    c = ag.Tensor(rng.standard_normal(65).astype(np.float32), requires_grad=True)
    x = ag.Tensor(rng.standard_normal((7, 33)).astype(np.float32), requires_grad=True)
    gd = np.dtype("float32").newbyteorder("=") if gdtype == "=f4" else np.dtype(gdtype)
    gradient = ag.Tensor(rng.standard_normal((7, 65)).astype(gd))

    def fn(x):
        a = x * 1.0
        return (ag.matmul(a, w) if op == "matmul" else ag.linear(a, w, c) if op == "linear"
                else ag.addmm(c, a, w))

    def once(f):
        for p in (x, w, c):
            p.grad = None
        out = f(x)
        out.backward(gradient)
        return [out.numpy().tobytes()] + [None if p.grad is None else
                                         (p.grad.dtype.str, p.grad.numpy().tobytes())
                                         for p in (x, w, c)]
    replay_codegen._forget()
    step = ag.replay(fn, batch=False)
    for _ in range(4):
        assert once(step) == once(fn)


@pytest.mark.parametrize("op", OPS)
def test_weights_data_replaced_between_calls(op):
    """`.data =` between calls: an F-ordered copy, a dtype equal to float32 that is another
    object (with metadata: the plan keeps running), values with -0.0 and NaN."""
    fn, params, args = _loop(op, np.float32, (np.float32,), 7, 33, 65, 4, True)
    w = params[2]
    base = w.numpy().copy()
    changes = [lambda: None,
               lambda: setattr(w, "data", np.asfortranarray(base)),
               lambda: setattr(w, "data", base.astype(np.dtype(np.float32,
                                                                metadata={"r": 27}))),
               lambda: setattr(w, "data", np.where(base > 0, -0.0, base).astype(np.float32)),
               lambda: setattr(w, "data", np.where(base > 1, np.nan, base).astype(np.float32)),
               lambda: setattr(w, "data", base.copy())]
    replay_codegen._forget()
    step = ag.replay(fn, batch=False)
    for change in changes * 2:
        change()
        assert_bits(run(step, params, args[0]), run(fn, params, args[0]))


def test_a_batched_3d_product_keeps_eager_bits(monkeypatch):
    """3-D operands: no inline split text; the replay still gives eager mode's bits."""
    rng = np.random.default_rng(9)
    w = ag.Tensor(rng.standard_normal((2, 4, 4)), requires_grad=True)
    xs = ag.Tensor(rng.standard_normal((4, 2, 3, 4)), requires_grad=True)

    def fn(xs):
        loss = 0.0
        for t in range(xs.shape[0]):
            loss = loss + ag.tanh(ag.matmul(xs[t] * 1.0, w)).sum()
        return loss
    _hold(fn, [xs, w], ((xs,),), monkeypatch=monkeypatch, dot=False)


def test_retain_graph_backward_twice_doubles_as_eager():
    fn, params, args = _loop("matmul", np.float64, (np.float64,), 3, 4, 4, 4, True)
    replay_codegen._forget()
    step = ag.replay(fn, batch=False)
    for _ in range(4):
        got, want = [], []
        for f, into in ((step, got), (fn, want)):
            for p in params:
                p.grad = None
            out = f(*args[0])
            out.backward(retain_graph=True)
            out.backward()
            into += [None if p.grad is None else p.grad.numpy().tobytes() for p in params]
        assert got == want


def test_create_graph_through_a_replay_raises_its_own_error():
    fn, params, args = _loop("matmul", np.float64, (np.float64,), 3, 4, 4, 4, True)
    step = ag.replay(fn, batch=False)
    for _ in range(3):
        run(step, params, args[0])
    with pytest.raises(RuntimeError, match="create_graph=True needs the eager graph"):
        ag.grad(step(*args[0]), params[2], create_graph=True)
    (eager,) = ag.grad(fn(*args[0]), params[2], create_graph=True)  # eager mode still can
    assert eager.requires_grad


@pytest.mark.parametrize("op_cls, op", [(MatMul, "matmul"), (Linear, "linear"),
                                        (AddMM, "addmm")])
def test_a_learners_backward_split_put_in_place_at_run_time(monkeypatch, op_cls, op):
    """A learner's backward_split (x's gradient times 3) replaces the op's after the plan
    ran generated blocks: replay notices, runs the new rule (eager bits), and the generated
    text of the old rule is not run; restored, the dot text comes back."""
    fn, params, args = _loop(op, np.float64, (np.float64,), 3, 4, 4, 4, True)
    replay_codegen._forget()
    step = ag.replay(fn, batch=False)
    for _ in range(3):
        assert_bits(run(step, params, args[0]), run(fn, params, args[0]))
    assert "g.dot(" in _sources()
    before = run(fn, params, args[0])
    original = op_cls.backward_split

    def tripled(g, out):
        r = original(g, out)
        if r is None:
            return r
        grads, left, right = r
        k = 1 if op == "addmm" else 0
        grads = tuple(3.0 * gi if j == k and gi is not None else gi
                      for j, gi in enumerate(grads))
        return grads, left, right
    monkeypatch.setattr(op_cls, "backward_split", staticmethod(tripled))
    for _ in range(3):
        got, want = run(step, params, args[0]), run(fn, params, args[0])
        assert_bits(got, want)
        assert not np.array_equal(got[1][0], before[1][0])  # the new rule ran
    monkeypatch.undo()
    for _ in range(3):
        assert_bits(run(step, params, args[0]), before)


# ---- 2. _make and versions_of ------------------------------------------------------------

def test_make_writes_fills_slots_and_its_tensors_are_independent():
    a = np.arange(6.0).reshape(2, 3)
    made, filled = _make(a), fill(object.__new__(Tensor), a)
    for name in Tensor.__slots__:
        if name != "__weakref__":
            assert getattr(made, name) is getattr(filled, name), name
    assert made._data is a and type(made._version) is int and made._version == 0
    other = _make(a)
    with ag.no_grad():
        made.add_(1.0)
    assert version_of(made) > 0 and version_of(other) == 0
    for c in (copy.deepcopy(made), pickle.loads(pickle.dumps(made)), copy.copy(made)):
        assert c.numpy().tobytes() == made.numpy().tobytes() and not c.requires_grad


def test_grad_tensors_made_by_backward_copy_pickle_and_count_versions():
    fn, params, args = _loop("linear", np.float64, (np.float64,), 3, 4, 4, 4, True)
    step = ag.replay(fn, batch=False)
    for f in (fn, step, step, step):
        for p in params:
            p.grad = None
        f(*args[0]).backward()
        for p in params:
            g = p.grad
            assert type(g) is Tensor and not g.requires_grad and g.grad is None
            assert g._op is None and g._inputs == () and version_of(g) == 0
            for c in (copy.deepcopy(g), pickle.loads(pickle.dumps(g))):
                assert c.numpy().tobytes() == g.numpy().tobytes()
            with ag.no_grad():
                g.mul_(1.0)
            assert version_of(g) > 0


def test_versions_of_is_version_of_for_ints_and_shared_counters():
    ts = [ag.Tensor(np.ones(4)) for _ in range(4)]
    views = [ts[1][1:], ts[2].detach()]
    with ag.no_grad():
        views[0].add_(1.0)
        ts[3].add_(1.0)
        ts[3].add_(1.0)
    everything = ts + views
    got = versions_of(everything)
    assert got == [version_of(t) for t in everything]
    assert all(type(v) is int for v in got)
    assert got[0] == got[2] == got[5] == 0 and got[1] == got[4] > 0 and got[3] > got[1]
    assert versions_of([]) == [] and versions_of(iter(ts)) == got[:4]


def _replayed_loop_over(w):
    x = ag.Tensor(np.random.default_rng(4).standard_normal((3, 4)), requires_grad=True)

    def fn(x):
        h = x
        for _ in range(4):
            h = ag.tanh(ag.matmul(h, w))
        return h.sum()
    step = ag.replay(fn, batch=False)
    for _ in range(3):
        run(step, [x, w], (x,))
    return step, x


@pytest.mark.parametrize("how", ["the weight", "a view made before the forward",
                                 "a view made after the forward", "a detached alias"])
def test_an_in_place_change_between_a_replayed_forward_and_backward_raises(how):
    """The weight's counter is an int, or shared with a view made before the forward (the
    replay's versions hold the shared counter's value) or after it."""
    w = ag.Tensor(np.random.default_rng(3).standard_normal((4, 4)) * 0.5, requires_grad=True)
    early = w.detach()[1:] if how == "a view made before the forward" else None
    step, x = _replayed_loop_over(w)
    out = step(x)
    with ag.no_grad():
        if how == "the weight":
            w.add_(1.0)
        elif early is not None:
            early.add_(1.0)
        elif how == "a view made after the forward":
            w.detach()[:2].add_(1.0)
        else:
            w.detach().add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        out.backward()


def test_a_view_made_between_forward_and_backward_without_a_change_does_not_raise():
    """A view (or detached alias) made after the replayed forward shares the weight's
    counter from then on, with the same value: the backward runs, with eager mode's bits."""
    w = ag.Tensor(np.random.default_rng(3).standard_normal((4, 4)) * 0.5, requires_grad=True)
    step, x = _replayed_loop_over(w)
    w.grad = x.grad = None
    out = step(x)
    view, alias = w.detach()[1:], w.detach()
    assert type(w._version) is not int  # shared now
    out.backward()
    got = (x.grad.numpy().tobytes(), w.grad.numpy().tobytes())
    w.grad = x.grad = None
    h = x
    for _ in range(4):
        h = ag.tanh(ag.matmul(h, w))
    h.sum().backward()
    assert got == (x.grad.numpy().tobytes(), w.grad.numpy().tobytes())
    assert view.shape == (3, 4) and alias.shape == (4, 4)


# ---- 3. the lean engine --------------------------------------------------------------------

def _lean_mlp(state, x, y, layers):
    from benchmarks import lean_engine
    params = {k: lean_engine.Node(np.array(v)) for k, v in state.items()}
    loss = lean_engine.mlp_loss(params, lean_engine.Node(x), y, layers)
    loss.backward()
    return loss.item(), {k: p.grad for k, p in params.items()}


@pytest.mark.parametrize("sizes, batch", [((5, 9, 9, 4), 6), ((3, 2), 1), ((4, 4), 8)])
def test_the_lean_engine_against_torch_in_float64(sizes, batch):
    """Repeated targets, a batch of one, a single layer; against torch.nn.functional."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    import nn
    rng = np.random.default_rng(sum(sizes) + batch)
    model = nn.MLP(list(sizes), activation="tanh", rng=rng, dtype=np.float64)
    state = model.state_dict()
    x = rng.standard_normal((batch, sizes[0]))
    y = np.zeros(batch, dtype=np.int64) if batch > 2 else rng.integers(0, sizes[-1], batch)
    loss, grads = _lean_mlp(state, x, y, len(sizes) - 1)

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
    a = torch.tensor(x)
    for i in range(len(sizes) - 1):
        a = F.linear(a, tp[f"layers.{i}.weight"], tp[f"layers.{i}.bias"])
        if i < len(sizes) - 2:
            a = torch.tanh(a)
    tl = F.cross_entropy(a, torch.tensor(y))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-13)
    for k, g in grads.items():
        want = tp[k].grad.numpy()
        assert g.dtype == np.float64 and g.shape == want.shape
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-14)


def test_the_lean_engine_sums_a_node_that_feeds_two_others():
    """A diamond (a tanh read by two layers whose outputs are added) and a leaf read twice:
    the sort and the sum of gradients against torch."""
    torch = pytest.importorskip("torch")
    from benchmarks import lean_engine as le
    rng = np.random.default_rng(2)
    w1, b1, w2, b2 = (rng.standard_normal(s) for s in ((4, 3), (4,), (2, 4), (2,)))
    x = rng.standard_normal((5, 3))
    y = np.array([0, 1, 1, 0, 1])
    nw1, nb1, nw2, nb2 = (le.Node(a.copy()) for a in (w1, b1, w2, b2))
    h = le.tanh(le.linear(le.Node(x), nw1, nb1))
    z1, z2 = le.linear(h, nw2, nb2), le.linear(h, nw2, nb2)
    z = le.Node(z1.data + z2.data, (z1, z2), lambda g: ((z1, g), (z2, g)))
    loss = le.mean_cross_entropy(z, y)
    loss.backward()

    tw1, tb1, tw2, tb2 = (torch.tensor(a, requires_grad=True) for a in (w1, b1, w2, b2))
    th = torch.tanh(torch.tensor(x) @ tw1.T + tb1)
    tz = (th @ tw2.T + tb2) + (th @ tw2.T + tb2)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(y))
    tl.backward()
    assert loss.item() == pytest.approx(tl.item(), rel=1e-13)
    for n, t in ((nw1, tw1), (nb1, tb1), (nw2, tw2), (nb2, tb2)):
        np.testing.assert_allclose(n.grad, t.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_the_mlp_benchmarks_references_agree_in_float32():
    """The benchmark's own agreement check over autograd_core, its replay, the lean engine
    and the floor (float32 tolerances), with the lean engine's gradients float32 arrays."""
    import nn
    from benchmarks import _steps, mlp, numpy_reference
    rng = np.random.default_rng(mlp.SEED)
    model = nn.MLP(list(mlp.SIZES), activation="tanh", rng=rng)
    state = model.state_dict()
    x = rng.standard_normal((mlp.BATCH, mlp.SIZES[0])).astype(np.float32)
    y = rng.integers(0, mlp.SIZES[-1], mlp.BATCH)
    lean = mlp._lean(state, x, y)
    floor = _steps.numpy_by_hand(mlp.FLOOR, numpy_reference.mlp_loss_grad, state, x, y)
    impls = [mlp._ours(model, x, y), mlp._ours(model, x, y, replayed=True), lean, floor]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _steps.check_agreement("mlp", impls, floor)
    loss, grads = lean.result()
    _, ours = impls[0].result()
    assert set(grads) == set(state)
    for k, g in grads.items():
        assert type(g) is np.ndarray and g.dtype == np.float32 and g.shape == state[k].shape
        np.testing.assert_allclose(g, ours[k], rtol=1e-4, atol=1e-5 * np.abs(ours[k]).max())
