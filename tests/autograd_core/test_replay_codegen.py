"""Replay's generated blocks (replay_codegen): the same bits as the plan's loops and as eager
mode (batch=False), on what the generated code decides once: a slot's first contribution,
later ones added in place only into arrays the sweep owns, a rule returning None at run time,
sum_to, indexing's buffers, many inputs, and the size above which a plan keeps its loops."""
import re
import traceback

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_codegen
from autograd_core.function import record

from tests.autograd_core.replay_checks import assert_bits, check, param, run


class _SignGate(ag.Op):
    """x * y whose rule gives x no gradient where the incoming gradient sums below zero: a
    rule that returns None for an input at run time, on values."""
    name = None  # not registered in ag.ops_registry

    @staticmethod
    def forward(out, x, y):
        return x * y

    @staticmethod
    def backward(g, out, xp):
        x, y = out._inputs
        return (None if g.sum() < 0 else g * xp.val(y), g * xp.val(x))


def _gate(x, y):
    return record(_SignGate, x.data * y.data, (x, y))


class _Fragile(ag.Op):
    """2 x whose rule raises while `broken` is set."""
    name = None
    broken = False

    @staticmethod
    def forward(out, x):
        return 2 * x

    @staticmethod
    def backward(g, out, xp):
        if _Fragile.broken:
            raise ValueError("fragile: broken rule")
        return (2 * g,)


def _plan(step):
    (plan,) = [p for p in step.plans.values() if not isinstance(p, str)]
    assert plan.confirmed
    return plan


def _generated_equals_loops(step, params, args=()):
    """The confirmed plan's last call, run again with its generated blocks and with its loops:
    the same bits."""
    plan = _plan(step)
    assert plan.forward_blocks is not None and plan.backward_blocks is not None
    got = run(step, params, args)
    blocks = plan.forward_blocks, plan.backward_blocks
    plan.forward_blocks = plan.backward_blocks = None
    try:
        want = run(step, params, args)
    finally:
        plan.forward_blocks, plan.backward_blocks = blocks
    assert_bits(got, want, "generated blocks against the loops")


def test_a_rule_returning_none_at_run_time_in_first_and_later_contributions():
    rng = np.random.default_rng(0)
    w, v = param(rng, 3, 4), param(rng, 3, 4)
    signs = [np.array(s, dtype=np.float64) for s in ([1.0, -1.0, 1.0, -1.0], [-1.0] * 4,
                                                      [1.0] * 4, [-1.0, 1.0, 1.0, 1.0])]

    def fn(x, s):
        h = x
        for _ in range(5):
            # x and h each take several contributions, some of them None at run time
            h = _gate(h, w) + _gate(x, v) + _gate(h, v)
            h = ag.tanh(h) * s
        return ag.sum(h)

    x = ag.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    argsets = [(x, s) for s in signs]
    step = check(fn, [w, v, x], argsets, calls=8, batch=False)
    _generated_equals_loops(step, [w, v, x], argsets[1])


def test_three_and_more_contributions_and_one_array_handed_to_two_inputs():
    rng = np.random.default_rng(1)
    w = param(rng, 4, 4)

    def fn(x):
        h = x
        for _ in range(6):
            a = h @ w
            h = ag.tanh(a + a) + a * 0.5 + ag.exp(-a * a)  # add hands g to both of its inputs
            h = h + h + x  # x: one contribution per step, h: the same array twice
        return ag.sum(h * h)

    x = param(rng, 2, 4)
    step = check(fn, [w, x], [(x,)], calls=5, batch=False)
    _generated_equals_loops(step, [w, x], (x,))


