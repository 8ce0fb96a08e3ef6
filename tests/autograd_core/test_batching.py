"""Replay batches the copies of an op that a loop over time steps records: what depends only on
leaves runs first for all steps at once, what hangs off the recurrence runs last for all steps at
once, and an accumulating chain of additions becomes one sum. Gradients stay eager mode's
(float64, 1e-12), and the replayed program is shorter than the recorded graph."""
import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd_core as ag
import nn
from autograd_core import batching

B, I, H, C = 3, 4, 5, 6


def params(rng, gates=1):
    shapes = {"u": (I, gates * H), "w": (H, gates * H), "b": (gates * H,), "v": (H, C),
              "c": (C,)}
    return {k: ag.Tensor(rng.standard_normal(s) * 0.5, requires_grad=True)
            for k, s in shapes.items()}


def rnn_loop(p, xs, targets, start=0.0):
    h, loss = ag.zeros((B, H), dtype=np.float64), start
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ p["u"] + h @ p["w"] + p["b"])
        loss = loss + nn.cross_entropy(h @ p["v"] + p["c"], targets[t])
    return loss


def gru_loop(p, xs, targets):
    u, w, b = p["u"], p["w"], p["b"]
    h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
    for t in range(xs.shape[0]):
        x = xs[t]
        r = ag.sigmoid(x @ u[:, :H] + h @ w[:, :H] + b[:H])
        z = ag.sigmoid(x @ u[:, H:2 * H] + h @ w[:, H:2 * H] + b[H:2 * H])
        n = ag.tanh(x @ u[:, 2 * H:] + (r * h) @ w[:, 2 * H:] + b[2 * H:])
        h = (1 - z) * h + z * n
        loss = loss + (h * h).mean() + nn.cross_entropy(h @ p["v"] + p["c"], targets[t])
    return loss


def unroll_loop(p, xs, targets):
    h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(ag.matmul(xs[t], p["u"]) + ag.matmul(h, p["w"]) + p["b"])
        loss = loss + h.sum()
    return loss


def run_both(loop, p, xs, targets, calls=4):
    """(eager loss and gradients, the replayed ones of each call, the replay plan)."""
    def grads(fn, *args):
        for t in p.values():
            t.grad = None
        loss = fn(*args)
        value = loss.item()
        loss.backward()
        return value, {k: None if t.grad is None else t.grad.numpy().copy()
                       for k, t in p.items()}

    want = grads(loop, p, xs, targets)
    step = ag.replay(lambda: loop(p, xs, targets))
    got = [grads(step) for _ in range(calls)]
    plan = next(iter(step.plans.values()))
    return want, got, plan


def assert_same(got, want):
    (loss, grads), (want_loss, want_grads) = got, want
    assert abs(loss - want_loss) <= 1e-12 * max(1.0, abs(want_loss))
    for k, w in want_grads.items():
        if w is None:
            assert grads[k] is None
            continue
        np.testing.assert_allclose(grads[k], w, rtol=1e-12,
                                   atol=1e-12 * max(1.0, np.abs(w).max()))


def replayed(loop, steps, seed, gates=1):
    """(the op counts of the replayed program, the plan) of `loop` over random data, after
    checking its last replayed call against eager mode."""
    rng = np.random.default_rng(seed)
    p = params(rng, gates)
    xs = ag.Tensor(rng.standard_normal((steps, B, I)))
    targets = rng.integers(0, C, (steps, B))
    want, got, plan = run_both(loop, p, xs, targets)
    assert_same(got[-1], want)
    return ops_in(plan), plan


def ops_in(plan):
    return collections.Counter(entry[0]._op.name for entry in plan.program)


@pytest.mark.parametrize("loop, gates", [(rnn_loop, 1), (gru_loop, 3), (unroll_loop, 1)])
@pytest.mark.parametrize("steps", [3, 7])
def test_a_batched_replay_gives_eager_gradients(loop, gates, steps):
    rng = np.random.default_rng(steps)
    p = params(rng, gates)
    xs = ag.Tensor(rng.standard_normal((steps, B, I)))
    targets = rng.integers(0, C, (steps, B))
    want, got, plan = run_both(loop, p, xs, targets)
    for g in got:
        assert_same(g, want)
    counts = ops_in(plan)
    # the input projections of all steps are one product (x_t @ U, once per gate)
    assert counts["matmul"] < (gates + 2) * steps
    assert counts["stack"] >= 1


