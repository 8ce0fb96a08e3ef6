"""Review 19d: hostile probes of today's two changes to ag.replay's batched mode: the operand
order of shared product operands (replay_layout.py) and the reassociation of (p + q) + c
(batching._Graph.reassociate). Every replayed call is compared with eager mode in float64
(loss and gradients, 1e-12 relative scaled by the largest gradient; batch=False bit for bit).

Each problem the review found has its test here, above the line; below it, what held."""
import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core import replay_layout

from tests.autograd_core.replay_checks import assert_bits, assert_same, check, param, run

B, I, H = 3, 4, 5

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.replayer.ReplayWarning")


def _plan(step):
    plans = [p for p in step.plans.values() if not isinstance(p, str) and p.confirmed]
    assert len(plans) == 1
    return plans[0]


# ---- problems ------------------------------------------------------------------------------
def test_two_nested_reassociations_of_one_chain_do_not_drop_a_sum_that_is_still_read():
    """x_t U + h W + b + e_t: (x_t U + h W) + b and ((...) + b) + e_t were both reassociated,
    the second from the first's old inputs, so that it read x_t U + h W, which the first had
    dropped: the second call raised a KeyError (its backward had no slot for that sum).
    Before today's change the chain batched. Now the outer sum waits for the inner one."""
    rng = np.random.default_rng(0)
    T = 6
    u, w, b = param(rng, I, H), param(rng, H, H), param(rng, H)

    def fn(xs, es):
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(T):
            h = ag.tanh(xs[t] @ u + h @ w + b + es[t])
            loss = loss + (h * h).sum()
        return loss

    argsets = [(rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H)))
               for _ in range(3)]
    step = check(fn, [u, w, b], argsets, calls=6)
    plan = _plan(step)
    assert plan.batched
    # the recurrence keeps one addition to h W per step (the rest is added ahead of it)
    adds = [s for s, *_ in plan.program if s._op.name == "add"]
    assert len(adds) <= 2 * T + 2


def _looks_faster(order):
    """A stand-in for replay_layout._cost on a BLAS where products read matrices in `order`
    much faster: a call that reads a matrix in Fortran order (and not C) costs a tenth for
    "F", ten times as much for "C"."""
    def cost(kernel, s, arrays):
        fortran = any(a.ndim == 2 and a.flags.f_contiguous and not a.flags.c_contiguous
                      for a in arrays)
        return 0.1 if fortran == (order == "F") else 1.0
    return cost


def _replayed_both_ways(monkeypatch, fn, params, argsets, order, calls=5):
    """(the replayed calls where `order` looks faster, those where no copy is taken, the
    number of copies in the first plan)."""
    out, copies = {}, None
    for how in ("faster", "never"):
        with monkeypatch.context() as m:
            if how == "faster":
                m.setattr(replay_layout, "_cost", _looks_faster(order))
            else:
                m.setattr(replay_layout, "_faster_order", lambda program, places: None)
            step = ag.replay(fn)
            out[how] = [run(step, params, argsets[k % len(argsets)]) for k in range(calls)]
            if how == "faster":
                copies = sum(s._op is replay_layout.CopyStep for s, *_ in _plan(step).program)
    for k in range(calls):
        assert_same(out["faster"][k], run(fn, params, argsets[k % len(argsets)]), f"call {k}")
    return out["faster"], out["never"], copies


def test_the_order_chosen_by_timing_does_not_show_where_a_later_use_has_another_shape(
        monkeypatch):
    """Only the first use's product was checked for the same bits in both orders; a later
    product of the shared weight with another shape ((1, 8) @ W here, which this BLAS sums in
    another order for a Fortran W) then read the copy, and whether a copy was taken (decided
    by timing) showed in the loss and gradients."""
    rng = np.random.default_rng(1)
    K, T = 8, 6
    w = param(rng, K, K)

    def fn(x):
        h = x
        for _ in range(T):
            h = ag.tanh(h @ w)
        o = h.mean(axis=0, keepdims=True) @ w
        return (o * o).sum()

    argsets = [(rng.standard_normal((4, K)),) for _ in range(3)]
    faster, never, _ = _replayed_both_ways(monkeypatch, fn, [w], argsets, "F")
    for k, (a, b) in enumerate(zip(faster, never)):
        assert_bits(a, b, f"call {k}")


def _recurrence(u, w, b, batch, steps):
    """h_t = tanh(x_t u + h_(t-1) w^T + b) from h_0 = 0, loss the sum of every h_t^2."""
    def fn(xs):
        wt = w.T
        h, loss = ag.zeros((batch, w.shape[0]), dtype=np.float64), 0.0
        for t in range(steps):
            h = ag.tanh(xs[t] @ u + h @ wt + b)
            loss = loss + (h * h).sum()
        return loss

    return fn


