"""A replayed loop's states written into one buffer per call (replay_buffers): a forward stack
of them, and the stack of a weight's factors in the backward, are views of it instead of
copies. Held bit for bit to the same replay without buffers, and to eager mode (float64,
1e-12), including where the first factor is copied into the buffer's front row."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_buffers, stacked_products
from autograd_core.replay_buffers import OUT, writing_into

from tests.autograd_core.replay_checks import assert_bits, check, param, run


@pytest.mark.parametrize("text, want", [
    ("np.tanh({x0})", "np.tanh(({x0}), out=" + OUT + ")"),
    ("np.add({x0}, {x1})", "np.add(({x0}), ({x1}), out=" + OUT + ")"),
    ("np.maximum({x0}, 0)", "np.maximum(({x0}), (0), out=" + OUT + ")"),
    ("np.add((d := {x1}.dot({x2}.T)), {x0}, d)",
     "np.add((d := {x1}.dot({x2}.T)), ({x0}), out=" + OUT + ")"),  # its own out replaced
    ("(np.tanh({x0}))  # a comment ", "np.tanh(({x0}), out=" + OUT + ")"),
    ("{x0} + {out}._saved", None),  # an operator, not a call
    ("-{x0}", None),
    ("{x0}.dot({x1}.T)", None),  # a method
    ("np.divmod({x0}, {x1})", None),  # two outputs
    ("np.linalg.norm({x0})", None),  # not a ufunc
    ("np.tanh({x0}, out={x1})", None),  # keywords
    ("np.tanh(*{x0})", None),
    ("np.add({x0})", None),  # too few inputs
    ("np.tanh({x0}", None),  # not Python
])
def test_which_forward_texts_can_write_into_a_row(text, want):
    assert writing_into(text) == want


def _loop(steps=6, act=ag.tanh):
    """h_t = act(x_t U + h_{t-1} W), loss = sum_t sum(h_t * h_t): the batched loss stacks the
    states; W's gradient stacks h_0 .. h_{T-1} (h_0 zeros made inside, or an argument)."""
    def fn(xs, u, w, *start):
        h = start[0] if start else ag.zeros((xs.shape[1], w.shape[0]), dtype=xs.dtype)
        loss = 0.0
        for t in range(steps):
            h = act(xs[t] @ u + h @ w)
            loss = loss + (h * h).sum()
        return loss
    return fn


def _params(rng, dtype=np.float64, size=4):
    return param(rng, 3, size, dtype=dtype), param(rng, size, size, dtype=dtype)


def _xs(rng, count=3, steps=6, dtype=np.float64):
    return [(ag.Tensor(rng.standard_normal((steps, 2, 3)).astype(dtype)),) for _ in range(count)]


def _plan(step):
    (plan,) = step.plans.values()
    return plan


def _without_buffers(monkeypatch):
    monkeypatch.setattr(replay_buffers, "place", lambda program, steps:
                        replay_buffers.Placement())


def _with_and_without_buffers(monkeypatch, fn, u, w, args):
    """Five calls of the replayed loop with its buffers, then five without (the placement
    switched off), held to the same bits call by call: (the two placements)."""
    placed = ag.replay(lambda xs: fn(xs, u, w))
    got = [run(placed, [u, w], args[k % 3]) for k in range(5)]
    _without_buffers(monkeypatch)
    plain = ag.replay(lambda xs: fn(xs, u, w))
    want = [run(plain, [u, w], args[k % 3]) for k in range(5)]
    for k, (g, e) in enumerate(zip(got, want)):
        assert_bits(g, e, f"call {k}")
    return _plan(placed).placement, _plan(plain).placement


def test_a_loops_states_are_rows_of_one_buffer_and_its_stacks_views():
    rng = np.random.default_rng(1)
    u, w = _params(rng)
    fn = _loop()
    step = check(lambda xs: fn(xs, u, w), [u, w], _xs(rng), calls=5)
    plan = _plan(step)
    (buffer,) = plan.placement.buffers
    assert buffer.shape == (7, 2, 4) and buffer.lead is not None  # h_0 is copied in front
    (window,) = plan.placement.stacks.values()
    assert (window.lo, window.hi) == (1, 7)
    stacked = [s for s, _, _, _ in plan.program if id(s) in plan.placement.stacks]
    assert stacked[0]._data.base is buffer.buf
    assert [(w.lo, w.hi) for w in plan.placement.windows] == [(1, 7), (0, 6)]


