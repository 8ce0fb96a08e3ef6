"""Review 19e: hostile probes of the last hour's changes: the rows of a batched node gathered at
its step (replay_sweep._row_extractions, gathered_rows, kind "row"), stack as one concatenate,
2-D products through the array's dot, Sum through the array's sum, an accumulator started at
0.0 (batching._zero_start) and the recomputed values of reassociated sums. Every replayed call
is compared with eager mode in float64 (loss and gradients, 1e-12 relative scaled by the
largest gradient).

Each problem the review found has its test here, above the line; below it, what held."""
import threading

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_codegen
from autograd_core.ops.joining import stack_arrays
from autograd_core.ops.linalg import product
from autograd_core.ops.unary import Tanh

from tests.autograd_core.replay_checks import assert_same, check, param, run

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.replayer.ReplayWarning")

B, I, H = 3, 4, 5


def _plan(step):
    plans = [p for p in step.plans.values() if not isinstance(p, str) and p.confirmed]
    assert len(plans) == 1
    return plans[0]


def _kinds(step):
    return [s[3] for s in _plan(step).steps]


@pytest.fixture(params=["generated", "loops"])
def backward_code(request, monkeypatch):
    """Both ways a confirmed plan's backward runs: generated code, and Plan._sweep."""
    if request.param == "loops":
        monkeypatch.setattr(replay_codegen, "compile_backward", lambda *a: None)
    return request.param


# ---- problems ------------------------------------------------------------------------------
def test_rows_of_mixed_dtypes_keep_the_dtype_of_the_first_gradient_to_arrive(backward_code):
    """x (float32) is read by x[0..T-1]; row 0's gradient is float32 (through astype), the
    others' float64. Eager mode (and the zero buffer the rows were added into before) takes
    the dtype of the first gradient to arrive, the newest row's: float64. gathered_rows took
    row 0's, float32, so the float64 parameter's gradient was rounded to float32 (1e-8
    relative)."""
    rng = np.random.default_rng(1)
    T = 5
    p, w = param(rng, T, H), param(rng, H)

    def fn():
        x = p.astype(np.float32) * 2.0
        h, loss = ag.zeros((H,)), 0.0
        for t in range(T):
            a = x[t].astype(np.float64) if t == 0 else x[t]
            h = ag.tanh(a + h * w)
            loss = loss + (h * h).sum()
        return loss

    step = check(fn, [p, w])
    assert _plan(step).batched and "row" in _kinds(step)


@pytest.mark.parametrize("a, b", [
    (np.random.default_rng(0).standard_normal((17, 66))[:, ::2],
     np.random.default_rng(1).standard_normal((9, 33)).astype(np.float32).T),
    (np.array([[-1.0]]), np.array([[False]])),
    (np.array([[-1.0]]), np.array([[0.0]])),
    (np.array([[-1.0]], np.float32), np.array([[0.0]], np.float32)),
])
def test_a_2d_product_has_the_bits_of_np_matmul(a, b):
    """a.dot(b) rounds otherwise than np.matmul for operands of two dtypes (strided ones),
    and gives -0.0 for [[-1.]] @ [[0.]] where np.matmul gives 0.0 (so 1 / (x @ w) was -inf
    where numpy gives inf)."""
    want = np.matmul(a, b)
    got = product(a, b)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    if a.dtype != bool and b.dtype != bool:
        t = ag.matmul(ag.Tensor(a), ag.Tensor(b)).numpy()
        assert t.dtype == want.dtype and t.tobytes() == want.tobytes()


def test_a_reassociated_float64_sum_at_large_magnitude_stays_within_1e12():
    """(p + c) + q against (p + q) + c at a magnitude of 1e6 differs by 1e-10 relative: the
    batched values are checked against the recorded ones to 1e-12 of their size in float64,
    so this graph replays unbatched, as eager mode computes it."""
    rng = np.random.default_rng(3)
    T = 6
    u = ag.Tensor(np.eye(H) * 1e6, requires_grad=True)
    w = ag.Tensor(-np.ones((H, H)) * 1e6 / H, requires_grad=True)
    b = ag.Tensor(np.full(H, 0.3) + rng.standard_normal(H) * 0.01, requires_grad=True)

    def fn(xs):
        h, loss = ag.zeros((B, H)), 0.0
        for t in range(T):
            h = ag.tanh(xs[t] @ u + (h * 0.0 + 1.0) @ w + b)
            loss = loss + (h * h).sum()
        return loss

    argsets = [(1.0 + rng.standard_normal((T, B, H)) * 1e-7,) for _ in range(3)]
    check(fn, [u, w, b], argsets, calls=6)


