"""A one-input rule of the form g * F, F a function of the output (tanh, sigmoid) or the input
(relu) alone: in a replayed loop's block, F is computed once for every step on the steps'
stacked arrays and each step's gradient multiplied by its row (replay_texts.factor). Held to
eager mode bit for bit (batch=False) and within 1e-12 (batch=True), for each op, dtype and
shape, and never used where the rule that runs is not the text."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_codegen, replay_texts
from autograd_core.ops.unary import Tanh
from autograd_core.replay_texts import factor

from tests.autograd_core.replay_checks import assert_bits, check, param, run


@pytest.mark.parametrize("expr, want", [
    ("{g} * (1 - {out}._data * {out}._data)", ("1 - {a} * {a}", "{out}._data")),
    ("{g} * ({out}._data - {out}._data * {out}._data)", ("{a} - {a} * {a}", "{out}._data")),
    ("{g} * ({x0} > 0)", ("{a} > 0", "{x0}")),
    ("{g} * (np.cos({x0}))", ("np.cos({a})", "{x0}")),
    ("{g} * {out}._data", None),  # nothing to compute ahead
    ("{g} * ({out}._data)", None),
    ("{g} * (a) + (b)", None),  # not g times one factor
    ("{g} * ({x0} * {out}._data)", None),  # two arrays
    ("{g} * ({g} > 0)", None),  # the gradient itself
    ("{g} / {x0}", None),
    (None, None),
])
def test_which_rules_have_a_factor(expr, want):
    assert factor(expr) == want


def _loop(act, steps=7):
    def fn(xs, u, w):
        h, loss = ag.zeros((xs.shape[1], w.shape[0]), dtype=xs.dtype), 0.0
        for t in range(steps):
            h = act(xs[t] @ u + h @ w)
            loss = loss + (h * h).sum()
        return loss
    return fn


def _sources():
    return "".join("".join(lines) for _, _, lines, _ in
                   (replay_codegen.linecache.cache[n] for n in replay_codegen._files))


ACTS = {"tanh": ag.tanh, "sigmoid": ag.sigmoid, "relu": ag.relu}


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [False, True])
def test_a_loop_replays_eager_gradients(act, dtype, batch):
    rng = np.random.default_rng(5)
    u, w = param(rng, 3, 4, dtype=dtype), param(rng, 4, 4, dtype=dtype)
    xs = [ag.Tensor((rng.standard_normal((7, 2, 3)) * 2).astype(dtype)) for _ in range(2)]
    fn = _loop(ACTS[act])
    replay_codegen._forget()
    body = lambda xs: fn(xs, u, w)  # noqa: E731
    if dtype == np.float64 or not batch:
        check(body, [u, w], [(x,) for x in xs], calls=5, batch=batch)
    else:  # float32 batched: held to float64 eager within float32's rounding
        step = ag.replay(body, batch=True)
        for x in xs * 2:
            for p in (u, w):
                p.grad = None
            step(x).backward()
            got = [p.grad.numpy().copy() for p in (u, w)]
            for p in (u, w):
                p.grad = None
            body(x).backward()
            for g, p in zip(got, (u, w)):
                np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-5)
    if not batch:
        assert "enumerate(rows)" in _sources()


def test_saturated_and_special_values_keep_eager_bits():
    rng = np.random.default_rng(6)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    xs = rng.standard_normal((6, 2, 3)) * 40  # tanh at +-1: 1 - y^2 is 0
    xs[2, 0, 0], xs[3, 1, 2] = -0.0, 1e-300
    fn = _loop(ag.tanh, steps=6)
    check(lambda xs: fn(xs, u, w), [u, w], [(ag.Tensor(xs),)], calls=4, batch=False)


def test_a_rule_replaced_after_the_plan_was_made_records_again(monkeypatch):
    rng = np.random.default_rng(11)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    xs = ag.Tensor(rng.standard_normal((6, 2, 3)))
    fn = _loop(ag.tanh, steps=6)
    body = lambda xs: fn(xs, u, w)  # noqa: E731
    step = ag.replay(body, batch=False)
    for _ in range(3):  # recorded, confirmed, replayed
        run(step, [u, w], (xs,))

    def backward(g, out, xp):  # twice the true rule
        y = xp.val(out)
        return (2 * g * (1 - y * y),)

    monkeypatch.setattr(Tanh, "backward", staticmethod(backward))
    with pytest.warns(ag.ReplayWarning, match="rule of op 'tanh' was replaced"):
        got = run(step, [u, w], (xs,))
    assert_bits(got, run(body, [u, w], (xs,)))
    for _ in range(3):  # recorded again with the new rule, then replayed
        assert_bits(run(step, [u, w], (xs,)), run(body, [u, w], (xs,)))


def test_a_replaced_rule_runs_instead_of_the_factor(monkeypatch):
    rng = np.random.default_rng(7)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    xs = ag.Tensor(rng.standard_normal((6, 2, 3)))
    fn = _loop(ag.tanh, steps=6)
    calls = []

    def backward(g, out, xp):  # a learner's own rule: twice the true one
        calls.append(1)
        y = xp.val(out)
        return (2 * g * (1 - y * y),)

    monkeypatch.setattr(Tanh, "backward", staticmethod(backward))
    replay_codegen._forget()
    check(lambda xs: fn(xs, u, w), [u, w], [(xs,)], calls=4, batch=False)
    assert calls and "= one[F" not in _sources()


def test_a_second_backward_recomputes_the_factor_from_this_calls_values():
    rng = np.random.default_rng(8)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    fn = _loop(ag.sigmoid, steps=6)
    step = ag.replay(lambda xs: fn(xs, u, w), batch=False)
    for k in range(4):
        xs = ag.Tensor(rng.standard_normal((6, 2, 3)) * (k + 1))
        for p in (u, w):
            p.grad = None
        out = step(xs)
        out.backward(retain_graph=True)
        first = [p.grad.numpy().copy() for p in (u, w)]
        out.backward()
        got = [p.grad.numpy().copy() for p in (u, w)]
        for p in (u, w):
            p.grad = None
        fn(xs, u, w).backward()
        for g1, g2, p in zip(first, got, (u, w)):
            assert g1.tobytes() == p.grad.numpy().tobytes()
            np.testing.assert_array_equal(g2, 2 * g1)


def test_rows_of_other_dtypes_do_not_share_a_stack():
    rng = np.random.default_rng(9)
    w64 = param(rng, 4, 4)

    def fn(h0):
        h, loss = ag.Tensor(h0), 0.0
        for t in range(8):  # float32 and float64 steps alternate
            x = h if t % 2 == 0 else h.astype(np.float32)
            h = ag.tanh(x @ w64.astype(x.dtype)).astype(np.float64)
            loss = loss + h.sum()
        return loss

    h0 = rng.standard_normal((2, 4))
    check(fn, [w64], [(h0,), (h0 * 3,)], calls=4, batch=False)


def test_steps_larger_than_the_limit_keep_the_rule_per_step():
    rng = np.random.default_rng(10)
    hidden = replay_texts.FACTOR_BYTES // 8 // 4 + 1  # a (4, hidden) float64 state: too large
    u, w = param(rng, 3, hidden), param(rng, hidden, hidden)
    xs = ag.Tensor(rng.standard_normal((5, 4, 3)))
    replay_codegen._forget()
    check(lambda xs: _loop(ag.tanh, steps=5)(xs, u, w), [u, w], [(xs,)], calls=3, batch=False)
    sources = _sources()
    assert "np.tanh(" in sources and "= one[F" not in sources and "g * (one[t" in sources


def test_relu_copies_of_a_loop_run_batched():
    """relu declares itself elementwise: its copies that depend on nothing of each other (an
    output layer's activation at every step) run as one call, with eager mode's gradients."""
    rng = np.random.default_rng(12)
    u, w, v = param(rng, 3, 4), param(rng, 4, 4), param(rng, 4, 2)
    xs = ag.Tensor(rng.standard_normal((8, 2, 3)))

    def fn(xs):
        h, loss = ag.zeros((2, 4)), 0.0
        for t in range(8):
            h = ag.tanh(xs[t] @ u + h @ w)
            loss = loss + ag.relu(h @ v - 0.1).sum()  # relu of each step's output, independent
        return loss

    step = check(fn, [u, w, v], [(xs,)], calls=4, batch=True)
    plan = next(iter(step.plans.values()))
    relus = [s for s, *_ in plan.program if getattr(s._op, "name", None) == "relu"]
    assert len(relus) < 8  # the eight copies became fewer calls on stacked operands