def test_the_backward_stacks_no_state(monkeypatch):
    rng = np.random.default_rng(2)
    u, w = _params(rng)
    fn = _loop()
    step = ag.replay(lambda xs: fn(xs, u, w))
    args = _xs(rng)
    for k in range(3):
        run(step, [u, w], args[k % 3])
    joined = []
    real = stacked_products.np.concatenate

    def counting(arrays, *a, **k):
        joined.append(arrays)
        return real(arrays, *a, **k)

    want = run(lambda xs: fn(xs, u, w), [u, w], args[0])
    monkeypatch.setattr(stacked_products.np, "concatenate", counting)
    got = run(step, [u, w], args[0])
    monkeypatch.undo()
    np.testing.assert_allclose(got[1][1], want[1][1], rtol=1e-12)
    buffer = _plan(step).placement.buffers[0].buf
    assert joined  # the gradients' stacks are still made, W's left factors are not:
    assert not any(len(arrays) == 6 and arrays[1].base is buffer for arrays in joined)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", [ag.tanh, ag.relu, ag.exp])
def test_the_same_bits_as_a_replay_without_buffers(monkeypatch, dtype, act):
    rng = np.random.default_rng(3)
    u, w = _params(rng, dtype)
    args = _xs(rng, dtype=dtype)
    fn = _loop(act=act if act is not ag.exp else (lambda x: ag.exp(x * 0.1)))
    placed, plain = _with_and_without_buffers(monkeypatch, fn, u, w, args)
    assert placed.buffers and not plain.buffers


def test_a_first_state_given_as_an_argument_is_copied_anew_each_call():
    """h_0 changes from call to call: W's factors start with this call's."""
    rng = np.random.default_rng(4)
    u, w = _params(rng)
    fn = _loop()
    argsets = [(x, ag.Tensor(rng.standard_normal((2, 4)))) for (x,) in _xs(rng, count=4)]
    step = check(lambda xs, h0: fn(xs, u, w, h0), [u, w], argsets, calls=8)
    assert _plan(step).placement.buffers[0].lead is not None


def test_the_buffers_are_made_once_and_what_calls_hand_out_stays():
    """Each call writes the same buffers again (their memory is still in the caches); the
    results and gradients earlier calls handed out are not views of them and keep their
    values."""
    rng = np.random.default_rng(5)
    u, w, args = _wide(rng)
    fn = _loop(steps=5)
    step = ag.replay(lambda xs: fn(xs, u, w))
    kept = []
    for k in range(5):
        for p in (u, w):
            p.grad = None
        loss = step(*args[k % 3])
        loss.backward()
        kept.append((loss, loss.numpy().copy(), u.grad, u.grad.numpy().copy(), w.grad,
                     w.grad.numpy().copy()))
    placement = _plan(step).placement
    buffers = [b.buf for b in placement.buffers + placement.gradient_buffers]
    assert len(buffers) == 2
    run(step, [u, w], args[0])
    assert all(a is b for a, b in zip(
        [b.buf for b in placement.buffers + placement.gradient_buffers], buffers))
    for loss, value, gu, gu_value, gw, gw_value in kept:
        np.testing.assert_array_equal(loss.numpy(), value)
        np.testing.assert_array_equal(gu.numpy(), gu_value)
        np.testing.assert_array_equal(gw.numpy(), gw_value)
        for array in (loss.numpy(), gu.numpy(), gw.numpy()):
            assert not any(np.shares_memory(array, b) for b in buffers)


def test_a_state_stacked_twice_or_not_made_by_a_ufunc_is_not_placed():
    rng = np.random.default_rng(6)
    u, w = _params(rng)

    def twice(xs):
        h, states = ag.zeros((2, 4)), []
        for t in range(4):
            h = ag.tanh(xs[t] @ u + h @ w)
            states += [h, h]
        return (ag.stack(states) ** 2).sum()

    def sigmoid_states(xs):  # sigmoid's kernel is no single ufunc
        h, states = ag.zeros((2, 4)), []
        for t in range(4):
            h = ag.sigmoid(xs[t] @ u + h @ w)
            states.append(h)
        return (ag.stack(states) ** 2).sum()

    for fn in (twice, sigmoid_states):
        step = check(fn, [u, w], _xs(rng, steps=4), calls=5)
        assert not _plan(step).placement.stacks