# ---- what held -----------------------------------------------------------------------------
def _projected(T, dtype=np.float64):
    """An RNN whose input projection is one product read by xp[t]: user extractions."""
    rng = np.random.default_rng(T)
    u, w, b = param(rng, I, H, dtype=dtype), param(rng, H, H, dtype=dtype), param(rng, H, dtype=dtype)

    def fn(xs):
        xp = xs @ u
        h, loss = ag.zeros((B, H), dtype=dtype), 0.0
        for t in range(T):
            h = ag.tanh(xp[t] + h @ w + b)
            loss = loss + (h * h).sum()
        return loss

    return fn, [u, w, b], [(rng.standard_normal((T, B, I)).astype(dtype),) for _ in range(3)]


@pytest.mark.parametrize("T", range(1, 9))
def test_rows_for_every_short_loop(T, backward_code):
    fn, params, argsets = _projected(T)
    step = check(fn, params, argsets)
    if T >= 3:
        assert _plan(step).batched and "row" in _kinds(step)


def test_rows_of_a_long_loop(backward_code):
    rng = np.random.default_rng(7)
    T = 2000
    u, w, b = param(rng, I, H), param(rng, H, H), param(rng, H)

    def fn(xs):
        h, loss = ag.zeros((1, H)), 0.0
        for t in range(T):
            h = ag.tanh(xs[t] @ u + h @ w + b)
            loss = loss + (h * h).sum()
        return loss

    step = check(fn, [u, w, b], [(rng.standard_normal((T, 1, I)),)], calls=3)
    assert _kinds(step).count("row") >= T - 1


@pytest.mark.parametrize("case", ["1-D x (0-d rows)", "nested rows", "another reader",
                                  "negative index", "slice", "where and zero branch",
                                  "a step's result unused"])
def test_rows_in_hostile_forms(case, backward_code):
    rng = np.random.default_rng(12)
    T = 5
    if case == "1-D x (0-d rows)":
        p, w = param(rng, T), param(rng)
    elif case == "nested rows":
        p, w = param(rng, T, T, H), param(rng, H)
    else:
        p, w = param(rng, T, H), param(rng, H)
    mask = np.array([True, False, True, False, True])

    def fn():
        y = ag.exp(p) * 0.5
        if case == "nested rows":
            h, loss = ag.zeros((H,)), 0.0
            for t in range(T):
                yt = y[t]
                for j in range(T):
                    h = ag.tanh(yt[j] + h * w)
                    loss = loss + (h * h).sum()
            return loss
        h, loss = ag.zeros(w.shape), 0.0
        for t in range(T):
            if case == "negative index":
                r = y[t - T]
            elif case == "slice":
                r = y[t:t + 1][0]
            elif case == "where and zero branch":
                r = ag.where(np.full(w.shape, mask[t]), y[t] * (0.0 if t == 2 else 1.0), h)
            else:
                r = y[t]
            h2 = ag.tanh(r + h * w)
            if case != "a step's result unused" or t != 3:
                h = h2
            loss = loss + (h * h).sum()
        if case == "another reader":
            loss = loss + (y * y).sum()
        return loss

    step = check(fn, [p, w])
    assert _plan(step).batched