def test_broadcast_bias_and_indexed_arguments_over_a_loop():
    """sum_to into a bias used at every step, and indexing's zero buffers (backward_into),
    first and later, with batch=False (eager bits) and batched (against the loops)."""
    rng = np.random.default_rng(2)
    u, w, b = param(rng, 3, 5), param(rng, 5, 5), param(rng, 5)

    def fn(xs):
        h = ag.zeros((2, 5), dtype=np.float64)
        total = 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(xs[t] @ u + h @ w + b)
            total = total + ag.sum(h * h) + ag.sum(xs[t])
        return total

    xs = param(rng, 7, 2, 3)
    check(fn, [u, w, b, xs], [(xs,)], calls=4, batch=False)
    step = check(fn, [u, w, b, xs], [(xs,)], calls=4, batch=True)
    _generated_equals_loops(step, [u, w, b, xs], (xs,))


def test_ops_with_many_inputs_run_their_inputs_as_one_tuple():
    rng = np.random.default_rng(3)
    w = param(rng, 4)

    def fn(x):
        parts = [ag.tanh(x * w + k) for k in range(9)]
        return ag.sum(ag.stack(parts)[:8] * ag.concatenate(parts[:8]).reshape(8, 4))

    x = param(rng, 4)
    step = check(fn, [w, x], [(x,)], calls=4, batch=False)
    _generated_equals_loops(step, [w, x], (x,))


def test_a_plan_over_its_size_budget_keeps_its_loops(monkeypatch):
    monkeypatch.setattr(replay_codegen, "budget", lambda nodes: 0)
    monkeypatch.setattr(replay_codegen, "_cache", {})
    rng = np.random.default_rng(4)
    w = param(rng, 3, 3)

    def fn(x):
        h = x
        for _ in range(4):
            h = ag.sigmoid(h @ w)
        return ag.sum(h)

    x = param(rng, 2, 3)
    step = check(fn, [w, x], [(x,)], calls=4, batch=False)
    plan = _plan(step)
    assert plan.forward_blocks is None and plan.backward_blocks is None


def test_a_long_loop_compiles_a_few_blocks_whatever_its_length():
    rng = np.random.default_rng(5)
    w = param(rng, 4, 4)

    def fn(x, steps):
        h = x
        for _ in range(steps):
            h = ag.tanh(h @ w) * 0.5 + h
        return ag.sum(h)

    x = param(rng, 1, 4)
    made = {}
    for steps in (50, 400):
        replay_codegen._cache.clear()
        step = check(fn, [w, x], [(x, steps)], calls=3, batch=False)
        plan = _plan(step)
        made[steps] = len(replay_codegen._cache)
        assert len(plan.forward_blocks) <= 6 and len(plan.backward_blocks) <= 6
    assert made[50] == made[400]


def test_a_loop_with_many_nodes_per_step_compiles():
    """A step of 20 products and tanh through ten widths: in the backward (whose blocks know
    the shapes) no period shorter than the step."""
    rng = np.random.default_rng(6)
    widths = list(range(4, 14)) + [4]
    ws = [param(rng, a, b) for a, b in zip(widths, widths[1:])]

    def fn(x):
        h = x
        for _ in range(5):
            y = h
            for w in ws:
                y = ag.tanh(y @ w)
            h = h + y
        return ag.sum(h)

    x = param(rng, 2, 4)
    step = check(fn, ws + [x], [(x,)], calls=3, batch=False)
    plan = _plan(step)
    assert max(len(rows) for _, rows in plan.backward_blocks) >= 3
    _generated_equals_loops(step, ws + [x], (x,))


def test_a_rule_raising_inside_a_generated_block_shows_the_block_line():
    rng = np.random.default_rng(7)
    w = param(rng, 3)

    def fn(x):
        h = x
        for _ in range(4):
            m = h * w
            h = record(_Fragile, 2 * m.data, (m,))
        return ag.sum(h)

    x = param(rng, 3)
    step = check(fn, [w, x], [(x,)], calls=3, batch=False)
    assert _plan(step).backward_blocks is not None
    out = step(x)
    _Fragile.broken = True
    try:
        with pytest.raises(ValueError, match="fragile") as caught:
            out.backward()
    finally:
        _Fragile.broken = False
    text = "".join(traceback.format_exception(caught.value))
    assert "<replay block" in text
    assert re.search(r"r = op\d+\.backward\(g, t\d+, xp\)", text)  # the generated line itself