def test_the_generated_forward_switched_off_stacks_again():
    """Without the generated forward the states are not rows: the backward must not take
    the buffer's (stale) rows for them."""
    rng = np.random.default_rng(7)
    u, w = _params(rng)
    fn = _loop()
    args = _xs(rng)
    step = ag.replay(lambda xs: fn(xs, u, w))
    for k in range(3):
        run(step, [u, w], args[k])
    plan = _plan(step)
    assert plan.placement.windows
    plan.forward_blocks = None
    for k in range(3):
        got = run(step, [u, w], args[(k + 1) % 3])
        want = run(lambda xs: fn(xs, u, w), [u, w], args[(k + 1) % 3])
        np.testing.assert_allclose(got[1][1], want[1][1], rtol=1e-12, atol=1e-12)


def test_one_dimensional_states_and_a_single_step():
    rng = np.random.default_rng(8)
    w = param(rng, 4, 4)

    def vector_loop(xs):
        h, loss = ag.zeros(4), 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(w @ h + xs[t])
            loss = loss + (h * h).sum()
        return loss

    for steps in (1, 5):
        argsets = [(ag.Tensor(rng.standard_normal((steps, 4))),) for _ in range(3)]
        check(vector_loop, [w], argsets, calls=5)


@pytest.mark.parametrize("value, want", [
    ("g * (1 - y * y)", "np.multiply((g), (1 - y * y), out=O, casting='no')"),
    ("g / b", "np.divide((g), (b), out=O, casting='no')"),
    ("a - b * c", "np.subtract((a), (b * c), out=O, casting='no')"),
    ("g + 1", "np.add((g), (1), out=O, casting='no')"),
    ("-g", "np.negative((g), out=O, casting='no')"),
    ("np.exp(g)", "np.exp((g), out=O, casting='no')"),
    ("(np.negative(g)) ", "np.negative((g), out=O, casting='no')"),
    ("g ** 2", None),  # no ufunc taken for it
    ("g @ w", None),
    ("product(g, w)", None),
    ("g[0]", None),
    ("np.exp(g, out=x)", None),
    ("np.exp(g, x)", None),  # an output given: not a value
])
def test_which_rule_values_can_write_into_a_row(value, want):
    assert replay_buffers.writing_value(value, "O") == want


def _wide(rng, dtype=np.float64, size=256, steps=5, count=3):
    """A loop whose rows are large enough for its gradients to be written into rows (and
    for no rule factor to stack its states: replay_texts.FACTOR_BYTES)."""
    u, w = param(rng, 3, size, dtype=dtype), param(rng, size, size, dtype=dtype)
    w._data *= 0.2
    xs = [(ag.Tensor(rng.standard_normal((steps, 4, 3)).astype(dtype)),) for _ in range(count)]
    return u, w, xs


def test_a_weights_gradients_are_rows_of_a_buffer_and_their_stack_a_view(monkeypatch):
    rng = np.random.default_rng(9)
    u, w, args = _wide(rng)
    fn = _loop(steps=5)
    step = check(lambda xs: fn(xs, u, w), [u, w], args, calls=4)
    plan = _plan(step)
    assert plan.placement.gradient_windows
    (buffer,) = plan.placement.gradient_buffers
    assert buffer.shape == (5, 4, 256)
    want = run(lambda xs: fn(xs, u, w), [u, w], args[0])
    joined = []
    real = np.concatenate  # (stacked_products.np is numpy itself: eager mode's too)
    monkeypatch.setattr(stacked_products.np, "concatenate",
                        lambda arrays, *a, **k: joined.append(arrays) or real(arrays, *a, **k))
    got = run(step, [u, w], args[0])
    monkeypatch.undo()
    for g, e in zip(got[1], want[1]):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    assert not any(a.shape == (4, 256) for arrays in joined for a in arrays)  # no state, no
    # gradient of one was copied to be stacked


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_rows_keep_the_bits_of_a_replay_without_buffers(monkeypatch, dtype):
    rng = np.random.default_rng(10)
    u, w, args = _wide(rng, dtype)
    fn = _loop(steps=5)
    placed, _ = _with_and_without_buffers(monkeypatch, fn, u, w, args)
    assert placed.gradient_buffers