def test_replayed_rows_with_retain_graph_twice_partial_grad_and_a_failing_rule(monkeypatch):
    fn, params, argsets = _projected(6)
    step = check(fn, params, argsets, calls=3)
    want = run(fn, params, argsets[0])
    for p in params:
        p.grad = None
    out = step(*argsets[0])
    out.backward(retain_graph=True)
    out.backward()
    for p, w in zip(params, want[1]):
        np.testing.assert_allclose(p.grad.numpy(), 2 * w, rtol=1e-12, atol=1e-12)
    (gw,) = ag.grad(step(*argsets[1]), [params[1]])
    np.testing.assert_allclose(gw.numpy(), run(fn, params, argsets[1])[1][1], rtol=1e-12,
                               atol=1e-12)
    # a rule that raises partway through a replayed backward leaves nothing behind: tanh's,
    # put in place before the function is replayed (a rule replaced after that records the
    # plan anew, and one of an op that only batching's rewrites make, as the chain's stack,
    # is never called by eager mode), raising when asked; the other ops still batch
    failing = []

    def flaky(g, out, xp, rule=Tanh.backward):
        if failing:
            failing.clear()
            raise RuntimeError("boom")
        return rule(g, out, xp)

    with monkeypatch.context() as m:
        m.setattr(Tanh, "backward", staticmethod(flaky))
        flaky_step = check(fn, params, argsets, calls=3)
        assert _plan(flaky_step).batched and "row" in _kinds(flaky_step)
        failing.append(1)
        with pytest.raises(RuntimeError, match="boom"):
            flaky_step(*argsets[2]).backward()
        assert not failing  # it ran, inside the replayed backward
        assert_same(run(flaky_step, params, argsets[1]), run(fn, params, argsets[1]))
    assert_same(run(step, params, argsets[1]), run(fn, params, argsets[1]))


def test_threads_sharing_one_replay_with_rows():
    """Each result is eager mode's, or its backward raises that a later call overwrote it."""
    fn, params, argsets = _projected(6)
    step = check(fn, params, argsets, calls=3)
    want = [run(fn, params, a) for a in argsets]
    failures = []

    def worker(k):
        for j in range(6):
            n = (k + j) % len(argsets)
            out = step(*argsets[n])
            try:  # another thread's call in between: the documented error, never wrong values
                got = ag.grad(out, params)
            except RuntimeError as e:
                if "overwrote" not in str(e):
                    failures.append(e)
                continue
            try:
                np.testing.assert_allclose(out.numpy(), want[n][0], rtol=1e-12)
                for g, w in zip(got, want[n][1]):
                    np.testing.assert_allclose(g.numpy(), w, rtol=1e-12, atol=1e-12)
            except AssertionError as e:  # pragma: no cover - reported below
                failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@pytest.mark.parametrize("name, arrays", [
    ("0-d", [np.float64(1.0), np.array(-0.0)]),
    ("empty rows", [np.zeros((0, 3))] * 2),
    ("empty 1-D", [np.zeros(0)] * 3),
    ("mixed dtypes", [np.ones(3, np.float32), np.ones(3, np.int64), np.ones(3, bool)]),
    ("float16 and float64", [np.ones(3, np.float16) / 3, np.ones(3) / 3]),
    ("strided", [np.arange(12.).reshape(3, 4)[:, ::2], np.arange(12.).reshape(3, 4).T[:3, :2]]),
    ("broadcast", [np.broadcast_to(np.arange(3.), (4, 3)), np.ones((4, 3))]),
    ("one", [np.arange(6.).reshape(2, 3)]),
    ("fortran", [np.asfortranarray(np.arange(6.).reshape(2, 3))] * 2),
])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack_has_the_bits_of_np_stack(name, arrays, axis):
    if axis == 1 and np.ndim(arrays[0]) == 0:
        axis = 0
    want = np.stack(arrays, axis=axis)
    got = stack_arrays(arrays, axis)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    t = ag.stack([ag.Tensor(np.asarray(a)) for a in arrays], axis=axis).numpy()
    assert t.dtype == want.dtype and t.tobytes() == want.tobytes()


def test_stack_of_mismatched_shapes_raises_the_engine_error():
    with pytest.raises(ValueError, match=r"stack: all tensors must have the same shape"):
        ag.stack([ag.Tensor(np.ones(2)), ag.Tensor(np.ones(1)), ag.Tensor(np.ones(3))])
    with pytest.raises(ValueError, match="stack: need at least one tensor"):
        ag.stack([])


