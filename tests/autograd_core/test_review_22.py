"""Review 22: hostile tests of replay's precomputed rule factors (replay_texts.factor,
replay_texts.loop_factor / FACTOR_BYTES): a one-input rule `g * (F)` whose F a loop's block
computes once for all its rows on their stacked arrays. Held to eager mode bit for bit
(batch=False) and within 1e-12 in float64 (batch=True). Found and fixed here: a user op's
F that is not elementwise (a reduction of its array) was computed on all the steps at once
(only an op declared elementwise gets a factor now), and a rule put in place after the plan
was made was not followed (a replayed call now compares every op's functions and records
again)."""
import threading
import warnings

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core import replay_codegen, replay_texts
from autograd_core.function import record
from autograd_core.ops.unary import Relu, Sigmoid, Tanh
from benchmarks import _steps, unroll

from tests.autograd_core.replay_checks import assert_bits, check, param, run

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.ReplayWarning")


def _sources():
    return "".join("".join(lines) for _, _, lines, _ in
                   (replay_codegen.linecache.cache[n] for n in replay_codegen._files))


def _factor_used():
    return "stacked_rows(" in _sources() and "enumerate(rows)" in _sources()


def _loop(act, w, steps=6, shape=(2, 4)):
    def fn(xs):
        h, loss = ag.zeros(shape, dtype=w.dtype), 0.0
        for t in range(steps):
            h = act(xs[t] + h @ w)
            loss = loss + (h * h).sum()
        return loss
    return fn


# ---- bugs ------------------------------------------------------------------------------------
class _ScaleByMax(ag.Op):
    """x * max|x|, the max held constant in the rule (a stop-gradient scale): the rule's factor
    max|x| is a reduction of the step's own array, not elementwise."""
    name = None

    @staticmethod
    def forward(out, x):
        return x * np.abs(x).max()

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]._data
        return (g * (np.abs(x).max() + 0 * x),)

    inline_backward = ("{g} * (np.abs({x0}).max() + 0 * {x0})",)


class _Normalize(ag.Op):
    """x / ||x||, the norm held constant in the rule: F is a scalar per step."""
    name = None

    @staticmethod
    def forward(out, x):
        return x / np.sqrt((x * x).sum())

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]._data
        return (g * (1 / np.sqrt((x * x).sum())),)

    inline_backward = ("{g} * (1 / np.sqrt(({x0} * {x0}).sum()))",)


def _user_op_loop(op, u, w):
    def fn(xs):
        h, loss = ag.zeros((2, 4)), 0.0
        for t in range(6):
            z = xs[t] @ u + h @ w
            h = ag.tanh(record(op, op.forward(None, z.data), (z,)))
            loss = loss + (h * h).sum()
        return loss
    return fn


def test_user_op_rules_agree_with_their_texts_in_eager_mode():
    # the ops are sound: their texts say what their rules do (the eager sweep runs the text)
    rng = np.random.default_rng(0)
    g = np.arange(8.0).reshape(2, 4)
    for op, factor in ((_ScaleByMax, lambda a: np.abs(a).max()),
                       (_Normalize, lambda a: 1 / np.sqrt((a * a).sum()))):
        a = rng.standard_normal((2, 4))
        x = ag.Tensor(a, requires_grad=True)
        y = record(op, op.forward(None, a), (x,))
        (y * ag.Tensor(g)).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), g * factor(a), rtol=1e-15)


def test_non_elementwise_factor_of_a_user_op_keeps_eager_bits():
    rng = np.random.default_rng(1)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    xs = [(ag.Tensor(rng.standard_normal((6, 2, 3)) * (k + 1)),) for k in range(2)]
    replay_codegen._forget()
    check(_user_op_loop(_ScaleByMax, u, w), [u, w], xs, calls=4, batch=False)


def test_scalar_factor_of_a_user_op_keeps_eager_bits():
    rng = np.random.default_rng(2)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    xs = [(ag.Tensor(rng.standard_normal((6, 2, 3)) * (k + 1)),) for k in range(2)]
    replay_codegen._forget()
    check(_user_op_loop(_Normalize, u, w), [u, w], xs, calls=4, batch=False)


