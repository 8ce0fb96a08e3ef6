"""Review 21: hostile tests of five changes -- sigmoid's quiet exp (quiet_exp.py), record()'s one
per-thread recording value (grad_mode.sync_recording), the sweep's grad mode set without a
context manager, nn.cross_entropy's single target check, and replay's byte-first comparison of
arrays saved from outside the function (replay_compare.Recorded)."""
import asyncio
import contextvars
import gc
import itertools
import threading
import warnings
import weakref

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core import function
from autograd_core.grad_mode import _state
from autograd_core.quiet_exp import _QUIET, exp_quietly
from autograd_core.replay_compare import Recorded as _Recorded
from autograd_core.replayer import ReplayWarning


def _ref_sigmoid(x):
    """float64 reference, by the branch-stable formula."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        pos = 1.0 / (1.0 + np.exp(-np.abs(x)))
        return np.where(x >= 0, pos, 1.0 - pos)


def _central_fd(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (f(xp) - f(xm)) / (2 * eps)
    return g


# ---- 1. quiet exp / sigmoid -------------------------------------------------------------------
SPECIAL = [0.0, -0.0, 1.0, -1.0, 10.0, -10.0, 30.0, -30.0, 80.0, -80.0, 700.0, -700.0, 1e4, -1e4,
           np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_values_and_gradients_per_float_dtype_without_warnings(dtype):
    x = np.array(SPECIAL, dtype=dtype)
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = ag.Tensor(x, requires_grad=True)
        y = ag.sigmoid(t)
        y.backward(np.ones_like(x))
    assert np.geterr() == before
    assert y.dtype == dtype and t.grad.dtype == dtype
    ref = _ref_sigmoid(x.astype(np.float64))
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-14}[dtype]
    np.testing.assert_allclose(y.numpy().astype(np.float64), ref, rtol=tol, atol=tol)
    ref_grad = ref * (1 - ref)
    np.testing.assert_allclose(t.grad.numpy().astype(np.float64), ref_grad, rtol=10 * tol,
                               atol=tol)
    assert np.isnan(y.numpy()[-1]) and np.isnan(t.grad.numpy()[-1])
    assert y.numpy()[SPECIAL.index(np.inf)] == 1 and y.numpy()[SPECIAL.index(-np.inf)] == 0


def test_sigmoid_gradient_matches_central_differences_float64():
    x = np.array([-40.0, -7.5, -1.0, -0.0, 0.3, 2.0, 9.0, 36.0])
    t = ag.Tensor(x, requires_grad=True)
    (ag.sigmoid(t) * ag.Tensor(np.arange(1.0, 9.0))).sum().backward()
    fd = _central_fd(lambda v: float((_ref_sigmoid(v) * np.arange(1.0, 9.0)).sum()), x)
    np.testing.assert_allclose(t.grad.numpy(), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("x", [np.array([-3, 0, 5]), np.array([True, False]), np.int32(-2),
                               np.float32(-100.0), np.zeros((0, 3)), np.zeros((2, 0), np.float16)])
def test_sigmoid_of_ints_bools_0d_and_empty(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = ag.sigmoid(x)
    a = np.asarray(x)
    assert y.shape == a.shape
    expect_dtype = a.dtype if a.dtype.kind == "f" else np.float64
    assert y.dtype == expect_dtype
    np.testing.assert_allclose(y.numpy().astype(np.float64), _ref_sigmoid(a), rtol=1e-6)


def test_quiet_exp_inside_errstate_raise_keeps_invalid_and_divide_raising():
    with np.errstate(all="raise"):
        state = np.geterr()
        y = ag.sigmoid(np.array([1e4, -1e4, 0.0]))
        assert np.geterr() == state
        np.testing.assert_array_equal(y.numpy(), [1.0, 0.0, 0.5])
        with pytest.raises(FloatingPointError, match="invalid"):
            np.array([0.0]) / np.array([0.0])
        with pytest.raises(FloatingPointError, match="overflow"):
            np.exp(np.array([1e4]))  # plain exp outside sigmoid still raises
        with np.errstate(over="warn"):
            ag.sigmoid(np.array([-1e4]))
            with pytest.warns(RuntimeWarning, match="overflow"):
                np.exp(np.array([1e4]))
    assert np.geterr() == {"divide": "warn", "over": "warn", "under": "ignore",
                           "invalid": "warn"}


def test_quiet_exp_with_call_and_log_modes():
    calls = []
    cb = lambda kind, flag: calls.append(kind)  # noqa: E731
    with np.errstate(all="call", call=cb):
        ag.sigmoid(np.array([1e4, -1e4], np.float32))
        assert calls == []
        assert np.geterrcall() is cb
        np.array([0.0]) / np.array([0.0])
        assert calls == ["invalid value"]

    class Log:
        def __init__(self):
            self.lines = []

        def write(self, msg):
            self.lines.append(msg)

    log = Log()
    with np.errstate(all="log", call=log):
        ag.sigmoid(np.array([1e4, -1e4]))
        assert log.lines == []
        np.array([1.0]) / np.array([0.0])
        assert len(log.lines) == 1 and "divide" in log.lines[0]
        assert np.geterrcall() is log
    assert np.geterrcall() is None


def test_quiet_exp_restores_the_context_variable_after_an_exception():
    from numpy._core._ufunc_config import _extobj_contextvar
    with np.errstate(divide="raise"):
        before = _extobj_contextvar.get()
        with pytest.raises(TypeError):
            exp_quietly(np.arange(3))  # an int array cannot hold exp's result in place
        assert _extobj_contextvar.get() is before
        assert np.geterr()["divide"] == "raise"


def test_quiet_exp_in_threads_each_with_their_own_errstate():
    barrier, errors, seen = threading.Barrier(4), [], {}
    modes = ["raise", "warn", "ignore", "call"]

    def work(k, mode):
        try:
            kw = {"call": lambda *a: None} if mode == "call" else {}
            with np.errstate(all=mode, **kw), warnings.catch_warnings():
                warnings.simplefilter("error")
                barrier.wait(5)
                state = np.geterr()
                for _ in range(300):
                    y = ag.sigmoid(np.array([1e4, -1e4, 1.0]))
                    assert np.geterr() == state
                seen[k] = (np.geterr(), y.numpy().copy())
            assert np.geterr()["over"] == "warn"  # each thread's default again
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k, m)) for k, m in enumerate(modes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k, mode in enumerate(modes):
        assert seen[k][0] == dict.fromkeys(("divide", "over", "under", "invalid"), mode)
        np.testing.assert_allclose(seen[k][1], _ref_sigmoid([1e4, -1e4, 1.0]))


def test_quiet_exp_in_copied_contexts_and_asyncio_tasks():
    def in_context():
        with np.errstate(all="raise"):
            y = ag.sigmoid(np.array([-1e4]))
            return np.geterr(), float(y.numpy()[0])

    state, value = contextvars.copy_context().run(in_context)
    assert state["over"] == "raise" and value == 0.0
    assert np.geterr()["over"] == "warn"

    async def task(mode):
        with np.errstate(all=mode):
            await asyncio.sleep(0)
            y = ag.sigmoid(np.array([-1e4, 1e4]))
            await asyncio.sleep(0)
            return np.geterr()["over"], y.numpy().tolist()

    async def main():
        return await asyncio.gather(task("raise"), task("ignore"), task("warn"))

    result = {}

    def run_loop():  # a thread of its own: another test may have left a loop running here
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result["out"] = asyncio.run(main())

    runner = threading.Thread(target=run_loop)
    runner.start()
    runner.join()
    out = result["out"]
    assert out == [("raise", [0.0, 1.0]), ("ignore", [0.0, 1.0]), ("warn", [0.0, 1.0])]
    assert np.geterr()["over"] == "warn"


def test_quiet_exp_cache_stays_bounded_under_many_distinct_states():
    for k in range(100):
        with np.errstate(all="raise", call=lambda *a, k=k: None):
            y = ag.sigmoid(np.array([-1e4, 1e4]))
            np.testing.assert_array_equal(y.numpy(), [0.0, 1.0])
    assert len(_QUIET) <= 33


def test_errcall_object_is_released_after_its_errstate_block():
    class Log:
        def write(self, msg):
            pass

    log = Log()
    ref = weakref.ref(log)
    with np.errstate(all="log", call=log):
        ag.sigmoid(np.array([1e4, -1e4]))
    del log
    gc.collect()
    assert ref() is None


# ---- 2. one per-thread recording value ----------------------------------------------------------
def _expected_recording():
    return (_state.step, _state.anomaly) if _state.enabled else None


def _probe(x):
    y = x * 2.0
    assert _state.recording == _expected_recording()
    assert y.requires_grad == ag.is_grad_enabled()
    if y.requires_grad:
        assert y.step == ag.current_step()
    return y


SWITCHES = {
    "no_grad": lambda: ag.no_grad(),
    "enable_grad": lambda: ag.enable_grad(),
    "set_false": lambda: ag.set_grad_enabled(False),
    "step": lambda: ag.step_scope(11),
    "step2": lambda: ag.step_scope("t2"),
    "anomaly": lambda: ag.detect_anomaly(),
}


@pytest.mark.parametrize("order", list(itertools.permutations(
    ["no_grad", "enable_grad", "step", "anomaly"])) + [("step", "no_grad", "step2", "set_false")])
def test_every_nesting_order_keeps_recording_in_sync(order):
    x = ag.Tensor(np.ones(2), requires_grad=True)
    start = _state.recording

    def nest(k):
        _probe(x)
        if k == len(order):
            return
        with SWITCHES[order[k]]():
            nest(k + 1)
            _probe(x)
        _probe(x)

    nest(0)
    # and again, unwound by an exception from the innermost level
    with pytest.raises(ZeroDivisionError):
        def boom(k):
            if k == len(order):
                1 / 0
            with SWITCHES[order[k]]():
                _probe(x)
                boom(k + 1)
        boom(0)
    assert _state.recording == start == (None, False)
    assert _probe(x).requires_grad


def test_decorators_keep_recording_in_sync_also_on_error():
    x = ag.Tensor(np.ones(2), requires_grad=True)

    @ag.no_grad
    def bare():
        return _probe(x)

    @ag.no_grad()
    def called():
        return inner()

    @ag.enable_grad
    def inner():
        with ag.step_scope(3):
            return _probe(x)

    @ag.no_grad
    def fails():
        _probe(x)
        raise KeyError("x")

    assert not bare().requires_grad
    y = called()
    assert y.requires_grad and y.step == 3
    with pytest.raises(KeyError):
        fails()
    with ag.no_grad():
        assert inner().requires_grad
        assert _state.recording is None
    assert _state.recording == (None, False)


def test_generator_suspended_inside_no_grad_and_closed_early():
    x = ag.Tensor(np.ones(2), requires_grad=True)

    def gen():
        with ag.no_grad(), ag.step_scope(4):
            yield _probe(x)
            yield _probe(x)

    g = gen()
    assert not next(g).requires_grad
    _probe(x)  # the mode leaks to the caller while suspended (as in torch); still in sync
    g.close()  # GeneratorExit unwinds the with-blocks
    assert _state.recording == (None, False)
    assert _probe(x).requires_grad and _probe(x).step is None
    assert [t.requires_grad for t in gen()] == [False, False]
    assert _state.recording == (None, False)


def test_many_threads_toggling_their_own_mode():
    x = ag.Tensor(np.ones(3), requires_grad=True)
    errors, barrier = [], threading.Barrier(6)

    def work(k):
        try:
            rng = np.random.default_rng(k)
            barrier.wait(5)
            for _ in range(200):
                names = rng.choice(list(SWITCHES), size=3)
                with SWITCHES[names[0]](), SWITCHES[names[1]](), SWITCHES[names[2]]():
                    _probe(x)
                assert _state.recording == (None, False)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    with np.errstate(all="ignore"):
        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert _state.recording == (None, False)


def test_a_new_thread_starts_recording_even_when_the_parent_is_in_no_grad():
    x = ag.Tensor(np.ones(2), requires_grad=True)
    seen = {}

    def child():
        seen["rec"] = _state.recording
        seen["y"] = (x * 2.0).requires_grad

    with ag.no_grad(), ag.step_scope(5):
        t = threading.Thread(target=child)
        t.start()
        t.join()
    assert seen == {"rec": (None, False), "y": True}


def test_recurrent_layer_inside_no_grad_records_nothing_and_steps_outside():
    rnn = nn.RNN(3, 4, rng=np.random.default_rng(0), dtype=np.float64)
    xs = ag.Tensor(np.random.default_rng(1).normal(size=(5, 2, 3)))
    with ag.no_grad():
        out, h = rnn(xs)
        assert _state.recording is None
    assert not out.requires_grad and not h.requires_grad and out._op is None
    assert _state.recording == (None, False)
    out2, h2 = rnn(xs)
    np.testing.assert_array_equal(out.numpy(), out2.numpy())
    assert h2.requires_grad
    assert _steps_in(h2) >= {0, 1, 2, 3, 4}
    with ag.step_scope("outer"):
        _, h3 = rnn(xs)
        assert _state.recording == ("outer", False)
    assert _steps_in(h3) >= {0, 1, 2, 3, 4, "outer"}  # the layer's steps nest inside
    assert _state.recording == (None, False)


def _steps_in(t):
    seen, stack, steps = set(), [t], set()
    while stack:
        n = stack.pop()
        if id(n) in seen or n._op is None:
            continue
        seen.add(id(n))
        steps.add(n.step)
        stack.extend(n._inputs)
    return steps


def test_anomaly_message_names_the_step_after_nested_switches():
    x = ag.Tensor(np.array([0.0, 1.0]), requires_grad=True)

    with np.errstate(all="ignore"), pytest.raises(ag.AnomalyError) as info:
        with ag.detect_anomaly():
            with ag.step_scope(6):
                with ag.no_grad():
                    ag.log(x)
                    with ag.enable_grad():
                        y = ag.log(x)
            assert y.step == 6
            (y * 2.0).sum().backward()
    assert "time step 6" in str(info.value)
    assert _state.recording == (None, False)


def test_replay_recorded_and_replayed_inside_step_scope_and_anomaly_mode():
    w = ag.Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    fn = ag.replay(lambda a: (ag.tanh(a * w) * w).sum())
    a = np.array([1.0, 2.0, 3.0])
    w.grad = None
    (ag.tanh(ag.Tensor(a) * w) * w).sum().backward()
    eager = w.grad.numpy().copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplayWarning)
        for k in range(4):
            with ag.step_scope(k):
                w.grad = None
                out = fn(a)
                assert out.step == k
                out.backward()
                np.testing.assert_allclose(w.grad.numpy(), eager, rtol=1e-12)
            assert _state.recording == (None, False)
    with pytest.warns(ReplayWarning, match="anomaly"), ag.detect_anomaly(), ag.step_scope(9):
        w.grad = None
        out = fn(a)
        assert out.step == 9 and _state.recording == (9, True)
        out.backward()
    np.testing.assert_allclose(w.grad.numpy(), eager, rtol=1e-12)
    with ag.no_grad(), pytest.warns(ReplayWarning, match="grad mode is off"):
        assert not fn(a).requires_grad


# ---- 3. the sweep's grad mode -----------------------------------------------------------------
def _cube():
    x = ag.Tensor(np.array([1.5, -2.0]), requires_grad=True)
    return x, (x * x * x).sum()


@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt])
@pytest.mark.parametrize("outer", [True, False])
@pytest.mark.parametrize("create_graph", [True, False])
def test_a_hook_that_raises_restores_grad_mode(exc, outer, create_graph):
    x, y = _cube()
    seen = []

    def hook(g):
        seen.append(ag.is_grad_enabled())
        raise exc("from hook")

    x.register_hook(hook)
    with ag.set_grad_enabled(outer):
        with pytest.raises(exc):
            y.backward(create_graph=create_graph)
        assert ag.is_grad_enabled() is outer
        assert _state.recording == ((None, False) if outer else None)
    assert seen == [create_graph]
    assert _state.recording == (None, False)


def test_a_hook_that_toggles_grad_mode_does_not_leak_it():
    x, y = _cube()

    def hook(g):
        ag.set_grad_enabled(True).__enter__()  # never exited
        ag.step_scope(8).__enter__()  # step scopes are not the sweep's business ...
        return g

    x.register_hook(hook)
    with ag.no_grad():
        y.backward()
        assert not ag.is_grad_enabled() and _state.recording is None
    assert _state.step == 8 and _state.recording == (8, False)
    _state.step = None  # ... so undo the leaked scope by hand
    from autograd_core.grad_mode import sync_recording
    sync_recording()
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.array([1.5, -2.0]) ** 2)


def _sigmoid_second_derivative_check(x, g, gg):
    s = _ref_sigmoid(x.numpy())
    np.testing.assert_allclose(g.numpy(), s * (1 - s), rtol=1e-12)
    fd = _central_fd(lambda v: float((_ref_sigmoid(v) * (1 - _ref_sigmoid(v))).sum()),
                     x.numpy())
    np.testing.assert_allclose(gg.numpy(), fd, rtol=1e-6, atol=1e-9)


def test_double_backward_with_grad_and_backward():
    x = ag.Tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True)
    (g,) = ag.grad(ag.sigmoid(x).sum(), [x], create_graph=True)
    assert ag.is_grad_enabled() and g.requires_grad
    (gg,) = ag.grad(g.sum(), [x])
    _sigmoid_second_derivative_check(x, g, gg)
    y = ag.sigmoid(x).sum()
    with ag.no_grad():  # backward(create_graph=True) inside no_grad still builds the graph
        y.backward(create_graph=True)
        assert not ag.is_grad_enabled() and _state.recording is None
    g = x.grad
    assert g.requires_grad
    x.grad = None
    g.sum().backward()
    _sigmoid_second_derivative_check(x, g, x.grad)
    assert _state.recording == (None, False)


def test_grad_with_create_graph_inside_no_grad_keeps_the_graph():
    x = ag.Tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True)
    y = ag.sigmoid(x).sum()
    with ag.no_grad():
        (g,) = ag.grad(y, [x], create_graph=True)
        assert not ag.is_grad_enabled()
    assert g.requires_grad
    (gg,) = ag.grad(g.sum(), [x])
    _sigmoid_second_derivative_check(x, g, gg)


def test_backward_inside_a_hook_restores_the_outer_sweep_mode():
    x, y = _cube()
    z = ag.Tensor(np.array([2.0]), requires_grad=True)
    modes = []

    def hook(g):
        modes.append(ag.is_grad_enabled())
        (z * z).sum().backward()  # an inner sweep, create_graph False
        modes.append(ag.is_grad_enabled())
        return g

    x.register_hook(hook)
    y.backward(create_graph=True)
    assert modes == [True, True]
    assert x.grad.requires_grad
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.array([1.5, -2.0]) ** 2)
    np.testing.assert_allclose(z.grad.numpy(), [4.0])
    assert _state.recording == (None, False)


def test_sweeps_in_threads_keep_each_threads_mode():
    errors, barrier = [], threading.Barrier(4)

    def work(k):
        try:
            outer = k % 2 == 0
            barrier.wait(5)
            for _ in range(50):
                with ag.set_grad_enabled(outer):
                    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
                    with ag.enable_grad():
                        y = (x * x).sum()
                    y.backward(create_graph=k % 4 < 2)
                    assert ag.is_grad_enabled() is outer
                    assert _state.recording == ((None, False) if outer else None)
                    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---- 4. nn.cross_entropy's single target check -----------------------------------------------
def _ce_reference(logits, target, reduction):
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    loss = -np.take_along_axis(logp, target[..., None].astype(np.int64), axis=-1)[..., 0]
    p = np.exp(logp)
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, target[..., None].astype(np.int64), 1.0, axis=-1)
    if reduction == "none":
        return loss, p - onehot  # gradient of loss.sum()
    if reduction == "sum":
        return loss.sum(), p - onehot
    return loss.mean(), (p - onehot) / max(loss.size, 1)


BAD_TARGETS = [
    ("out of range", (4, 3), np.array([0, 1, 3, 0]), IndexError),
    ("negative", (4, 3), np.array([0, -1, 2, 0]), IndexError),
    ("uint out of range", (4, 3), np.array([0, 1, 2, 200], np.uint8), IndexError),
    ("uint64 huge", (4, 3), np.array([0, 1, 2, 2 ** 63], np.uint64), IndexError),
    ("big-endian out of range", (4, 3), np.array([0, 1, 2, 3], ">i4"), IndexError),
    ("short", (4, 3), np.array([0, 1, 2]), ValueError),
    ("column", (4, 3), np.array([[0], [1], [2], [0]]), ValueError),
    ("0-d for a batch", (4, 3), np.int64(1), ValueError),
    ("3-d wrong", (2, 4, 3), np.zeros((2, 3), np.int64), ValueError),
    ("3-d out of range", (2, 4, 3), np.full((2, 4), 3), IndexError),
    ("no classes", (2, 0), np.zeros(2, np.int64), IndexError),
    ("tensor out of range", (4, 3), ag.Tensor(np.array([0, 1, 5, 0])), IndexError),
    ("list", (4, 3), [0, 1, 2, 9], IndexError),
    ("bool", (4, 3), np.array([True, False, True, False]), TypeError),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,shape,target,exc", BAD_TARGETS, ids=[b[0] for b in BAD_TARGETS])
def test_cross_entropy_bad_targets_name_it_and_record_nothing(name, shape, target, exc, reduction):
    logits = ag.Tensor(np.random.default_rng(0).normal(size=shape), requires_grad=True)
    before = repr(function.clock)
    with pytest.raises(exc, match=r"^cross_entropy: "):
        nn.cross_entropy(logits, target, reduction=reduction)
    if exc is not TypeError:  # (bool targets take the log_softmax path: one orphan node)
        assert repr(function.clock) == before  # no node was recorded
    assert _state.recording == (None, False)


def test_cross_entropy_bad_targets_along_axis_0_and_bad_reduction():
    logits = ag.Tensor(np.zeros((3, 4)), requires_grad=True)
    with pytest.raises(IndexError, match=r"^cross_entropy: .*\[0, 3\)"):
        nn.cross_entropy(logits, np.array([0, 1, 2, 3]), axis=0)
    with pytest.raises(ValueError, match=r"^cross_entropy: reduction"):
        nn.cross_entropy(logits, np.array([0, 1, 2]), reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape,tdtype", [((5, 4), np.int64), ((5, 4), np.uint8),
                                          ((2, 3, 4), np.int32), ((4,), np.int64),
                                          ((5, 4), ">i2")])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_cross_entropy_values_and_gradients_against_float64_reference(reduction, shape, tdtype,
                                                                      as_tensor):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape) * 5
    target = rng.integers(0, shape[-1], size=shape[:-1]).astype(tdtype)
    logits = ag.Tensor(x, requires_grad=True)
    loss = nn.cross_entropy(logits, ag.Tensor(target) if as_tensor else target,
                            reduction=reduction)
    ref_loss, ref_grad = _ce_reference(x, np.asarray(target), reduction)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-12)
    (loss.sum() if reduction == "none" else loss).backward()
    np.testing.assert_allclose(logits.grad.numpy(), ref_grad, rtol=1e-10, atol=1e-14)
    fd = _central_fd(lambda v: float(np.sum(_ce_reference(v, np.asarray(target), reduction)[0])),
                     x)
    np.testing.assert_allclose(logits.grad.numpy(), fd, rtol=1e-6, atol=1e-8)


def test_cross_entropy_empty_batch_with_sum_and_none():
    logits = ag.Tensor(np.zeros((0, 3)), requires_grad=True)
    loss = nn.cross_entropy(logits, np.zeros(0, np.int64), reduction="sum")
    assert float(loss.item()) == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 3)
    assert nn.cross_entropy(logits, np.zeros(0, np.int64), reduction="none").shape == (0,)


# ---- 5. replay's comparison of arrays from outside -----------------------------------------------
def _eager_grad(fn, w):
    w.grad = None
    out = fn()
    out.backward()
    return out.numpy().copy(), w.grad.numpy().copy()


def _replayed(fn, w):
    w.grad = None
    out = fn()
    out.backward()
    return out.numpy().copy(), w.grad.numpy().copy()


def _replayed_after_change(r, w):
    """A call after an outside array changed: it must say so (it also says more: see the last
    test of this file) and record again."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _replayed(r, w)
    assert any("changed since it was recorded" in str(c.message) for c in caught
               if c.category is ReplayWarning)
    return got


