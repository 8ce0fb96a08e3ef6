"""Hostile probes of replay's batching (batching.py): every replayed call is compared with eager
mode in float64 (loss and gradients, 1e-12 relative, scaled by the largest gradient).

Each problem review 18b found (merged repeats of reshape, astype, broadcast_to and keepdims
reductions; cross-entropy on shared logits; tensors compared by value; a saved -0.0; closure
targets changed in place; reassociation rounding) has its test here, beside what held."""
import threading
import warnings

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.replayer import ReplayWarning

from tests.autograd_core.replay_checks import assert_same, check, param, run

B, I, H, C = 3, 4, 5, 6


def plan_of(step):
    return next(p for p in step.plans.values() if not isinstance(p, str))


def batched(step):
    """Whether the confirmed plan was rewritten by batching."""
    return plan_of(step).batched


def rnn(p, xs, T=None):
    h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
    for t in range(xs.shape[0] if T is None else T):
        h = ag.tanh(xs[t] @ p[0] + h @ p[1] + p[2])
        loss = loss + h.sum()
    return loss, h


def rnn_params(rng):
    return [param(rng, I, H), param(rng, H, H), param(rng, H)]


# ---- _merge_repeats merges nodes whose saved parameters are equal but whose outputs differ ----
def test_keepdims_and_no_keepdims_reductions_are_not_one_node():
    rng = np.random.default_rng(0)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((4, B, I)))
    v = param(rng, B, B)  # B x B: the two shapes broadcast alike against (B, B)
    q = param(rng, B, B)

    def fn():
        loss, h = rnn(p, xs)
        y = ag.tanh(h[:, :B] @ v)  # (B, B)
        a = y.mean(axis=1)  # (B,)
        centered = y - y.mean(axis=1, keepdims=True)  # rows centered
        return ag.stack([loss, ((centered * centered) @ q).sum(), (a * a).sum()]).sum()

    check(fn, p + [v, q])


def test_astype_to_two_dtypes_is_not_one_node():
    rng = np.random.default_rng(1)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((4, B, I)))

    def fn():
        loss, h = rnn(p, xs)
        low = h.astype(np.float32).astype(np.float64)
        high = h.astype(np.float64) * 1.0
        return ag.stack([loss, (ag.exp(high * 3.0) * 7.0).sum(), -(ag.exp(low * 3.0) * 7.0).sum()]).sum()

    check(fn, p)


def test_two_reshapes_of_one_tensor_are_not_one_node():
    rng = np.random.default_rng(2)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((4, B, I)))
    v = param(rng, 3, 5)

    def fn():
        loss, h = rnn(p, xs)  # (3, 5)
        a = h.reshape(5, 3)
        b = h.reshape(3, 5)  # the same shape as h: values in another order than a's
        return ag.stack([loss, ((a.T * v) ** 2).sum(), (b * b * v).sum()]).sum()

    check(fn, p + [v])


def test_two_broadcasts_of_one_tensor_are_not_one_node():
    rng = np.random.default_rng(3)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((4, B, I)))
    v = param(rng, 2, B, H)

    def fn():
        loss, h = rnn(p, xs)
        a = ag.broadcast_to(h, (2, B, H))
        b = ag.broadcast_to(h, (1, B, H))
        return ag.stack([loss, (a * v).sum(), (b ** 2).sum()]).sum()

    check(fn, p + [v])


def test_scalar_ops_with_other_constants_are_not_merged():
    rng = np.random.default_rng(4)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((4, B, I)))

    def fn():
        loss, h = rnn(p, xs)
        return loss * 1.0 + (ag.tanh(h * 2.0) * (h * 3.0)).sum() + (h * 2).sum() + (h / 2.0 + 1).sum()

    check(fn, p)


# ---- batched ops that crash -------------------------------------------------------------------
def test_several_targets_on_the_same_logits():
    rng = np.random.default_rng(5)
    w = param(rng, I, C)
    x = ag.Tensor(rng.standard_normal((B, I)))
    ys = [rng.integers(0, C, B) for _ in range(3)]

    def fn():
        logits = x @ w
        loss = 0.0
        for y in ys:
            loss = loss + nn.cross_entropy(logits, y)
        return loss

    check(fn, [w])


# ---- loops whose copies differ subtly ----------------------------------------------------------
@pytest.mark.parametrize("T", [1, 2, 3, 4])
def test_short_loops_around_the_group_threshold(T):
    rng = np.random.default_rng(10 + T)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((T, B, I)))
    check(lambda: rnn(p, xs)[0], p)