@pytest.mark.parametrize("loop", [rnn_loop, unroll_loop])
def test_the_recurrence_keeps_one_product_and_addition_per_step(loop):
    """x_t U + h W + b: x_t U + b runs for all steps at once, and what is left in the
    recurrence, (x_t U + b) + h W, is one addmm node per step."""
    steps = 9
    counts, plan = replayed(loop, steps, seed=5)
    assert counts["addmm"] >= steps - 1
    assert counts["tanh"] == steps
    assert counts["add"] <= 6  # batched ones and the first step's: none per step


def test_every_gate_of_a_gru_keeps_one_product_per_step_and_no_bias_addition():
    """The update gate z is not on the longest path through the graph (the reset gate is);
    its x_t U_z + h W_z + b_z is reassociated all the same, and so is the first step's, whose
    h_0 is a leaf (computed as early as x_0 U)."""
    steps = 7
    counts, plan = replayed(gru_loop, steps, seed=3, gates=3)
    assert counts["addmm"] >= 3 * steps  # r, z and the candidate: one node each per step
    # per step only h = (1 - z) h + z n and the loss terms add; no gate adds its bias
    per_step = [s for s, *_ in plan.program if s._op.name == "add" and s._data.shape == (B, H)]
    assert len(per_step) <= steps


def test_the_output_layer_and_the_loss_of_every_step_run_as_one_call():
    counts, plan = replayed(rnn_loop, 8, seed=1)
    # each step's batch-mean loss is one node (nn.cross_entropy); the first step's may stay
    # apart
    assert 1 <= counts["mean_softmax_cross_entropy"] <= 2
    # the chain loss = loss + l_t is gone: a handful of additions remain, not one per step
    assert sum(1 for s, *_ in plan.program if s._op.name == "add" and s._data.ndim == 0) <= 2


def test_a_sequence_that_requires_grad_gets_its_gradient_through_the_batched_indexing():
    rng = np.random.default_rng(2)
    p = params(rng)
    xs = ag.Tensor(rng.standard_normal((6, B, I)), requires_grad=True)
    p["xs"] = xs
    targets = rng.integers(0, C, (6, B))

    def backwards(p, xs, targets):  # the steps in reverse order: an index array, not a slice
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in reversed(range(xs.shape[0])):
            h = ag.tanh(xs[t] @ p["u"] + h @ p["w"] + p["b"])
            loss = loss + h.sum()
        return loss

    for loop in (unroll_loop, backwards):
        want, got, plan = run_both(loop, p, xs, targets)
        for g in got:
            assert_same(g, want)
        assert ops_in(plan)["getitem"] < 2 * 6


def test_batched_values_that_disagree_leave_the_graph_unbatched(monkeypatch):
    monkeypatch.setattr(batching, "agrees", lambda graph, built: False)
    rng = np.random.default_rng(3)
    p = params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    targets = rng.integers(0, C, (5, B))
    want, got, plan = run_both(rnn_loop, p, xs, targets)
    assert_same(got[-1], want)
    assert "stack" not in ops_in(plan)


def test_targets_passed_as_an_argument_stay_bound_to_each_call():
    rng = np.random.default_rng(4)
    p = params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    step = ag.replay(lambda ys: rnn_loop(p, xs, ys))
    for k in range(5):
        ys = rng.integers(0, C, (5, B))
        for t in p.values():
            t.grad = None
        loss = step(ys)
        got = loss.item(), {n: None for n in p}
        loss.backward()
        got = got[0], {n: t.grad.numpy().copy() for n, t in p.items()}
        for t in p.values():
            t.grad = None
        want_loss = rnn_loop(p, xs, ys)
        want = want_loss.item(), None
        want_loss.backward()
        want = want[0], {n: t.grad.numpy().copy() for n, t in p.items()}
        assert_same(got, want)


# ---- random cells ------------------------------------------------------------------------------
UNARY = {"tanh": ag.tanh, "sigmoid": ag.sigmoid, "scale": lambda a: a * 0.5,
         "one_minus": lambda a: 1 - a, "neg": lambda a: -a}


@st.composite
def cells(draw):
    """A random step: a few values built from x_t, h and the parameters with the ops replay
    batches, the new h one of them, and what the step adds to the loss."""
    ops = draw(st.lists(st.tuples(st.sampled_from(["unary", "add", "mul", "sub", "proj"]),
                                  st.integers(0, 99), st.integers(0, 99),
                                  st.sampled_from(sorted(UNARY))), min_size=1, max_size=6))
    loss_kind = draw(st.sampled_from(["sum", "mean", "ce", "square"]))
    return ops, loss_kind