def _warm(r, w):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplayWarning)
        for _ in range(3):
            _replayed(r, w)
    assert r.plans and all(p.confirmed for p in r.plans.values())


def test_closure_targets_edited_in_place_again_and_again_give_eager_gradients():
    rng = np.random.default_rng(5)
    W = ag.Tensor(rng.normal(size=(4, 3)), requires_grad=True)
    X = ag.Tensor(rng.normal(size=(6, 4)))
    targets = np.array([0, 1, 2, 0, 1, 2])

    def step():
        return nn.cross_entropy(X @ W, targets)

    r = ag.replay(step)
    _warm(r, W)
    for k in range(5):
        targets[k] = (targets[k] + 1) % 3
        expect = _eager_grad(step, W)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReplayWarning)
            got = _replayed(r, W)
            got2 = _replayed(r, W)  # unchanged since: replayed or recorded, same values
        for a, b in zip(got + got2, expect + expect):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_minus_zero_in_outside_bounds_is_the_same_value():
    x = ag.Tensor(np.array([-1.0, 0.5, 2.0]), requires_grad=True)
    lo = np.array([0.0, 0.0, -5.0])
    hi = np.array([1.0, 1.0, 1.0])
    fn = lambda: (ag.clip(x, lo, hi) * np.array([1.0, 2.0, 3.0])).sum()  # noqa: E731
    r = ag.replay(fn)
    _warm(r, x)
    lo[0] = -0.0
    lo[1] = -0.0
    assert lo.tobytes() != np.array([0.0, 0.0, -5.0]).tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplayWarning)  # same values: no recording again
        got = _replayed(r, x)
    expect = _eager_grad(fn, x)
    np.testing.assert_array_equal(got[1], expect[1])
    np.testing.assert_array_equal(got[0], expect[0])
    np.testing.assert_array_equal(expect[1], [0.0, 2.0, 0.0])