def test_a_step_of_another_dtype_and_a_step_of_another_shape():
    rng = np.random.default_rng(11)
    u32 = ag.Tensor(rng.standard_normal((I, H)).astype(np.float32), requires_grad=True)
    p = rnn_params(rng) + [u32]
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    x_short = ag.Tensor(rng.standard_normal((2, I)))

    def fn():
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(5):
            proj = (xs[t].astype(np.float32) @ u32).astype(np.float64) if t == 2 else xs[t] @ p[0]
            h = ag.tanh(proj + h @ p[1] + p[2])
            loss = loss + h.sum()
        extra = ag.tanh(x_short @ p[0] + p[2])  # one more x @ U on 2 rows
        return loss + extra.sum()

    check(fn, p)


def test_a_step_that_uses_another_parameter_and_biases_of_other_shapes():
    rng = np.random.default_rng(12)
    p = rnn_params(rng)
    u2 = param(rng, I, H)
    b_row, b_full = param(rng, 1, H), param(rng, B, H)
    xs = ag.Tensor(rng.standard_normal((6, B, I)))

    def fn():
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(6):
            u = u2 if t % 3 == 1 else p[0]
            b = (p[2], b_row, b_full)[t % 3]
            h = ag.tanh(xs[t] @ u + h @ p[1] + b)
            loss = loss + (h * (t + 1.0)).sum() + (h * 2.0 if t % 2 else h * 3.0).mean()
        return loss

    check(fn, p + [u2, b_row, b_full])


def test_zero_dimensional_values_and_scalar_broadcasts():
    rng = np.random.default_rng(13)
    a = param(rng)  # 0-d
    v = param(rng, H)
    xs = ag.Tensor(rng.standard_normal((5, H)))

    def fn():
        s, loss = a * 1.0, 0.0
        for t in range(5):
            z = (xs[t] * a).sum()  # 0-d per step
            s = ag.tanh(s * z + (xs[t] * v).sum())
            loss = loss + s + z * z + (v * s).mean()
        return loss

    check(fn, [a, v])


def test_accumulating_chains_with_broadcasting_and_repeated_terms():
    rng = np.random.default_rng(14)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    c = param(rng, H)

    def fn():
        h, acc, loss = ag.zeros((B, H), dtype=np.float64), c * 1.0, 0.0
        for t in range(5):
            h = ag.tanh(xs[t] @ p[0] + h @ p[1] + p[2])
            a = h.mean()
            loss = loss + a + a  # a term used twice
            acc = acc + h  # (H,) + (B, H): the chain's first link broadcasts
            acc = acc + acc  # x + x inside the chain
        return loss + (acc * acc).sum() * 1e-3

    check(fn, p + [c])


def test_an_accumulating_chain_inside_the_recurrence():
    rng = np.random.default_rng(15)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((6, B, I)))

    def fn():
        h, total = ag.zeros((B, H), dtype=np.float64), ag.zeros((B, H), dtype=np.float64)
        loss = 0.0
        for t in range(6):
            total = total + ag.tanh(xs[t] @ p[0] + p[2])
            h = ag.tanh(total @ p[1] + h)  # the running total feeds the recurrence
            loss = loss + (h * h).sum()
        return loss

    check(fn, p)


def test_an_intermediate_sum_with_another_consumer_is_not_reassociated_away():
    rng = np.random.default_rng(16)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))

    def fn():
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(5):
            m = xs[t] @ p[0] + h @ p[1]
            h = ag.tanh(m + p[2])
            loss = loss + (m * m).sum() + h.sum()
        return loss

    check(fn, p)


def test_reassociation_across_dtypes_and_broadcast_shapes():
    rng = np.random.default_rng(17)
    p = rnn_params(rng)
    b32 = ag.Tensor(rng.standard_normal(H).astype(np.float32), requires_grad=True)
    bcol = param(rng, B, 1)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    x1 = ag.Tensor(rng.standard_normal((5, 1, I)))

    def fn():
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(5):
            h = ag.tanh((x1[t] @ p[0] + h @ p[1]) + bcol)  # p (1, H), c (B, 1)
            h = ag.tanh((xs[t] @ p[0] + h @ p[1]) + b32)  # float32 bias
            loss = loss + h.sum()
        return loss

    check(fn, p + [b32, bcol])


# ---- indexing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["negative", "mixed", "strided", "repeated", "reversed",
                                   "slices", "numpy_ints"])