def test_the_order_chosen_by_timing_does_not_show_where_the_first_use_reads_zeros(monkeypatch):
    """The first use of a recurrent weight is h_0 @ W, with h_0 zeros: the same bits in any
    order, whatever the BLAS sums. The later steps' products ((1, 8) @ W.T) differ, and the
    copy the first use allowed showed in the values."""
    rng = np.random.default_rng(2)
    K, T = 8, 6
    u, w, b = param(rng, I, K), param(rng, K, K), param(rng, K)

    fn = _recurrence(u, w, b, batch=1, steps=T)

    argsets = [(rng.standard_normal((T, 1, I)),) for _ in range(3)]
    faster, never, _ = _replayed_both_ways(monkeypatch, fn, [u, w, b], argsets, "C")
    for k, (a, b_) in enumerate(zip(faster, never)):
        assert_bits(a, b_, f"call {k}")


def test_a_copy_is_still_taken_where_every_use_has_the_same_bits_in_both_orders(monkeypatch):
    """What the two tests above leave: (4, 8) @ W.T sums alike in both orders on this BLAS, so
    the copy is taken (when it looks faster), and values stay those of no copy. Skipped on
    a BLAS where these shapes too sum in another order."""
    rng = np.random.default_rng(3)
    K, T = 8, 6
    probe = rng.standard_normal((4, K))
    wp = rng.standard_normal((K, K))
    if (probe @ wp.T).tobytes() != (probe @ np.ascontiguousarray(wp.T)).tobytes():
        pytest.skip("this BLAS sums (4, 8) @ (8, 8) in another order for another layout")
    u, w, b = param(rng, I, K), param(rng, K, K), param(rng, K)

    fn = _recurrence(u, w, b, batch=4, steps=T)

    argsets = [(rng.standard_normal((T, 4, I)),) for _ in range(3)]
    faster, never, copies = _replayed_both_ways(monkeypatch, fn, [u, w, b], argsets, "C")
    assert copies == 1
    for k, (a, b_) in enumerate(zip(faster, never)):
        assert_bits(a, b_, f"call {k}")


# ---- what held -----------------------------------------------------------------------------
@pytest.fixture
def always(monkeypatch):
    """Every shared operand is copied into the order it does not have, whatever is measured."""
    def other(program, places):
        k, i = places[0]
        return "F" if program[k][2][i]._data.flags.c_contiguous else "C"
    monkeypatch.setattr(replay_layout, "_faster_order", other)


@pytest.mark.parametrize("form", ["matmul", "T", "slice", "linear", "mixed", "left_and_right"])
def test_shared_weights_in_every_form_with_orders_swapped_and_adam_between_calls(always, form):
    rng = np.random.default_rng(4)
    T = 8  # "mixed": 4 uses of w.T and 4 of w
    u, w, b = param(rng, I, H), param(rng, H, 2 * H if form == "slice" else H), param(rng, H)

    def fn(xs):
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(T):
            r = {"matmul": lambda: h @ w, "T": lambda: h @ w.T, "slice": lambda: h @ w[:, :H],
                 "linear": lambda: ag.linear(h, w),
                 "mixed": lambda: h @ w.T if t % 2 else ag.linear(h, w),
                 "left_and_right": lambda: h @ w + (w @ h.T).T}[form]()
            h = ag.tanh(xs[t] @ u + r + b)
            loss = loss + (h * h).sum()
        return loss

    opt = nn.optim.Adam([u, w, b], lr=0.01)

    def between(k):
        if k >= 2:
            w.data = np.asfortranarray(w.data) if k % 2 else np.ascontiguousarray(w.data)
        if k >= 3:
            opt.step()

    argsets = [(rng.standard_normal((T, B, I)),) for _ in range(3)]
    step = check(fn, [u, w, b], argsets, calls=7, between=between)
    assert any(s._op is replay_layout.CopyStep for s, *_ in _plan(step).program)
    check(fn, [u, w, b], argsets, calls=4, between=between, batch=False)


def test_reassociation_with_other_consumers_dtypes_broadcasts_and_subtractions():
    rng = np.random.default_rng(5)
    T = 7
    u, w = param(rng, I, H), param(rng, H, H)
    b32, row, col = param(rng, H, dtype=np.float32), param(rng, 1, H), param(rng, B, 1)

    def fn(xs):
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(T):
            p = xs[t] @ u
            c = (b32, row, col)[t % 3]
            s = (p + h @ w) + c if t % 2 else c + (h @ w + p)
            h = ag.tanh(s) - (c - h @ w) * 0.1
            loss = loss + (h * h).sum() + p.sum() + c.sum()  # p and c have other consumers
        return loss

    check(fn, [u, w, b32, row, col], [(rng.standard_normal((T, B, I)),) for _ in range(3)])


@pytest.mark.parametrize("T", range(9))
def test_short_loops_and_zero_size_batches(always, T):
    rng = np.random.default_rng(6)
    u, w, b = param(rng, I, H), param(rng, H, H), param(rng, H)

    def fn(xs):
        h, loss = ag.zeros((xs.shape[1], H), dtype=np.float64), (u * u).sum()
        for t in range(T):
            h = ag.tanh(xs[t] @ u + h @ w.T + b)
            loss = loss + (h * h).sum()
        return loss

    for batch in (B, 0):
        check(fn, [u, w, b], [(rng.standard_normal((T, batch, I)),) for _ in range(3)])