def test_nan_payloads_in_a_recorded_copy_are_the_same_values():
    a = np.array([np.nan, 1.0, -0.0])
    r = _Recorded(a)
    b = np.array([-np.nan, 1.0, 0.0])
    assert b.tobytes() != a.tobytes() and r.holds(b)
    b[1] = np.nan
    assert not r.holds(b)


@pytest.mark.parametrize("make", [
    lambda: np.arange(12)[::2][:5].copy()[::-1],  # a reversed (negative-stride) view
    lambda: np.arange(20).reshape(4, 5)[:, 1],  # a strided column view
    lambda: np.array([0, 2, 4, 1, 3], dtype=">i8"),  # big-endian
    lambda: np.asfortranarray(np.array([[0, 2], [4, 1]]))[:, 0],
])
def test_outside_index_views_and_byte_orders_edited_in_place(make):
    x = ag.Tensor(np.arange(1.0, 21.0), requires_grad=True)
    idx = make() % 5
    fn = lambda: (x[idx] * x[idx]).sum()  # noqa: E731
    r = ag.replay(fn)
    _warm(r, x)
    idx[0] = (idx[0] + 3) % 5
    expect = _eager_grad(fn, x)
    got = _replayed_after_change(r, x)
    np.testing.assert_allclose(got[0], expect[0])
    np.testing.assert_allclose(got[1], expect[1])