@pytest.mark.parametrize("xs_grad", [False, True])
def test_indexing_the_sequence(order, xs_grad):
    rng = np.random.default_rng(20)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((8, B, I)), requires_grad=xs_grad)
    ts = {"negative": [-8, -7, -6, -5, -4], "mixed": [-1, 0, 1, 2, -2],
          "strided": [0, 2, 4, 6], "repeated": [1, 1, 2, 2, 1, 3],
          "reversed": [7, 6, 5, 4, 3], "slices": [slice(0, 1), slice(1, 2), slice(2, 3)],
          "numpy_ints": list(np.arange(5))}[order]

    def fn():
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in ts:
            x = xs[t]
            if x.ndim == 3:
                x = x.reshape(B, I)
            h = ag.tanh(x @ p[0] + h @ p[1] + p[2])
            loss = loss + h.sum()
        return loss

    check(fn, p + ([xs] if xs_grad else []))


def test_indexing_a_computed_tensor():
    rng = np.random.default_rng(21)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    s = param(rng, 5, 1, 1)

    def fn():
        ys = ag.tanh(xs * s)  # computed, requires grad
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(5):
            h = ag.tanh(ys[t] @ p[0] + h @ p[1] + p[2])
            loss = loss + h.sum()
        return loss

    check(fn, p + [s])


def test_the_sequence_as_an_argument_changes_each_call():
    rng = np.random.default_rng(22)
    p = rnn_params(rng)
    argsets = [(ag.Tensor(rng.standard_normal((5, B, I))),) for _ in range(4)]
    step = check(lambda xs: rnn(p, xs)[0], p, argsets, calls=8)
    assert batched(step)


# ---- rounding of the reassociated sums ---------------------------------------------------------
def test_reassociation_with_large_cancelling_bias():
    """(x_t U + h W) + b -> (x_t U + b) + h W rounds at the operands' magnitude: with x_t U and
    b near 1e8 and cancelling, batching differs from eager mode by about 1e8 * eps (eager
    mode's own result carries an error of that size too); replay(fn, batch=False) is eager
    mode to the last bit."""
    rng = np.random.default_rng(30)
    mag = 1e8
    u = ag.Tensor(np.eye(H), requires_grad=True)
    w = param(rng, H, H)
    b = ag.Tensor(np.full(H, mag), requires_grad=True)
    xs = ag.Tensor(-mag + rng.standard_normal((5, B, H)))

    def fn():
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(5):
            h = ag.tanh(xs[t] @ u + h @ w + b)
            loss = loss + h.sum()
        return loss

    exact = ag.replay(fn, batch=False)
    batched = ag.replay(fn)
    for k in range(4):
        want = run(fn, [u, w, b], ())
        assert_same(run(exact, [u, w, b], ()), want, f"call {k}, batch=False")
        (v, gs), (wv, ws) = run(batched, [u, w, b], ()), want
        rounding = 1e3 * mag * np.finfo(np.float64).eps  # a few roundings at 1e8, propagated
        assert abs(v - wv) <= rounding * B * H
        for g, wg in zip(gs, ws):
            assert np.max(np.abs(g - wg)) <= rounding * max(1.0, np.max(np.abs(wg)))


def test_reassociation_keeps_nan_and_inf_where_eager_has_them():
    rng = np.random.default_rng(31)
    p = rnn_params(rng)
    clean = rng.standard_normal((5, B, I))
    dirty = clean.copy()
    dirty[1, 0, 0] = np.nan
    dirty[3, 1, 2] = np.inf
    argsets = [(ag.Tensor(clean),), (ag.Tensor(clean * 2),), (ag.Tensor(dirty),)]

    def fn(xs):
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(5):
            h = ag.tanh(xs[t] @ p[0] + h @ p[1] + p[2])
            loss = loss + (h * h).sum()
        return loss

    step = ag.replay(fn)
    for k in range(6):
        args = argsets[k % 3]
        got, want = run(step, p, args), run(fn, p, args)
        for g, w in zip(got[1], want[1]):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
            np.testing.assert_array_equal(np.isinf(g), np.isinf(w))
        if not np.isnan(want[0]):
            assert_same(got, want)


def test_a_nan_in_the_recorded_data_leaves_replay_correct_on_clean_data():
    rng = np.random.default_rng(32)
    p = rnn_params(rng)
    dirty = rng.standard_normal((5, B, I))
    dirty[2, 1, 1] = np.nan
    argsets = [(ag.Tensor(dirty),), (ag.Tensor(dirty),), (ag.Tensor(rng.standard_normal((5, B, I))),)]
    check(lambda xs: rnn(p, xs)[0], p, argsets, calls=6)