@pytest.mark.parametrize("keys, want", [
    ([9, 1, 2, 3, 1, 2, 3, 1, 2, 3, 4, 5, 5, 5], [(0, 1, 1), (1, 3, 3), (10, 1, 1), (11, 1, 3)]),
    ([1, 2, 1, 2, 1, 2, 1, 2], [(0, 2, 4)]),  # not the block of 4 (the shorter covers as much)
    ([1, 2, 3], [(0, 1, 1), (1, 1, 1), (2, 1, 1)]),
    ([0] + list(range(1, 41)) * 3 + [0], [(0, 1, 1), (1, 40, 3), (121, 1, 1)]),  # long steps
    ([7, 1, 2, 7, 3, 4, 5, 6, 3, 4, 5, 6], [(0, 1, 1), (1, 1, 1), (2, 1, 1), (3, 1, 1),
                                          (4, 4, 2)]),  # 7 ... 7 is no repeat
    ([], []),
])
def test_blocks_cover_the_keys_in_order_with_the_repeating_blocks(keys, want):
    assert list(replay_codegen._blocks(keys)) == want


def test_blocks_that_repeat_nowhere_or_cover_little_run_together():
    runs = [(0, 1, 1), (1, 2, 1), (3, 3, 5), (18, 1, 1), (19, 1, 1), (20, 2, 3), (26, 1, 1)]
    assert list(replay_codegen._merge(runs, 64)) == [(0, 3, 1), (3, 3, 5), (18, 9, 1)]
    assert list(replay_codegen._merge(runs, 2)) == [(0, 1, 1), (1, 2, 1), (3, 3, 5),
                                                    (18, 2, 1), (20, 6, 1), (26, 1, 1)]


@pytest.mark.parametrize("batch", [True, False])
def test_replayed_leaf_gradients_are_each_leafs_own_array(batch):
    """A leaf's .grad from a replayed backward is an array no other leaf shares (x + y hands
    both the same gradient inside the replayed sweep), and later backwards add into it."""
    rng = np.random.default_rng(5)
    x, y, w = param(rng, 3, 4), param(rng, 3, 4), param(rng, 4, 2)

    def fn():
        return ((x + y) @ w).sum() + (x * 2.0).sum()

    step = ag.replay(fn, batch=batch)
    for _ in range(3):
        x.grad = y.grad = w.grad = None
        step().backward()
    x.grad = y.grad = w.grad = None
    fn().backward()
    want = [t.grad.numpy().copy() for t in (x, y, w)]
    x.grad = y.grad = w.grad = None
    step().backward()
    got = [t.grad.numpy() for t in (x, y, w)]
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)
    assert not np.shares_memory(got[0], got[1]) and not np.shares_memory(got[1], got[2])
    y.grad.data[...] = 0.0  # changing one leaf's gradient in place leaves the others alone
    np.testing.assert_array_equal(x.grad.numpy(), want[0])
    step().backward()  # a second backward adds into the leaves' gradients
    for t, e in zip((x, w), (want[0], want[2])):
        np.testing.assert_allclose(t.grad.numpy(), 2 * e, rtol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), want[1], rtol=1e-12)


def _sources():
    import linecache
    return ["".join(linecache.cache[name][2]) for name in replay_codegen._files
            if name in linecache.cache]


def _loop(weights):
    """h = tanh(x_t @ U + h @ W_t) over the steps, W_t = weights[t % len(weights)]."""
    def fn(xs, u, *ws):
        h, loss = ag.zeros((1, 4), dtype=xs.dtype), 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(ag.matmul(xs[t], u) + ag.matmul(h, ws[t % len(ws)]))
            loss = loss + (h * h).sum()
        return loss
    return fn