def random_loop(cell):
    ops, loss_kind = cell

    def loop(p, xs, targets):
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(xs.shape[0]):
            values = [h, ag.tanh(xs[t] @ p["u"]), h @ p["w"] + p["b"]]
            for kind, i, j, name in ops:
                a, b = values[i % len(values)], values[j % len(values)]
                if kind == "unary":
                    values.append(UNARY[name](a))
                elif kind == "add":
                    values.append(a + b)
                elif kind == "mul":
                    values.append(ag.tanh(a * b))
                elif kind == "sub":
                    values.append(a - b)
                else:
                    values.append(ag.tanh(a @ p["w"]))
            h = ag.tanh(values[-1] + values[2])  # h @ W + b: the parameters always count
            if loss_kind == "sum":
                loss = loss + h.sum()
            elif loss_kind == "mean":
                loss = loss + (h * values[1]).mean()
            elif loss_kind == "ce":
                loss = loss + nn.cross_entropy(h @ p["v"] + p["c"], targets[t])
            else:
                loss = loss + (h * h).sum(axis=1).mean()
        return loss
    return loop


@settings(max_examples=40, deadline=None)
@given(cell=cells(), steps=st.integers(1, 6), seed=st.integers(0, 2 ** 16))
def test_random_cells_replay_with_eager_gradients(cell, steps, seed):
    rng = np.random.default_rng(seed)
    p = params(rng)
    xs = ag.Tensor(rng.standard_normal((steps, B, I)))
    targets = rng.integers(0, C, (steps, B))
    want, got, _ = run_both(random_loop(cell), p, xs, targets, calls=3)
    for g in got:
        assert_same(g, want)


def test_a_subclass_with_its_own_kernel_or_rule_does_not_inherit_how_its_parent_batches():
    from autograd_core.ops.unary import Tanh

    class Scaled(Tanh):
        name = None  # not registered: an abstract variant

        @staticmethod
        def forward(out, x):
            return np.tanh(2 * x)

    class Kept(Tanh):
        name = None
        batch = "elementwise"

        @staticmethod
        def forward(out, x):
            return np.tanh(x)

    assert Tanh.batch == "elementwise"
    assert Scaled.batch is None and Kept.batch == "elementwise"


def test_the_rows_of_a_batched_node_hand_back_their_gradients_stacked():
    """x_t U + b for all t is one node that every step reads one row of; the steps' gradients
    are stacked into its gradient at once (no zero buffer added into row by row), and the
    gradients stay eager mode's. An unbatched replay keeps eager mode's buffer."""
    steps = 6
    counts, plan = replayed(rnn_loop, steps, seed=11)
    kinds = collections.Counter(step[3] for step in plan.steps)
    assert kinds["row"] >= steps - 1
    assert sum(1 for step in plan.steps if step[6] == "rows") >= 1
    rng = np.random.default_rng(11)
    p = params(rng)
    xs = ag.Tensor(rng.standard_normal((steps, B, I)))
    targets = rng.integers(0, C, (steps, B))
    exact = ag.replay(lambda: rnn_loop(p, xs, targets), batch=False)
    for _ in range(3):
        exact().backward()
    assert all(step[3] != "row" for step in next(iter(exact.plans.values())).steps)


def test_rows_that_no_gradient_reached_are_zeros_and_the_dtype_is_the_wider():
    from autograd_core.replay_sweep import gathered_rows

    x = ag.Tensor(np.zeros((3, 2)), requires_grad=True)  # float64
    parts = [np.array([1.0, -0.0], np.float32), None, np.array([2.0, 3.0], np.float32)]
    # the last entry: the row gradient that arrived first
    out = gathered_rows(parts + [parts[2]], x, {})
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 0.0], [2.0, 3.0]])
    full = gathered_rows([parts[0], parts[2], parts[0], parts[0]], x, {})
    assert full.dtype == np.float64 and full.shape == (3, 2)
    np.testing.assert_array_equal(full, [[1.0, 0.0], [2.0, 3.0], [1.0, 0.0]])


def test_a_loss_started_at_zero_puts_the_first_step_with_the_others():
    """loss = 0.0, then loss = loss + l_t: the first step's 0.0 + l_0 is one node more
    between its loss and the result, which kept its output layer and loss out of the batched
    ones; the chain's term is l_0 itself, and every step's output layer runs in one call."""
    steps = 6
    counts, plan = replayed(rnn_loop, steps, seed=12)
    assert counts["mean_softmax_cross_entropy"] == 1 and "mean" not in counts
    assert "add_scalar" not in counts
    assert counts["addmm"] == steps  # the recurrence; no output layer of its own for step 0


def test_a_loss_started_at_a_nonzero_constant_keeps_its_constant():
    def loop(p, xs, targets):
        return rnn_loop(p, xs, targets, start=2.5)

    counts, plan = replayed(loop, 5, seed=13)  # replayed() checks values against eager mode
    assert counts["add_scalar"] == 1