@pytest.mark.parametrize("act, cls", [(ag.tanh, Tanh), (ag.sigmoid, Sigmoid), (ag.relu, Relu)])
def test_rule_replaced_after_the_plan_is_followed(act, cls, monkeypatch):
    rng = np.random.default_rng(3)
    w = param(rng, 4, 4)
    fn = _loop(act, w)
    xs = ag.Tensor(rng.standard_normal((6, 2, 4)))
    step = ag.replay(fn, batch=False)
    for _ in range(3):
        run(step, [w], (xs,))
    orig = cls.__dict__["backward"].__func__
    monkeypatch.setattr(cls, "backward",
                        staticmethod(lambda g, out, xp: tuple(2 * r for r in orig(g, out, xp))))
    assert_bits(run(step, [w], (xs,)), run(fn, [w], (xs,)))


# ---- what held -------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [False, True])
def test_activation_outputs_used_elsewhere(batch):
    rng = np.random.default_rng(4)
    u, w = param(rng, 3, 4), param(rng, 4, 4)

    def fn(xs):
        h, loss, hs = ag.zeros((2, 4)), 0.0, []
        for t in range(7):
            h = ag.tanh(xs[t] @ u + h @ w)
            hs.append(h)
            loss = (loss + (h * hs[max(0, t - 2)]).sum() + ag.sigmoid(h).sum()
                    + ag.relu(h - 0.1).sum())
        return loss

    xs = [(ag.Tensor(rng.standard_normal((7, 2, 3)) * (k + 1)),) for k in range(2)]
    replay_codegen._forget()
    check(fn, [u, w], xs, calls=5, batch=batch)
    if not batch:
        assert _factor_used()


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (0, 4), (3, 0), (0,)])
@pytest.mark.parametrize("batch", [False, True])
def test_zero_d_one_element_and_empty_states(shape, batch):
    rng = np.random.default_rng(5)
    n = shape[-1] if shape and shape[-1] else 1
    a = param(rng, n, n)

    def fn(xs):
        h, loss = ag.zeros(shape), 0.0
        for t in range(6):
            z = xs[t] + (h @ a if shape and shape[-1] else h * a.sum())
            h = ag.tanh(z)
            loss = loss + (h * ag.sigmoid(z * 0.5)).sum() + ag.relu(z).sum()
        return loss

    data = [(ag.Tensor(rng.standard_normal((6,) + shape) * (k + 1)),) for k in range(2)]
    check(fn, [a], data, calls=5, batch=batch)
    if not batch:  # the rule is eager mode's; the grads have the parameter's shape
        a.grad = None
        fn(*data[0]).backward()
        assert a.grad.shape == a.shape


def test_nan_inf_signed_zero_huge_and_subnormal_values():
    rng = np.random.default_rng(6)
    v = param(rng, 4, 4)

    def fn(xs):
        h, loss = ag.zeros((2, 4)), 0.0
        for t in range(6):
            z = xs[t] + h @ v
            h = ag.tanh(z)
            loss = loss + (h * ag.sigmoid(z)).sum() + ag.relu(z).sum()
        return loss

    x = rng.standard_normal((6, 2, 4)) * 3
    x[1, 0, 0], x[2, 1, 1], x[3, 0, 2], x[4, 1, 3] = np.nan, np.inf, -np.inf, -0.0
    x[5, 0, 1], x[0, 1, 0] = 1e308, -1e-320
    y = x.copy()
    y[1, 0, 0] = 0.0
    y[2] *= -1
    replay_codegen._forget()
    check(fn, [v], [(ag.Tensor(x),), (ag.Tensor(y),)], calls=5, batch=False)
    assert _factor_used()
    v.grad = None
    fn(ag.Tensor(x)).backward()
    assert np.isnan(v.grad.numpy()).any()  # the NaN and inf reached the gradient