def test_targets_that_view_a_huge_dataset():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=200_000)  # 1.6 MB: the views are held, not the base
    batch = labels[1000:1008]
    W = ag.Tensor(rng.normal(size=(4, 3)), requires_grad=True)
    X = ag.Tensor(rng.normal(size=(8, 4)))
    fn = lambda: nn.cross_entropy(X @ W, batch)  # noqa: E731
    r = ag.replay(fn)
    _warm(r, W)
    labels[5] = (labels[5] + 1) % 3  # outside the batch: nothing to record again
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplayWarning)
        got = _replayed(r, W)
    np.testing.assert_allclose(got[1], _eager_grad(fn, W)[1], rtol=1e-12)
    labels[1003] = (labels[1003] + 1) % 3  # inside it
    expect = _eager_grad(fn, W)
    got = _replayed_after_change(r, W)
    np.testing.assert_allclose(got[1], expect[1], rtol=1e-12)


def test_arrays_made_inside_and_collected_between_calls():
    x = ag.Tensor(np.arange(1.0, 7.0), requires_grad=True)
    fn = lambda: (x[np.array([5, 0, 3])] * 2.0).sum()  # noqa: E731
    r = ag.replay(fn)
    _warm(r, x)
    for _ in range(3):
        gc.collect()
        got = _replayed(r, x)
        np.testing.assert_allclose(got[1], [2, 0, 0, 2, 0, 2])
        assert float(got[0]) == 2.0 * (6 + 1 + 4)