# ---- parameters changed between calls ----------------------------------------------------------
@pytest.mark.parametrize("how", ["inplace", "data", "sgd", "adam"])
def test_training_with_replay_follows_eager_training(how):
    def make():
        rng = np.random.default_rng(40)
        p = rnn_params(rng) + [param(rng, H, C), param(rng, C)]
        return p

    rng = np.random.default_rng(41)
    batches = [(ag.Tensor(rng.standard_normal((6, B, I))), rng.integers(0, C, (6, B)))
               for _ in range(4)]

    def loop(p, xs, ys):
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(6):
            h = ag.tanh(xs[t] @ p[0] + h @ p[1] + p[2])
            loss = loss + nn.cross_entropy(h @ p[3] + p[4], ys[t])
        return loss

    def train(replayed):
        p = make()
        fn = (lambda xs, ys: loop(p, xs, ys))
        step = ag.replay(fn) if replayed else fn
        opt = {"sgd": lambda: nn.optim.SGD(p, lr=0.1, momentum=0.9),
               "adam": lambda: nn.optim.Adam(p, lr=0.01)}.get(how, lambda: None)()
        history = []
        for k in range(12):
            for t in p:
                t.grad = None
            loss = step(*batches[k % 4])
            loss.backward()
            history.append((loss.numpy().copy(), [t.grad.numpy().copy() for t in p]))
            if opt is not None:
                opt.step()
            elif how == "inplace":
                with ag.no_grad():
                    for t in p:
                        t.sub_(0.05 * t.grad.numpy())
            else:
                for t in p:
                    t.data = t.numpy() - 0.05 * t.grad.numpy()
        return history

    for k, (got, want) in enumerate(zip(train(True), train(False))):
        assert_same(got, want, f"step {k}")


def test_backward_after_an_inplace_edit_of_a_parameter_raises():
    rng = np.random.default_rng(42)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    step = ag.replay(lambda: rnn(p, xs)[0])
    for _ in range(3):
        step().backward()
    loss = step()
    with ag.no_grad():
        p[1].add_(1.0)
    with pytest.raises(RuntimeError, match="modified"):
        loss.backward()


def test_backward_after_the_next_call_raises_and_retain_graph_twice_matches_eager():
    rng = np.random.default_rng(43)
    p = rnn_params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    fn = lambda: rnn(p, xs)[0]  # noqa: E731
    step = ag.replay(fn)
    for _ in range(3):
        step().backward()
    old = step()
    new = step()
    with pytest.raises(RuntimeError, match="overwrote"):
        old.backward()
    for t in p:
        t.grad = None
    new.backward(retain_graph=True)
    new.backward()
    got = [t.grad.numpy().copy() for t in p]
    for t in p:
        t.grad = None
    e = fn()
    e.backward(retain_graph=True)
    e.backward()
    for g, t in zip(got, p):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-12)
    # ag.grad on a replayed result
    r = step()
    gs = ag.grad(r, p)
    es = ag.grad(fn(), p)
    for g, w in zip(gs, es):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-12)


def test_threads_sharing_a_replayed_function():
    rng = np.random.default_rng(44)
    p = rnn_params(rng)
    seqs = [ag.Tensor(rng.standard_normal((5, B, I))) for _ in range(4)]
    step = ag.replay(lambda xs: rnn(p, xs)[0])
    for xs in seqs[:3]:
        step(xs).backward()
    want = []
    for xs in seqs:
        want.append(ag.grad(rnn(p, xs)[0], p))
    errors = []

    def worker(k):
        try:
            for _ in range(20):
                xs = seqs[k]
                with_lock = step(xs)
                gs = ag.grad(with_lock, p)
                for g, w in zip(gs, want[k]):
                    np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-12)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # a call between another thread's call and its grad overwrites the shells: that raises
    # (the documented rule), it must never give a wrong gradient
    assert all(isinstance(e, RuntimeError) and "overwrote" in str(e) for e in errors), errors


# ---- lists of nodes compared with == (Tensor.__eq__ is elementwise, by value) ------------------
def test_chain_terms_equal_in_value_to_a_groups_copies_are_not_that_group():
    rng = np.random.default_rng(50)
    xs = [param(rng, B, H) for _ in range(3)]
    q = ag.Tensor(np.array(1.0), requires_grad=True)

    def fn():
        e = [ag.tanh(x).sum() for x in xs]
        total = e[0] * q + e[1] * q + e[2]
        return ag.stack([total, e[0] * e[1]]).sum()

    check(fn, xs + [q])


# ---- cross-entropy targets ---------------------------------------------------------------------
def _ce_loop(p, xs, ys, reduction="mean"):
    h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ p[0] + h @ p[1] + p[2])
        loss = loss + nn.cross_entropy(h @ p[3] + p[4], ys[t], reduction=reduction)
    return loss