def test_in_place_change_between_forward_and_backward_raises_in_both_modes():
    rng = np.random.default_rng(7)
    p = param(rng, 6, 4)

    def fn(x):
        loss = 0.0
        for t in range(6):  # relu and tanh read p's rows themselves
            loss = loss + (ag.relu(p[t]) * x).sum() + (ag.tanh(p[t]) * x).sum()
        return loss

    step = ag.replay(fn, batch=False)
    x = ag.Tensor(np.float64(0.5))
    for _ in range(3):
        run(step, [p], (x,))
    for f in (fn, step):
        out = f(x)
        with ag.no_grad():
            p.mul_(-1.0)
        with pytest.raises(RuntimeError, match="modified|in place|inplace"):
            out.backward()
    # and a call made after the change replays eager mode's bits again
    assert_bits(run(step, [p], (x,)), run(fn, [p], (x,)))


@pytest.mark.parametrize("dtypes", [(np.float16,), (np.float16, np.float32, np.float64),
                                    (np.float32, np.float64)])
def test_steps_of_mixed_dtypes(dtypes):
    rng = np.random.default_rng(8)
    w = param(rng, 4, 4)

    def fn(h0):
        h, loss = h0, 0.0
        for t in range(9):
            dt = dtypes[t % len(dtypes)]
            z = h.astype(dt) @ w.astype(dt)
            h = ag.tanh(z) + ag.sigmoid(z) * ag.relu(z)
            loss = loss + h.astype(np.float64).sum()
        return loss

    h0s = [(ag.Tensor(rng.standard_normal((2, 4)).astype(dtypes[0])),) for _ in range(2)]
    check(fn, [w], h0s, calls=5, batch=False)


def test_float64_gradient_into_a_float32_output():
    rng = np.random.default_rng(9)
    w32, c64 = param(rng, 4, 4, dtype=np.float32), param(rng, 2, 4)

    def fn(x):
        h, loss = x, 0.0
        for t in range(7):
            h = ag.tanh(h @ w32)
            loss = loss + (h * c64).sum()  # h's gradient is float64, its F float32
        return loss

    x = ag.Tensor(rng.standard_normal((2, 4)).astype(np.float32))
    check(fn, [w32, c64], [(x,)], calls=5, batch=False)
    w32.grad = None
    fn(x).backward()
    assert w32.grad.dtype == np.float32


def test_relu_of_integer_inputs():
    rng = np.random.default_rng(10)
    w = param(rng, 4, 4)

    def fn(xi):
        h, loss = ag.zeros((2, 4)), 0.0
        for t in range(5):
            h = ag.tanh(ag.relu(xi[t]) * 0.1 + h @ w)
            loss = loss + h.sum()
        return loss

    xs = [(ag.Tensor(rng.integers(-3, 4, (5, 2, 4))),) for _ in range(2)]
    check(fn, [w], xs, calls=5, batch=False)


def test_steps_whose_shapes_differ():
    rng = np.random.default_rng(11)
    w = param(rng, 3, 3)

    def fn(xs):
        h, loss = ag.zeros((1, 3)), 0.0
        for t, n in enumerate([1, 2, 2, 3, 1, 1, 4, 4, 4]):
            z = xs[t, :n] + h[:1] @ w
            h = ag.tanh(z)
            loss = loss + ag.sigmoid(z).sum() + ag.relu(z).sum() + h.sum()
        return loss

    xs = [(ag.Tensor(rng.standard_normal((9, 4, 3))),) for _ in range(2)]
    check(fn, [w], xs, calls=5, batch=False)


def test_functions_sharing_cached_blocks_interleaved():
    rng = np.random.default_rng(12)
    replay_codegen._forget()
    cases = []
    for dt, shape in ((np.float64, (2, 4)), (np.float32, (2, 4)), (np.float64, (3, 4)),
                      (np.float64, (1, 4)), (np.float16, (2, 4)), (np.float64, (2, 4))):
        w = param(rng, 4, 4, dtype=dt)
        fn = _loop(ag.tanh, w, shape=shape)
        xs = [(ag.Tensor(rng.standard_normal((6,) + shape).astype(dt)),) for _ in range(2)]
        cases.append((fn, ag.replay(fn, batch=False), w, xs))
    for k in range(5):
        for fn, step, w, xs in cases:
            assert_bits(run(step, [w], xs[k % 2]), run(fn, [w], xs[k % 2]), f"call {k}")
    assert _factor_used()