def test_object_condition_edited_in_place_records_again():
    x = ag.Tensor(np.arange(3.0), requires_grad=True)
    cond = np.array([0, 1, 2], dtype=object)
    fn = lambda: ag.where(cond, x * 2.0, x * 3.0).sum()  # noqa: E731
    r = ag.replay(fn)
    _warm(r, x)
    cond[0] = 1
    expect = _eager_grad(fn, x)
    with pytest.warns(ReplayWarning):
        got = _replayed(r, x)
    np.testing.assert_array_equal(got[1], expect[1])
    np.testing.assert_array_equal(expect[1], [2.0, 2.0, 2.0])


def test_recorded_copy_of_datetime_and_big_endian_arrays():
    d = np.array(["2020-01-01", "NaT"], "datetime64[D]")
    r = _Recorded(d)
    assert r.holds(d.copy())
    d2 = d.copy()
    d2[0] = np.datetime64("2021-01-01")
    assert not r.holds(d2)
    be = np.array([0.0, np.nan, 1.0], ">f8")
    r = _Recorded(be)
    other = be.copy()
    other[0] = -0.0
    assert r.holds(other)
    other[2] = 2.0
    assert not r.holds(other)
    assert not r.holds(be.astype("<f8"))  # same values, another dtype


@pytest.mark.parametrize("make,edit", [
    (lambda: np.array(["", "a", "b"]), lambda a: a.__setitem__(0, "z")),
    (lambda: np.array([b"", b"a"]), lambda a: a.__setitem__(0, b"z")),
    (lambda: np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
     lambda a: a.__setitem__(0, (5, 2.0))),
], ids=["str", "bytes", "structured"])
def test_recorded_copy_of_non_numeric_arrays_that_changed(make, edit):
    a = make()
    r = _Recorded(a)
    edit(a)
    assert r.holds(a) is False