@pytest.mark.parametrize("shared", [True, False])
def test_a_loops_weight_is_read_once_per_block_with_the_same_bits(monkeypatch, shared):
    """A weight that every repeat of a block reads (the same tensor in each row) is bound,
    with its transpose, once before the block's loop; a weight that changes from step to step
    is read per row. Either way the bits of the blocks without that binding."""
    rng = np.random.default_rng(7)
    u = ag.Tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True)
    ws = [ag.Tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True)
          for _ in range(1 if shared else 9)]
    xs = ag.Tensor(rng.standard_normal((9, 1, 4)))
    fn = _loop(ws)
    args, params = (xs, u, *ws), [u, *ws]
    replay_codegen._forget()
    step = ag.replay(fn)
    for _ in range(3):
        got = run(step, params, args)
    bound = [s for s in _sources() if re.search(r"^    X\d+_\d+ = rows\[0\]", s, re.M)]
    assert bool(bound) == shared
    monkeypatch.setattr(replay_codegen, "_invariant", lambda *a: None)
    replay_codegen._forget()
    plain = ag.replay(fn)
    for _ in range(3):
        want = run(plain, params, args)
    assert not any(re.search(r"X\d+_\d+", s) for s in _sources())
    assert_bits(got, want)
    eager = run(fn, params, args)  # (replay batches the loss's sum: rounding differs)
    for g, e in zip(got[1], eager[1]):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12 * np.abs(e).max())


def _gradient_products(op_name, dtype, grad_dtype, rows):
    """A loop whose step's product (matmul, linear or addmm of an x of `rows` rows, in
    `dtype`) receives gradients of `grad_dtype`: its output is multiplied by a tensor of
    that dtype before the loss."""
    rng = np.random.default_rng(11)
    w = ag.Tensor(rng.standard_normal((4, 4)).astype(dtype) * 0.5, requires_grad=True)
    c = ag.Tensor(rng.standard_normal((rows, 4)).astype(dtype) * 0.5, requires_grad=True)
    scale = ag.Tensor(rng.standard_normal((rows, 4)).astype(grad_dtype))
    xs = ag.Tensor(rng.standard_normal((5, rows, 4)).astype(dtype), requires_grad=True)

    def fn(xs, w, c, scale):
        h, loss = ag.zeros((rows, 4), dtype=dtype), 0.0
        for t in range(xs.shape[0]):
            a = xs[t] + h
            p = (ag.matmul(a, w) if op_name == "matmul" else ag.linear(a, w, c)
                 if op_name == "linear" else ag.addmm(c, a, w))
            h = ag.tanh(p)
            loss = loss + (p * scale).sum() + h.sum()
        return loss
    return fn, (xs, w, c, scale), [xs, w, c]


@pytest.mark.parametrize("op_name", ["matmul", "linear", "addmm"])
@pytest.mark.parametrize("dtype, grad_dtype", [(np.float32, np.float32),
                                               (np.float32, np.float64),
                                               (np.float64, np.float64)])
@pytest.mark.parametrize("rows", [1, 3])
def test_a_replayed_gradient_product_calls_dot_itself_only_for_one_dtype(
        monkeypatch, op_name, dtype, grad_dtype, rows):
    """A replayed rule's product g @ W^T is the array's own dot where the node's shapes make
    linalg.product take it (asked of g's dtype as the block runs) and product's call
    otherwise: eager mode's bits (batch=False), with a gradient of the weight's dtype and of
    another, in a loop and outside one."""
    from autograd_core import replay_texts
    from autograd_core.ops.linalg import product

    mixed = []  # the dtypes of the products the generated blocks hand to product()

    def watched(a, b):
        mixed.append(a.dtype != b.dtype)
        return product(a, b)

    monkeypatch.setitem(replay_texts.NAMES, "product", watched)
    fn, args, params = _gradient_products(op_name, dtype, grad_dtype, rows)
    replay_codegen._forget()
    check(fn, params, (args,), calls=4, batch=False)
    text = "\n".join(_sources())
    assert re.search(r"g\.dot\(", text) and "if g.dtype is" in text
    if grad_dtype is dtype:  # dot itself, every time
        assert not mixed
    else:  # a float64 gradient reaching the float32 product: product's own call
        assert mixed and all(mixed)