@pytest.mark.parametrize("da", [np.bool_, np.int8, np.int64, np.float16, np.float32, np.float64])
@pytest.mark.parametrize("db", [np.bool_, np.int32, np.float16, np.float32, np.float64])
def test_product_has_np_matmul_bits_over_dtypes_layouts_and_sizes(da, db):
    rng = np.random.default_rng(5)
    for m, k, n in [(3, 4, 5), (0, 4, 5), (3, 0, 5), (17, 33, 9), (1, 1, 1), (2, 1, 3)]:
        a = rng.choice([-1.0, -0.0, 0.0, 2.5, 3.0], size=(m, 2 * k)).astype(da)
        b = rng.choice([-1.0, -0.0, 0.0, 0.5, 7.0], size=(n, k)).astype(db)
        for x, y in [(a[:, :k], b.T), (a[:, ::2], np.ascontiguousarray(b.T)),
                     (np.asfortranarray(a[:, :k]), b.T)]:
            want = np.matmul(x, y)
            got = product(x, y)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (m, k, n)


def test_matmul_of_mismatched_shapes_raises_the_engine_error():
    with pytest.raises(ValueError, match="matmul"):
        ag.matmul(ag.Tensor(np.ones((2, 3))), ag.Tensor(np.ones((4, 5))))


@pytest.mark.parametrize("array", [np.array([True, False, True]), np.arange(5, dtype=np.int8),
                                   np.arange(5, dtype=np.uint16), np.zeros((0, 3)),
                                   np.ones((2, 0), np.float16), np.ones((2, 3), np.float16) / 10])
@pytest.mark.parametrize("axis", [None, 0, -1, ()])
@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_has_the_dtype_and_bits_of_np_sum(array, axis, keepdims):
    want = np.asarray(np.sum(array, axis=axis, keepdims=keepdims))
    got = ag.sum(ag.Tensor(array), axis=axis, keepdims=keepdims).numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def _accumulating(start, dtype=np.float64, term=lambda h: (h * h).sum(), after=lambda l: l):
    rng = np.random.default_rng(21)
    T = 6
    u, w, b = param(rng, I, H, dtype=dtype), param(rng, H, H, dtype=dtype), param(rng, H, dtype=dtype)

    def fn(xs):
        h, loss = ag.zeros((B, H), dtype=dtype), start
        for t in range(T):
            h = ag.tanh(xs[t] @ u + h @ w + b)
            loss = loss + term(h)
        return after(loss)

    return fn, [u, w, b], [(rng.standard_normal((T, B, I)).astype(dtype),) for _ in range(3)]


@pytest.mark.parametrize("case", ["-0.0", "int 0", "zeros tensor", "1.0", "not the loss",
                                  "a vector accumulator"])
def test_accumulators_started_at_zero(case):
    start = {"-0.0": -0.0, "int 0": 0, "zeros tensor": ag.zeros(()), "1.0": 1.0}.get(case, 0.0)
    kw = {}
    if case == "not the loss":
        kw["after"] = lambda l: ag.exp(l * 0.1)
    if case == "a vector accumulator":
        kw = dict(term=lambda h: h, after=lambda l: (l * l).sum())
    fn, params, argsets = _accumulating(start, **kw)
    step = check(fn, params, argsets)
    assert _plan(step).batched


def test_float16_terms_after_0_0_replay_as_eager_mode():
    fn, params, argsets = _accumulating(0.0, dtype=np.float16)
    step = ag.replay(fn)
    for k in range(4):
        got, want = run(step, params, argsets[k % 3]), run(fn, params, argsets[k % 3])
        assert got[0].dtype == want[0].dtype
        for g, w in zip(got[1], want[1]):
            assert g.dtype == w.dtype
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64),
                                       rtol=2e-2, atol=2e-2)


def test_negative_zero_terms_accumulated_from_0_0():
    rng = np.random.default_rng(8)
    u = param(rng, 3)

    def fn(xs):
        loss = 0.0
        for t in range(5):
            loss = loss + ag.minimum((u * xs[t]).sum(), -0.0) * 0.0
        return loss

    check(fn, [u], [(np.abs(rng.standard_normal((5, 3))),)])