def test_threads_each_replaying_a_function_of_the_same_structure():
    rng = np.random.default_rng(13)
    ws = [param(rng, 4, 4) for _ in range(3)]
    fns = [_loop(ag.sigmoid, w) for w in ws]
    xs = [ag.Tensor(rng.standard_normal((6, 2, 4)) * (k + 1)) for k in range(2)]
    want = {(i, j): ag.grad(fn(x), [w])[0].numpy().tobytes()
            for i, (fn, w) in enumerate(zip(fns, ws)) for j, x in enumerate(xs)}
    errors = []

    def worker(i):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                step = ag.replay(fns[i], batch=False)
                for r in range(20):
                    got = ag.grad(step(xs[r % 2]), [ws[i]])[0].numpy().tobytes()
                    assert got == want[i, r % 2], (i, r)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_one_replayed_function_shared_by_threads_taking_turns():
    rng = np.random.default_rng(14)
    w = param(rng, 4, 4)
    fn = _loop(ag.tanh, w)
    step = ag.replay(fn, batch=False)
    xs = [ag.Tensor(rng.standard_normal((6, 2, 4)) * (k + 1)) for k in range(4)]
    want = [ag.grad(fn(x), [w])[0].numpy().tobytes() for x in xs]
    turn, errors = threading.Lock(), []

    def worker(i):
        try:
            for r in range(15):
                with turn:  # a result is differentiated before the next call
                    got = ag.grad(step(xs[(i + r) % 4]), [w])[0].numpy().tobytes()
                assert got == want[(i + r) % 4]
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("act", [ag.tanh, ag.sigmoid, ag.relu])
def test_grad_with_inputs_and_retain_graph_twice(act):
    rng = np.random.default_rng(15)
    w = param(rng, 4, 4)
    fn = _loop(act, w)
    step = ag.replay(fn, batch=False)
    for k in range(4):
        x = ag.Tensor(rng.standard_normal((6, 2, 4)) * (k + 1), requires_grad=True)
        outs = []
        for f in (step, fn):
            o = f(x)
            first = ag.grad(o, [w, x], retain_graph=True)
            second = ag.grad(o, [x], retain_graph=True)
            w.grad = None
            o.backward()
            outs.append([a.numpy().tobytes() for a in first + second] + [w.grad.numpy().tobytes()])
        assert outs[0] == outs[1], k


class _HalfTanh(Tanh):  # its own rule, no text: the rule runs
    name = None

    @staticmethod
    def backward(g, out, xp):
        y = xp.val(out)
        return (0.5 * g * (1 - y * y),)


class _TextTanh(Tanh):  # its own rule and text
    name = None
    inline_backward = ("{g} * (0.5 - 0.5 * {out}._data * {out}._data)",)

    @staticmethod
    def backward(g, out, xp):
        y = xp.val(out)
        return (g * (0.5 - 0.5 * y * y),)


class _PlainTanh(Tanh):  # inherits rule and text
    name = None


@pytest.mark.parametrize("cls", [_HalfTanh, _TextTanh, _PlainTanh])
def test_subclasses_of_tanh(cls):
    rng = np.random.default_rng(16)
    w = param(rng, 4, 4)
    fn = _loop(lambda x: record(cls, np.tanh(x.data), (x,)), w)
    xs = [(ag.Tensor(rng.standard_normal((6, 2, 4)) * (k + 1)),) for k in range(2)]
    check(fn, [w], xs, calls=4, batch=False)
    if cls is _HalfTanh:  # half of tanh's gradient, bit for bit
        w.grad = None
        fn(*xs[0]).backward()
        half = w.grad.numpy().copy()
        w.grad = None
        _loop(lambda x: record(_TextTanh, np.tanh(x.data), (x,)), w)(*xs[0]).backward()
        np.testing.assert_allclose(half, w.grad.numpy(), rtol=1e-12)