def test_str_condition_of_where_edited_in_place_records_again():
    x = ag.Tensor(np.arange(3.0), requires_grad=True)
    cond = np.array(["", "a", "b"])
    fn = lambda: ag.where(cond, x * 2.0, x * 3.0).sum()  # noqa: E731
    r = ag.replay(fn)
    _warm(r, x)
    cond[0] = "a"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplayWarning)
        got = _replayed(r, x)
    np.testing.assert_array_equal(got[1], [2.0, 2.0, 2.0])


def test_an_outside_change_gives_only_its_own_warning():
    x = ag.Tensor(np.arange(1.0, 7.0), requires_grad=True)
    idx = np.array([0, 2, 4])
    r = ag.replay(lambda: (x[idx] * 2.0).sum())
    _warm(r, x)
    idx[0] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _replayed(r, x)
    messages = [str(w.message) for w in caught if w.category is ReplayWarning]
    assert messages and all("changed since it was recorded" in m for m in messages), messages


@pytest.mark.parametrize("dtype, x", [(np.float32, -88.0), (np.float64, -744.0)])
def test_sigmoid_near_the_bottom_is_silent_under_raise(dtype, x):
    """1 / (1 + exp(-x)) underflows in the reciprocal there: the value, not an error."""
    with np.errstate(all="raise"):
        y = ag.sigmoid(ag.Tensor(np.array([x], dtype))).numpy()
    want = 1.0 / (1.0 + np.exp(-np.float64(x)))
    assert y.dtype == dtype and abs(float(y[0]) - want) <= 4 * np.finfo(dtype).smallest_subnormal