def test_a_gradient_of_another_dtype_than_its_node_is_not_cast(monkeypatch):
    """float32 states whose gradients come out float64 (the loss multiplies them by a
    float64 constant): the rule's result cannot be written into the float32 row without a
    cast, so it is computed as before."""
    rng = np.random.default_rng(11)
    u, w, args = _wide(rng, np.float32)
    scale = ag.Tensor(rng.uniform(0.5, 1.5, (4, 256)))  # float64

    def fn(xs):
        h, loss = ag.zeros((4, 256), dtype=np.float32), 0.0
        for t in range(5):
            h = ag.tanh(xs[t] @ u + h @ w)
            loss = loss + (h * scale).sum()
        return loss

    placed = ag.replay(fn)
    got = [run(placed, [u, w], args[k % 3]) for k in range(5)]
    (buffer,) = _plan(placed).placement.gradient_buffers  # float32 rows, float64 results
    assert buffer.dtype == np.float32 and got[0][1][1].dtype == np.float32
    _without_buffers(monkeypatch)
    plain = ag.replay(fn)
    want = [run(plain, [u, w], args[k % 3]) for k in range(5)]
    for k, (g, e) in enumerate(zip(got, want)):
        assert_bits(g, e, f"call {k}")
    eager = run(fn, [u, w], args[4 % 3])
    for g, e in zip(got[4][1], eager[1]):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("call", [0, 1, 3])
def test_an_argument_changed_in_place_before_the_backward_raises_in_every_call(call):
    """As eager mode: in the two recording calls too (the argument reaches the function as
    a tensor that requires grad, sharing the argument's version counter)."""
    rng = np.random.default_rng(12)
    u, w = _params(rng)
    fn = _loop()
    step = ag.replay(lambda xs: fn(xs, u, w))
    (xs,) = _xs(rng, count=1)[0]
    for k in range(call):
        run(step, [u, w], (xs,))
    out = step(xs)
    with ag.no_grad():
        xs.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        out.backward()
    eager = fn(xs, u, w)
    with ag.no_grad():
        xs.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        eager.backward()


def test_a_buffer_whose_row_a_leaf_receives_as_its_gradient_is_made_anew():
    """c_t + h @ W with leaves c_t: each c_t's gradient is the row its step's gradient was
    written into. An observer may keep it: that buffer is not written again."""
    rng = np.random.default_rng(13)
    w = param(rng, 256, 256)
    w._data *= 0.1
    cs = [ag.Tensor(rng.standard_normal((4, 256)), requires_grad=True) for _ in range(5)]

    def fn(*cs):
        h, loss = ag.zeros((4, 256)), 0.0
        for c in cs:
            h = ag.tanh(c + h @ w)
            loss = loss + (h * h).sum()
        return loss

    class Keep(ag.SweepObserver):
        def __init__(self):
            self.kept = []

        def node(self, tensor, grad, sent):
            self.kept += [(gi, gi.copy()) for _, _, gi in sent]

    step = ag.replay(fn)
    for _ in range(3):
        run(step, [w] + cs, cs)
    (buffer,) = _plan(step).placement.gradient_buffers
    keep = Keep()
    step(*cs).backward(observer=keep)
    rows = [a for a, _ in keep.kept if a.base is not None and a.base.shape == buffer.shape]
    assert len(rows) == 5  # each c_t's gradient is a row of the gradient buffer
    assert buffer.handed_out and buffer.buf is rows[0].base  # the next backward makes another
    others = [ag.Tensor(c.numpy() * 2, requires_grad=True) for c in cs]
    run(step, [w] + others, others)  # other gradients, which rows of it would now hold
    assert all(np.array_equal(a, kept) for a, kept in keep.kept)
    got = run(step, [w] + cs, cs)
    want = run(fn, [w] + cs, cs)
    for g, e in zip(got[1], want[1]):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_a_buffer_let_go_stays_until_the_next_call_makes_another():
    """After a backward handed a view of a buffer out, another backward of the same call
    (retain_graph) still reads it; the next call's `ready` makes a new one."""
    buffer = replay_buffers.Buffer(3, (2, 4), np.dtype(np.float64))
    buffer.ready_views()
    first, views = buffer.buf, buffer.views
    buffer.ready_views()
    assert buffer.buf is first and buffer.views is views  # kept from call to call
    buffer.let_go()
    assert buffer.buf is first
    buffer.ready_views()
    assert buffer.buf is not first and buffer.views is not views
    assert all(v.base is buffer.buf for v in buffer.views)


