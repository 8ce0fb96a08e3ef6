"""Review 20f: hostile probes of the inline texts (Op.inline_forward, inline_backward,
inline_split, run by replay's generated code in place of the ops' functions), the stacks a
replayed sweep reuses (stacked_products.joined, gathered_rows, weight_products), Stack.backward's rows by
iteration (dense) and sum_array_to's bias fast path. Replay is compared with eager mode: bit
for bit with batch=False, to 1e-12 relative in float64 with batch=True.

The problems found are above the line, fixed since (a kernel or rule from a mixin, braces
in a rule's text, texts of the wrong form, x - 0 on -0.0, a boolean mask argument selecting
another number of elements); below it, what held."""
import threading

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_codegen
from autograd_core.function import record
from autograd_core.ops.shape import sum_array_to

from tests.autograd_core.replay_checks import assert_bits, check, param, run

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.replayer.ReplayWarning")

Tanh, Linear = ag.ops_registry["tanh"], ag.ops_registry["linear"]


@pytest.fixture(params=["generated", "loops"])
def backward_code(request, monkeypatch):
    """Both ways a confirmed plan's backward runs: generated code, and replay_sweep.sweep."""
    if request.param == "loops":
        monkeypatch.setattr(replay_codegen, "compile_backward", lambda *a: None)
    return request.param


def _op(fwd=None, bwd=None):
    """A one-input op (negation) declaring the given texts; name None: not registered."""
    class Declared(ag.Op):
        name = None
        inputs = ("x",)
        saves = ("x",)
        view = False
        rule = "d(-x) = -g"
        hazard = None
        memory = ag.Memory()
        inline_forward, inline_backward = fwd, bwd

        @staticmethod
        def forward(out, x):
            return np.negative(x)

        @staticmethod
        def backward(g, out, xp):
            return (-g * 1.0,)
    return Declared


# ---- problems found (fixed) ----------------------------------------------------------------
@pytest.mark.parametrize("mixin", [
    {"forward": staticmethod(lambda out, x: 2.0 * np.tanh(x))},
    {"backward": staticmethod(lambda g, out, xp: (g * 3.0,))}], ids=["forward", "backward"])
def test_a_kernel_or_rule_from_a_mixin_runs_in_replay(mixin):
    op = type("Mixed", (type("Mixin", (), mixin), Tanh), {"name": None})
    assert op.forward is not Tanh.forward or op.backward is not Tanh.backward
    x = param(np.random.default_rng(1), 3, 4)

    def fn():
        return (record(op, op.forward(None, x.data), (x,)) * 1.0).sum()

    check(fn, [x], calls=4, batch=False)


def test_escaped_braces_in_a_rule_text_are_literal_braces():
    op = _op(fwd="np.negative({x0}) * {{1: 1.0}}[1]", bwd=("-{g} * {{1: 1.0}}[1]",))
    x = param(np.random.default_rng(2), 3, 4)
    check(lambda: (record(op, -x.data, (x,)) * 2.0).sum(), [x], calls=4, batch=False)


@pytest.mark.parametrize("texts", [
    dict(fwd="np.negative({x0}"), dict(bwd=("-{g} *",)), dict(bwd=("-{g}", "{g}")),
    dict(bwd="-{g}"), dict(fwd="np.negative({x0[0]})"), dict(fwd="{g} - {x0}"),
    dict(fwd="np.negative({x0.T}).T")], ids=repr)
def test_a_bad_text_is_refused_with_a_type_error_when_the_class_is_made(texts):
    with pytest.raises(TypeError):
        _op(**texts)


def test_subtracting_an_integer_zero_keeps_the_sign_of_zero():
    x = ag.Tensor(np.array([-0.0, 1.0, -2.0]), requires_grad=True)
    check(lambda: (1.0 / (x - 0)).sum(), [x], calls=4, batch=False)