def _ce_params(rng):
    return rnn_params(rng) + [param(rng, H, C), param(rng, C)]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["int_array", "int_tensor", "probabilities", "list_of_arrays"])
def test_targets_as_arguments_change_each_call(kind, reduction):
    rng = np.random.default_rng(60)
    p = _ce_params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))

    def targets():
        ys = rng.integers(0, C, (5, B))
        if kind == "int_tensor":
            return ag.Tensor(ys)
        if kind == "probabilities":
            pr = rng.random((5, B, C))
            return pr / pr.sum(-1, keepdims=True)
        if kind == "list_of_arrays":
            return [ys[t] for t in range(5)]
        return ys

    argsets = [(targets(),) for _ in range(5)]
    check(lambda ys: _ce_loop(p, xs, ys, reduction), p, argsets, calls=10)


def test_closure_targets_changed_between_the_two_recordings_are_caught():
    rng = np.random.default_rng(61)
    p = _ce_params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    ys = rng.integers(0, C, (5, B))

    def change(k):
        ys[...] = rng.integers(0, C, (5, B))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReplayWarning)
        check(lambda: _ce_loop(p, xs, ys), p, calls=5, between=change)


def test_closure_targets_changed_after_confirmation():
    rng = np.random.default_rng(62)
    p = _ce_params(rng)
    xs = ag.Tensor(rng.standard_normal((5, B, I)))
    ys = rng.integers(0, C, (5, B))

    def change(k):
        if k >= 3:
            ys[...] = rng.integers(0, C, (5, B))

    check(lambda: _ce_loop(p, xs, ys), p, calls=6, between=change)


# ---- long loops --------------------------------------------------------------------------------
def test_a_long_loop_records_rewrites_and_replays():
    """2,000 steps: recorded, batched and replayed with eager mode's gradients (how long the
    recording and the rewrite take is the benchmarks' matter: tests never fail on a timing)."""
    rng = np.random.default_rng(70)
    p = _ce_params(rng)
    T = 2000
    xs = ag.Tensor(rng.standard_normal((T, B, I)))
    ys = rng.integers(0, C, (T, B))
    fn = lambda: _ce_loop(p, xs, ys)  # noqa: E731
    want = run(fn, p, ())
    step = ag.replay(fn)
    for _ in range(4):
        got = run(step, p, ())
        assert_same(got, want)
    assert batched(step)


def test_the_sign_of_a_saved_zero():
    rng = np.random.default_rng(80)
    x = ag.Tensor(np.abs(rng.standard_normal((3, B, H))) + 0.5, requires_grad=True)

    def fn():
        loss = 0.0
        for t, s in enumerate([0.0, 0.0, -0.0]):
            u = x[t] * s  # eager: +0, +0, -0; batched: +0, +0, +0
            loss = loss + ag.tanh((t + 1.0) / u).sum()  # eager 15 + 15 - 15 = 15; replay 45
        return loss

    step = ag.replay(fn)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(4):
            got, want = fn().numpy(), step().numpy()
            assert got == want, (got, want)


def test_a_reassociation_that_changes_values_beyond_rounding_leaves_the_plan_unbatched():
    """float32 with x_t U and b near 1e8 and cancelling: eager mode's (x_t U + h W) + b keeps
    h W only to a multiple of 8, the reassociated (x_t U + b) + h W keeps it whole. The values
    of the reassociated sums are checked like the batched ones, so batching is refused and the
    replay runs op by op, as eager mode does to the last bit."""
    rng = np.random.default_rng(31)
    mag = np.float32(1e8)
    u = ag.Tensor(np.eye(H, dtype=np.float32), requires_grad=True)
    w = ag.Tensor(rng.standard_normal((H, H)).astype(np.float32), requires_grad=True)
    b = ag.Tensor(np.full(H, mag, dtype=np.float32), requires_grad=True)
    xs = ag.Tensor(np.full((5, B, H), -mag, dtype=np.float32))

    def fn():
        h, loss = ag.ones((B, H), dtype=np.float32), 0.0
        for t in range(5):
            h = ag.tanh(xs[t] @ u + h @ w + b)
            loss = loss + h.sum()
        return loss

    step = ag.replay(fn)
    for k in range(4):
        got, want = run(step, [u, w, b], ()), run(fn, [u, w, b], ())
        assert got[0].tobytes() == want[0].tobytes(), f"call {k}: loss"
        for g, wg in zip(got[1], want[1]):
            assert g.tobytes() == wg.tobytes(), f"call {k}: a gradient"
    assert not next(iter(step.plans.values())).batched