def test_no_gradient_buffer_where_no_rule_can_write_into_it():
    """Unbatched, c + h @ W hands the add's gradient itself on to the product: no rule
    computes the product's gradient, so no buffer is kept for it."""
    rng = np.random.default_rng(14)
    u, w, args = _wide(rng)
    fn = _loop(steps=5)
    for batch, placed in ((False, False), (True, True)):
        step = check(lambda xs: fn(xs, u, w), [u, w], args, calls=4, batch=batch)
        assert bool(_plan(step).placement.gradient_buffers) is placed


def test_buffer_rows_are_views_of_consecutive_rows_in_either_order():
    buffer = replay_buffers.Buffer(6, (2, 3), np.float32)
    buffer.ready_views()
    buffer.buf[...] = np.arange(36, dtype=np.float32).reshape(6, 2, 3)
    views = buffer.views
    up, down = buffer.rows(views[1:5]), buffer.rows(views[4:0:-1])
    assert np.shares_memory(up, buffer.buf) and np.shares_memory(down, buffer.buf)
    np.testing.assert_array_equal(up, np.stack(views[1:5]))
    np.testing.assert_array_equal(down, np.stack(views[4:0:-1]))
    assert buffer.rows(views[5:6]).shape == (1, 2, 3)
    assert buffer.rows([views[1], views[3]]) is None  # not consecutive
    assert buffer.rows([views[1], views[2].copy()]) is None  # not these arrays
    assert buffer.rows([views[2], views[1], views[2]]) is None
    assert buffer.rows([np.zeros((2, 3), np.float32)]) is None
    other = replay_buffers.Buffer(6, (2, 3), np.float32)
    assert other.rows(views[1:3]) is None  # views not made yet


def test_a_factor_over_part_of_a_loop_reads_its_rows_without_copying(monkeypatch):
    """A loop of small states (the long unroll's): the block of the middle steps computes
    tanh's factor 1 - h^2 for its rows at once; the rows are a sub-window of the states'
    buffer, read newest first, and are stacked as a view, with the bits of eager mode."""
    rng = np.random.default_rng(5)
    u = ag.Tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True)
    w = ag.Tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True)
    xs = ag.Tensor(rng.standard_normal((12, 1, 4)))

    def loop(xs, u, w):
        h, loss = ag.zeros((1, 4)), 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(ag.matmul(xs[t], u) + ag.matmul(h, w))
            loss = loss + h.sum()
        return loss

    step = ag.replay(loop)
    for _ in range(3):
        run(step, [u, w], (xs, u, w))
    joined = []
    real = stacked_products.np.concatenate

    def counting(arrays, *a, **k):
        joined.append(arrays)
        return real(arrays, *a, **k)

    monkeypatch.setattr(stacked_products.np, "concatenate", counting)
    got = run(step, [u, w], (xs, u, w))
    monkeypatch.undo()
    buffers = [b.buf for b in _plan(step).placement.buffers]
    assert buffers and not any(all(a.base is b for a in arrays) for arrays in joined
                               for b in buffers)  # (W's factors start with h_0: copied)
    _without_buffers(monkeypatch)
    plain = ag.replay(loop)
    for _ in range(3):
        want = run(plain, [u, w], (xs, u, w))
    assert_bits(got, want)  # the bits of the replay without buffers (its sums batched)
    eager = run(loop, [u, w], (xs, u, w))
    for g, e in zip(got[1], eager[1]):
        np.testing.assert_allclose(g, e, rtol=1e-12)