def test_a_mask_argument_with_another_count_of_true():
    x = param(np.random.default_rng(3), 6, 3)
    m1 = np.array([1, 0, 1, 0, 1, 0], bool)
    m2 = np.array([1, 1, 1, 1, 0, 0], bool)
    check(lambda m: (ag.tanh(x[m]) * 2.0).sum(), [x], [(m1,), (m1,), (m2,)], calls=4,
          batch=False)


# ---- what held -----------------------------------------------------------------------------
DTYPES = [(np.float32, np.float32, np.float64), (np.float64, np.float32, np.float64),
          (np.float32, np.float32, np.float16), (np.float16, np.float16, np.float16),
          (np.float64, np.float64, np.float32), (np.float32, np.float64, np.float32)]


@pytest.mark.parametrize("dtypes", DTYPES, ids=lambda d: "-".join(t.__name__ for t in d))
@pytest.mark.parametrize("bias_shape", [(5,), (1, 5), (), (3, 5)])
def test_products_with_a_bias_in_mixed_dtypes_replay_to_the_bit(dtypes, bias_shape):
    xd, wd, bd = dtypes
    rng = np.random.default_rng(4)
    w, b = param(rng, 5, 4, dtype=wd), param(rng, *bias_shape, dtype=bd)
    xs = rng.standard_normal((3, 4)).astype(xd)

    def fn(x):
        ys = [ag.linear(x, w, b), ag.addmm(b, x, w.T), x @ w.T + b, ag.linear(x, w)]
        return sum((ag.tanh(y) * y).sum() for y in ys)

    check(fn, [w, b], [(xs,), (xs * 2,)], calls=4, batch=False)


@pytest.mark.parametrize("shapes", [((1, 1), (1, 1)), ((3,), (3, 4)), ((4, 3), (3,)),
                                    ((3,), (3,)), ((0, 3), (3, 4)), ((2, 0), (0, 4)),
                                    ((1, 3), (3, 1)), ((2, 2, 3), (3, 4)), ((1, 2), (2, 1))],
                         ids=str)
@pytest.mark.parametrize("batch", [False, True])
def test_matmul_of_every_operand_shape(shapes, batch):
    rng = np.random.default_rng(5)
    a, b = param(rng, *shapes[0]), param(rng, *shapes[1])
    check(lambda: ((a @ b) * 2.0).sum() + (a * a).sum(), [a, b], calls=4, batch=batch)


def test_a_1x1_product_of_minus_one_and_zero_is_plus_zero_in_replay():
    a = ag.Tensor(np.array([[-1.0]]), requires_grad=True)
    b = ag.Tensor(np.array([[0.0]]), requires_grad=True)
    check(lambda: (1.0 / (a @ b)).sum() + ag.linear(a, b).sum(), [a, b], calls=4, batch=False)


def _recurrent(w, b, T=4):
    def fn(x):
        h, loss = ag.zeros((x.shape[1], w.shape[0])), 0.0
        for t in range(T):
            h = ag.tanh(ag.linear(x[t], w, b) + h @ w)
            loss = loss + ag.exp(h).sum() + ag.log(ag.relu(h) + 1.0).sum() - (0.5 - h).sum()
        return loss
    return fn