def test_hooks_inside_the_function_and_on_a_leaf():
    rng = np.random.default_rng(17)
    w = param(rng, 4, 4)

    def fn(xs):
        h, loss = ag.zeros((2, 4)), 0.0
        for t in range(6):
            h = ag.tanh(xs[t] + h @ w)
            if t == 3:
                h.register_hook(lambda g: g * 3)
            loss = loss + ag.sigmoid(h).sum()
        return loss

    xs = [(ag.Tensor(rng.standard_normal((6, 2, 4))),) for _ in range(2)]
    check(fn, [w], xs, calls=4, batch=False)
    handle = w.register_hook(lambda g: g * 0.5)
    try:
        check(_loop(ag.relu, w), [w], xs, calls=4, batch=False)
    finally:
        if hasattr(handle, "remove"):
            handle.remove()


@pytest.mark.parametrize("cell", ["rnn", "gru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_benchmark_user_loops(cell, dtype):
    rng = np.random.default_rng(18)
    loop = _steps.rnn_user_loop if cell == "rnn" else _steps.gru_user_loop
    model = nn.RecurrentClassifier(3, _steps.HIDDEN, 4, cell=cell,
                                   rng=np.random.default_rng(0), dtype=dtype)
    params = dict(model.named_parameters())
    sets = [(ag.Tensor(rng.standard_normal((4, 2, 3)).astype(dtype)), rng.integers(0, 4, (4, 2)))
            for _ in range(2)]
    fn = lambda xs, tg: loop(ag, nn, params, xs, tg)  # noqa: E731
    replay_codegen._forget()
    check(fn, list(params.values()), sets, calls=4, batch=False)
    assert _factor_used()  # a (2, 128) state is within FACTOR_BYTES in both dtypes
    if dtype == np.float64:
        check(fn, list(params.values()), sets, calls=4, batch=True)


@pytest.mark.parametrize("cell, kwargs", [("rnn", {}), ("rnn", {"nonlinearity": "relu"}),
                                          ("gru", {})])
def test_nn_models(cell, kwargs):
    rng = np.random.default_rng(19)
    model = nn.RecurrentClassifier(3, 8, 4, cell=cell, rng=np.random.default_rng(0),
                                   dtype=np.float64, **kwargs)
    sets = [(ag.Tensor(rng.standard_normal((5, 2, 3))), rng.integers(0, 4, (5, 2)))
            for _ in range(2)]
    fn = lambda xs, tg: model.loss(xs, ag.Tensor(tg))  # noqa: E731
    check(fn, list(model.parameters()), sets, calls=4, batch=False)
    check(fn, list(model.parameters()), sets, calls=4, batch=True)


@pytest.mark.parametrize("steps", [3, 12, 40])
def test_long_unroll_at_small_lengths(steps):
    xs, u0, w0, b0 = unroll._data(steps)
    xt = ag.Tensor(xs)
    ps = [ag.Tensor(a.copy(), requires_grad=True) for a in (u0, w0, b0)]
    replay_codegen._forget()
    check(lambda *p: unroll.user_loop(ag, xt, *p), ps, [tuple(ps)], calls=4, batch=False)
    assert _factor_used() is (steps > 3)  # 3 steps: too short a block to run as a loop


@pytest.mark.parametrize("extra, used", [(0, True), (1, False)])
def test_the_factor_limit_at_its_edge(extra, used):
    rng = np.random.default_rng(20)
    hidden = replay_texts.FACTOR_BYTES // 8 + extra  # a (1, hidden) float64 state
    w = ag.Tensor(rng.standard_normal((hidden, hidden)) / np.sqrt(hidden), requires_grad=True)
    xs = ag.Tensor(rng.standard_normal((4, 1, hidden)))
    replay_codegen._forget()
    check(_loop(ag.tanh, w, steps=4, shape=(1, hidden)), [w], [(xs,)], calls=3, batch=False)
    assert _factor_used() is used