@pytest.mark.parametrize("batch", [False, True])
def test_nan_inf_huge_and_negative_zero_inputs_give_eager_values(batch):
    rng = np.random.default_rng(6)
    w, b = param(rng, 4, 4), param(rng, 4)
    xs = rng.standard_normal((4, 3, 4))
    xs[1, 0, 2], xs[2, 1, 1], xs[3, 2, 0], xs[0, 0, 0], xs[0, 1, 1] = (
        np.nan, np.inf, -np.inf, 1e308, -0.0)
    fn = _recurrent(w, b)
    step = ag.replay(fn, batch=batch)
    for k in range(4):
        got, want = run(step, [w, b], (xs,)), run(fn, [w, b], (xs,))
        if not batch:
            assert_bits(got, want)
            continue
        for g, wg in zip(got[1], want[1]):
            assert np.array_equal(np.isnan(g), np.isnan(wg))
            np.testing.assert_allclose(g, wg, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("batch", [False, True])
def test_an_empty_batch_replays(batch):
    rng = np.random.default_rng(7)
    w, b = param(rng, 4, 4), param(rng, 4)
    check(_recurrent(w, b), [w, b], [(np.zeros((4, 0, 4)),)], calls=4, batch=batch)


@pytest.mark.parametrize("batch", [False, True])
def test_weights_in_every_layout_as_closures_and_arguments(batch):
    rng = np.random.default_rng(8)
    base = rng.standard_normal((8, 8))
    w = ag.Tensor(np.asfortranarray(base[:4, :6]), requires_grad=True)
    u = param(rng, 6, 6)
    xs = rng.standard_normal((5, 3, 4))

    def closure(x):
        h, loss = ag.zeros((3, 6)), 0.0
        for t in range(5):
            h = ag.tanh(x[t] @ w + h @ ag.Tensor(base[:6, :6]) + ag.linear(h, u.T))
            loss = loss + (h * h).sum()
        return loss

    def swap(k):  # C and F order in turn (the same values): no new recording
        w.data = np.ascontiguousarray(w.data) if k % 2 else np.asfortranarray(w.data)

    check(closure, [w], [(xs,)], calls=6, batch=batch, between=swap)

    def argument(x, wa):
        h, loss = ag.zeros((3, 6)), 0.0
        for t in range(5):
            h = ag.tanh(x[t] @ wa + ag.linear(h, u, ag.Tensor(wa[0])))
            loss = loss + (h * h).sum()
        return loss

    wa = rng.standard_normal((4, 6))
    check(argument, [u], [(xs, wa), (xs, np.asfortranarray(wa)), (xs, rng.standard_normal(
        (6, 4)).T), (xs, rng.standard_normal((4, 12))[:, ::2])], calls=8, batch=batch)


@pytest.mark.parametrize("B", [0, 1, 3])
@pytest.mark.parametrize("batch", [False, True])
def test_a_gru_sharing_its_state_and_weights_every_way(B, batch, backward_code):
    """The same h read by three gates and by h @ wr twice, a weight used by linear, addmm and
    matmul in one step, the gates' biases the rows of one projection (the stacks joined
    reuses: rows that are also a weight's right factors, shared left factors)."""
    rng = np.random.default_rng(9)
    T, I, H = 5, 2, 3
    wr, wz, wh = param(rng, H, H), param(rng, H, H), param(rng, H, H)
    u, b = param(rng, I, 3 * H), param(rng, 3 * H)

    def gru(xs):
        xp = ag.linear(xs.reshape((T * B, I)), u.T, b).reshape((T, B, 3 * H))
        h, loss = ag.zeros((B, H)), 0.0
        for t in range(T):
            p = xp[t]
            r = ag.sigmoid(ag.linear(h, wr, p[:, :H]) + h @ wr.T)
            z = ag.sigmoid(ag.addmm(p[:, H:2 * H], h, wz.T))
            n = ag.tanh(p[:, 2 * H:] + (r * h) @ wh + h @ wh)
            h = (1.0 - z) * n + z * h
            loss = loss + (h * h).sum() + (h @ wr).sum()
        return loss

    argsets = [(rng.standard_normal((T, B, I)),) for _ in range(2)]
    check(gru, [wr, wz, wh, u, b], argsets, calls=5, batch=batch)


@pytest.mark.parametrize("batch", [False, True])
def test_rows_that_no_gradient_reaches_and_a_stack_of_one_state_twice(batch, backward_code):
    rng = np.random.default_rng(10)
    w, u = param(rng, 4, 4), param(rng, 4, 4)

    def fn(x):
        xp = x @ u
        h, loss = ag.zeros((3, 4)), 0.0
        for t in range(5):
            h2 = ag.tanh(xp[t] + h @ w + h @ w)
            if t != 2:  # step 2's result, and so row 2 of xp, reach nothing
                h = h2
            loss = loss + (ag.stack([h, h, h2]) * 1.5).sum()
        return loss

    check(fn, [w, u], [(rng.standard_normal((5, 3, 4)),)], calls=5, batch=batch)


@pytest.mark.parametrize("how", ["setitem weight", "add_ bias", "setitem argument",
                                 "add_ argument", "data ="])
@pytest.mark.parametrize("batch", [False, True])
def test_an_in_place_change_between_forward_and_backward_raises(how, batch):
    rng = np.random.default_rng(11)
    w, b = param(rng, 4, 4), param(rng, 4)
    step = ag.replay(_recurrent(w, b), batch=batch)
    x = ag.Tensor(rng.standard_normal((4, 3, 4)))
    for _ in range(3):
        step(x).backward()
    out = step(x)
    with ag.no_grad():
        {"setitem weight": lambda: w.__setitem__((0, 0), 5.0), "add_ bias": lambda: b.add_(1.0),
         "setitem argument": lambda: x.__setitem__((0, 0, 0), 5.0),
         "add_ argument": lambda: x.add_(1.0),
         "data =": lambda: setattr(w, "data", w.data * 1.0)}[how]()
    with pytest.raises(RuntimeError, match="modified in place"):
        out.backward()


def test_threads_with_their_own_replays_and_one_shared_under_a_lock():
    rng = np.random.default_rng(12)
    w, b, u = param(rng, 4, 4), param(rng, 4), param(rng, 4, 4)

    def fn(x):
        xp = x @ u
        h, loss = ag.zeros((3, 4)), 0.0
        for t in range(6):
            h = ag.tanh(ag.linear(h, w, xp[t]) + b)
            loss = loss + (h * h).sum()
        return loss

    xs = [rng.standard_normal((6, 3, 4)) for _ in range(4)]
    want = [[g.numpy() for g in ag.grad(fn(x), [w, b, u])] for x in xs]
    shared, lock, failures = ag.replay(fn, batch=False), threading.Lock(), []

    def worker(k, own):
        step = ag.replay(fn, batch=k % 2 == 0) if own else shared
        for i in range(12):
            j = (i + k) % 4
            with lock if not own else threading.Lock():
                gs = ag.grad(step(xs[j]), [w, b, u])
            for g, wg in zip(gs, want[j]):
                exact = not own or k % 2 == 1  # batch=False: the bits
                if not (g.numpy().tobytes() == wg.tobytes() if exact else
                        np.allclose(g.numpy(), wg, rtol=1e-12, atol=1e-12)):
                    failures.append((k, own, i))

    threads = [threading.Thread(target=worker, args=(k, own)) for k in range(4)
               for own in (True, False)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not failures


def test_direct_subclasses_with_their_own_kernel_or_rule_run_them_in_replay():
    rng = np.random.default_rng(13)
    x, w = param(rng, 3, 4), param(rng, 5, 4)

    class Own(Tanh):
        name = None

        @staticmethod
        def forward(out, v):
            return 2.0 * np.tanh(v)

        @staticmethod
        def backward(g, out, xp):
            return (g * 5.0,)

    class Split(Linear):
        name = None

        @staticmethod
        def backward_split(g, out):
            return (None, None), g * 2.0, out._inputs[0]._data

    assert Own.inline_forward is Own.inline_backward is Split.inline_split is None
    check(lambda: (record(Own, 2.0 * np.tanh(x.data), (x,)) * 1.0).sum(), [x], calls=4,
          batch=False)
    xx = rng.standard_normal((3, 4))
    check(lambda v: (record(Split, v @ w.data.T, (ag.Tensor(v), w)) * 1.0).sum(), [w],
          [(xx,)], calls=4, batch=False)


def test_scalar_and_index_arguments_and_0d_extractions():
    rng = np.random.default_rng(14)
    x, y = param(rng, 3, 4), param(rng)
    check(lambda c: (ag.tanh(x * c + c) - c).sum() + (c - x).sum(), [x],
          [(2.0,), (3.0,), (-0.5,)], calls=6, batch=False)
    check(lambda i: (ag.tanh(x[i]) * x[i]).sum(), [x], [(0,), (2,), (1,)], calls=6, batch=False)
    check(lambda i: ag.tanh(x[i]).sum(), [x], [(np.array([0, 2]),), (np.array([1, 1]),)],
          calls=6, batch=False)
    check(lambda: (ag.tanh(x[1, 2]) * x[0, 0]).sum() + x[2][3] + (ag.exp(y[None]) * y[()]).sum(),
          [x, y], calls=5, batch=False)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_steps_through_every_inline_text(dtype):
    rng = np.random.default_rng(15)
    w, b, v = param(rng, 4, 4, dtype=dtype), param(rng, 4), param(rng, 4, dtype=dtype)
    xs = rng.standard_normal((5, 3, 4)).astype(dtype)
    xi = rng.integers(-3, 3, (3, 4))

    def fn(x):
        h, loss = ag.zeros((3, 4), dtype=dtype), 0.0
        for t in range(5):
            h = ag.tanh(ag.addmm(v, x[t], w) + h @ w) * ag.sigmoid(ag.linear(h, w, b))
            h = ag.relu(h) - ag.exp(-h) + ag.log(h * h + 1.0) - 0.5 * h + (1 - h) * 0.25
            loss = loss + (h * h).sum() + ag.tanh(xi @ w).sum()
        return loss

    check(fn, [w, b, v], [(xs,)], calls=4, batch=False)


STACKS = {
    "sum": lambda a, b: ag.stack([a, b, a]).sum(),
    "mean": lambda a, b: (ag.stack([a, b]).mean(axis=0) * b).sum(),
    "broadcast": lambda a, b: (ag.stack([a, b]) + ag.zeros((5, 2, 3, 4))).sum(),
    "axis 1": lambda a, b: ag.stack([a, b, b], axis=1).sum(),
    "axis -1": lambda a, b: (ag.stack([a, b], axis=-1) * 2.0).sum(),
    "scalars": lambda a, b: ag.stack([a.sum(), b.sum(), a.sum()]).sum(),
    "bias rows": lambda a, b: ((ag.stack([a, b]) + b[0]) ** 2).sum(),
    "biases": lambda a, b: (((a + b[0:1]) ** 2) + (a + b[0]) ** 3 + (a + b[0, 0]) ** 2).sum()}


@pytest.mark.parametrize("name", list(STACKS))
def test_stacks_of_broadcast_gradients_match_finite_differences_and_replay(name):
    rng = np.random.default_rng(16)
    a0, b0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    f = STACKS[name]
    assert ag.gradcheck(f, [a0, b0])
    a, b = ag.Tensor(a0, requires_grad=True), ag.Tensor(b0, requires_grad=True)
    for batch in (False, True):
        check(lambda: f(a, b), [a, b], calls=4, batch=batch)


@pytest.mark.parametrize("shapes", [((3, 4), (4,)), ((3, 1), (1,)), ((1, 4), (4,)),
                                    ((3, 4), (1, 4)), ((2, 3, 4), (3, 4)), ((2, 3, 4), (1, 4)),
                                    ((5,), ()), ((3, 0), (0,)), ((0, 4), (4,))], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64])
@pytest.mark.parametrize("layout", ["C", "F", "broadcast"])
def test_sum_array_to_has_the_bits_of_the_general_sum(shapes, dtype, layout):
    gs, shape = shapes
    g = (np.random.default_rng(17).standard_normal(gs) * 100).astype(dtype)
    if layout == "F":
        g = np.asfortranarray(g)
    elif layout == "broadcast" and gs:
        g = np.broadcast_to(g[:1], gs)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    want = g.sum(axis=axes, keepdims=True).reshape(shape)
    got = sum_array_to(g, shape)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
