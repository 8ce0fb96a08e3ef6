"""Review 18c: hostile probes of ag.replay (replayer.py) and its batching (batching.py), every
replayed call compared with eager mode in float64 (loss and gradients, 1e-12 relative scaled by
the largest gradient; batch=False bit for bit).

Each problem the review found has its test here; two remain marked xfail(strict=True): closure
targets rebound to a new array (replay cannot see Python names; documented), and an in-place
edit of an operand no rule reads (replay checks every leaf it read: stricter than eager, never
wrong). The others are what held (the addmm fusion over shapes and dtypes, training loops with
nn models, errors)."""

import numpy as np
import pytest

import autograd_core as ag
import nn

from tests.autograd_core.replay_checks import assert_bits, assert_same, check, param, run

B, I, H, C = 3, 4, 5, 6

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.replayer.ReplayWarning")


def _confirmed(step):
    plans = list(step.plans.values())
    return [p for p in plans if not isinstance(p, str) and p.confirmed]


# ---- problems ------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [True, False])
def test_targets_indexed_out_of_a_sliced_argument_follow_each_call(batch):
    rng = np.random.default_rng(1)
    T = 4
    w = param(rng, I, C)
    Y = rng.integers(0, C, (12, T))
    X = rng.standard_normal((T, 12, I))

    def fn(x, ys):
        loss = None
        for t in range(T):
            term = ag.softmax_cross_entropy(x[t] @ w, ys[:, t]).sum()
            loss = term if loss is None else loss + term
        return loss

    # the same minibatch twice (a warm-up), then new ones: the labels differ from call 3 on
    argsets = [(X[:, 0:3], Y[0:3]), (X[:, 0:3], Y[0:3]), (X[:, 0:3], Y[3:6]),
               (X[:, 0:3], Y[6:9])]
    check(fn, [w], argsets, calls=4, batch=batch)


@pytest.mark.parametrize("bad", [-1, 7])
def test_an_out_of_range_target_on_a_replayed_call_raises_as_eager(bad):
    rng = np.random.default_rng(2)
    w = param(rng, I, C)
    x = rng.standard_normal((B, I))

    def fn(x, ys):
        return ag.softmax_cross_entropy(x @ w, ys).sum()

    step = ag.replay(fn)
    for _ in range(3):
        step(x, np.array([0, 1, 2])).backward()
    with pytest.raises(IndexError, match="target class out of range"):
        fn(x, np.array([0, 1, bad]))
    with pytest.raises(IndexError, match="target class out of range"):
        step(x, np.array([0, 1, bad])).backward()


def test_a_random_mask_made_inside_the_function_is_not_frozen():
    rng = np.random.default_rng(3)
    w = param(rng, I, C)
    x = rng.standard_normal((B, I))
    state = {}

    def fn(x):
        mask = ag.Tensor((state["rng"].random((B, C)) > 0.5).astype(np.float64))
        return ((x @ w) * mask).sum()

    state["rng"] = np.random.default_rng(5)
    step = ag.replay(fn)
    got = [run(step, [w], (x,)) for _ in range(5)]
    state["rng"] = np.random.default_rng(5)
    want = [run(fn, [w], (x,)) for _ in range(5)]
    for k, (g, wnt) in enumerate(zip(got, want)):
        assert_same(g, wnt, f"call {k}")


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_where_with_a_non_bool_condition_argument_follows_each_call(dtype):
    rng = np.random.default_rng(4)
    w = param(rng, I, H)
    x = rng.standard_normal((B, I))
    m1 = np.array([[1, 0, 1, 0, 1]] * B, dtype=dtype)
    m2 = (1 - m1).astype(dtype)

    def fn(x, m):
        y = x @ w
        return ag.where(m, y, 2 * y).sum()

    check(fn, [w], [(x, m1), (x, m1), (x, m2), (x, m2)], calls=4)


def test_where_with_a_bool_condition_argument_follows_each_call():
    rng = np.random.default_rng(4)
    w = param(rng, I, H)
    x = rng.standard_normal((B, I))
    m1 = np.array([[1, 0, 1, 0, 1]] * B, dtype=bool)

    def fn(x, m):
        y = x @ w
        return ag.where(m, y, 2 * y).sum()

    check(fn, [w], [(x, m1), (x, m1), (x, ~m1), (x, ~m1)], calls=4)


def test_where_with_an_integer_closure_condition_changed_in_place():
    rng = np.random.default_rng(5)
    w = param(rng, I, H)
    x = rng.standard_normal((B, I))
    cond = np.array([[1, 0, 1, 0, 1]] * B)

    def fn(x):
        y = x @ w
        return ag.where(cond, y, 2 * y).sum()

    def between(k):
        if k == 2:
            cond[:] = 1 - cond

    check(fn, [w], [(x,)], calls=4, between=between)


def test_bool_closure_condition_index_and_clip_bounds_changed_in_place_are_seen():
    rng = np.random.default_rng(6)
    w = param(rng, I, H)
    x = rng.standard_normal((B, I))
    cond = np.array([[True, False, True, False, True]] * B)
    idx = np.array([0, 2])
    lo = np.full((H,), -0.1)

    def fn(x):
        y = x @ w
        return (ag.where(cond, y, 2 * y)[idx] ** 2).sum() + ag.clip(y, lo, None).sum()

    def between(k):
        if k == 2:
            cond[:] = ~cond
            idx[:] = [1, 1]
            lo[:] = 0.3

    check(fn, [w], [(x,)], calls=4, between=between)


@pytest.mark.xfail(strict=True, reason="closure targets replaced by a new array (not changed "
                   "in place): the weak reference to the recorded one is dead, which changed() "
                   "takes for 'cannot change', and the replay keeps the old targets")
def test_closure_targets_replaced_by_a_new_array():
    rng = np.random.default_rng(7)
    w = param(rng, I, C)
    x = rng.standard_normal((B, I))
    state = {"y": np.array([0, 1, 2])}

    def fn(x):
        return ag.softmax_cross_entropy(x @ w, state["y"]).sum()

    def between(k):
        if k == 2:
            state["y"] = np.array([3, 4, 0])

    check(fn, [w], [(x,)], calls=4, between=between)


def test_a_partly_bound_clip_keeps_a_snapshot_of_its_other_bound():
    rng = np.random.default_rng(8)
    w = param(rng, I, H)
    x = rng.standard_normal((B, I))
    lo = np.full((H,), -0.2)
    hi = np.full((H,), 0.2)

    def fn(x, lo):
        return (ag.clip(x @ w, lo, hi) ** 2).sum()

    def once(f):
        hi[:] = 0.2
        w.grad = None
        out = f(x, lo)
        hi[:] = -5.0  # after the forward: must not change this call's gradient
        out.backward()
        return w.grad.numpy().copy()

    step = ag.replay(fn)
    for k in range(4):
        got, want = once(step), once(fn)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"call {k}")

def _recurrence(w, c, h0, steps=5):
    """h_t = tanh(c + h_{t-1} W), L = sum_t sum(h_t)."""
    h, loss = h0, 0.0
    for _ in range(steps):
        h = ag.tanh(c + h @ w)
        loss = loss + h.sum()
    return loss


@pytest.mark.xfail(strict=True, reason="a replayed call checks the version of every leaf it "
                   "read, even one no backward rule reads: an in-place edit of the bias c of "
                   "c + h @ w between forward and backward raises, where eager (add saves "
                   "nothing) gives the gradient")
def test_an_inplace_edit_of_an_operand_no_rule_reads_behaves_as_eager():
    rng = np.random.default_rng(9)
    w, c, h0 = param(rng, H, H), param(rng, H), param(rng, B, H)

    def fn():
        return _recurrence(w, c, h0)

    def once(f):
        for p in (w, c, h0):
            p.grad = None
        out = f()
        with ag.no_grad():
            c.add_(0.0)
        out.backward()
        return [p.grad.numpy().copy() for p in (w, c, h0)]

    step = ag.replay(fn)
    for k in range(4):
        got, want = once(step), once(fn)
        for g, wnt in zip(got, want):
            np.testing.assert_allclose(g, wnt, rtol=1e-12)


def test_watching_a_view_of_a_large_closure_array_costs_the_view_only():
    rng = np.random.default_rng(10)
    w = param(rng, I, C)
    x = rng.standard_normal((B, I))
    dataset = rng.integers(0, C, (2_000_000, B))
    ys = dataset[0]

    def fn(x):
        return ag.softmax_cross_entropy(x @ w, ys).sum()

    step = ag.replay(fn)
    for _ in range(3):
        step(x).backward()
    plan = _confirmed(step)[0]
    watched = sum(recorded.nbytes for _, recorded in plan.outside)
    assert watched <= 16 * ys.nbytes, f"{watched} bytes watched for a {ys.nbytes}-byte target"


# ---- what held -----------------------------------------------------------------------------
@pytest.mark.parametrize("cshape", [(H,), (1, H), (B, 1), (), (B, H)])
@pytest.mark.parametrize("cdtype, wdtype", [(np.float64, np.float64), (np.float32, np.float64),
                                            (np.float64, np.float32), (np.float16, np.float64)])
def test_addmm_fusion_over_bias_shapes_and_dtypes(cshape, cdtype, wdtype):
    rng = np.random.default_rng(11)
    w, c, h0 = param(rng, H, H, dtype=wdtype), param(rng, *cshape, dtype=cdtype), \
        param(rng, B, H, dtype=wdtype)

    def fn():
        return _recurrence(w, c, h0)

    step = check(fn, [w, c, h0])
    names = [entry[0]._op.name for entry in _confirmed(step)[0].program]
    assert names.count("addmm") == 5


@pytest.mark.parametrize("form", ["c_is_w", "c_is_h", "product_used_twice", "result_is_root",
                                  "bias_used_elsewhere", "one_d"])
def test_addmm_fusion_odd_operands(form):
    rng = np.random.default_rng(12)
    w, h0, c = param(rng, H, H), param(rng, H, H), param(rng, H)

    def fn():
        h, loss = h0, 0.0
        for _ in range(4):
            if form == "c_is_w":
                h = ag.tanh(w + h @ w)
            elif form == "c_is_h":
                h = ag.tanh(h + h @ w)
            elif form == "product_used_twice":
                p = h @ w
                h = ag.tanh(c + p) * p
            elif form == "bias_used_elsewhere":
                h = ag.tanh(c + h @ w) + c
            elif form == "one_d":
                h = ag.tanh(c + h[0] @ w) * h
            else:
                h = ag.tanh(c + h @ w)
            loss = loss + h.sum()
        if form == "result_is_root":
            return loss + h.sum() + (c + h @ w).sum()
        return loss

    check(fn, [w, h0, c])


@pytest.mark.parametrize("kind", ["mlp", "rnn", "gru", "lstm"])
@pytest.mark.parametrize("batch", [True, False])
def test_training_nn_models_with_adam_and_clipping_follows_eager(kind, batch):
    T = 7

    def make():
        rng = np.random.default_rng(13)
        if kind == "mlp":
            model, head = nn.MLP([I, H, H, C], rng=rng, dtype=np.float64), None
        else:
            model = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind](
                I, H, num_layers=2, rng=rng, dtype=np.float64)
            head = nn.Linear(H, C, rng=rng, dtype=np.float64)
        params = list(model.parameters()) + (list(head.parameters()) if head else [])

        def loss_fn(xs, ys):
            if kind == "mlp":
                return nn.cross_entropy(model(xs[0]), ys[0])
            out, loss = model(xs)[0], 0.0
            for t in range(T):
                loss = loss + nn.cross_entropy(head(out[t]), ys[t])
            return loss
        return params, loss_fn

    rng = np.random.default_rng(14)
    batches = [(ag.Tensor(rng.standard_normal((T, B, I))), rng.integers(0, C, (T, B)))
               for _ in range(5)]

    def train(replayed):
        params, loss_fn = make()
        step = ag.replay(loss_fn, batch=batch) if replayed else loss_fn
        opt = nn.optim.Adam(params, lr=0.01)
        history = []
        for k in range(22):
            history.append(run(step, params, batches[k % 5]))
            for p, g in zip(params, history[-1][1]):
                p.grad = ag.Tensor(g)
            nn.clip_grad_norm_(params, 0.5)
            opt.step()
        return history

    for k, (got, want) in enumerate(zip(train(True), train(False))):
        (assert_same if batch else assert_bits)(got, want, f"step {k}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("batch_size", [0, 1, 3])
@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_unbatched_replay_is_bit_identical_over_dtypes_empty_batches_and_short_loops(
        dtype, batch_size, steps):
    rng = np.random.default_rng(steps * 10 + batch_size)
    p = [param(rng, I, H, dtype=dtype), param(rng, H, H, dtype=dtype),
         param(rng, H, dtype=dtype), param(rng, H, C, dtype=dtype), param(rng, C, dtype=dtype)]

    def fn(xs, ys):
        h, loss = ag.zeros((batch_size, H), dtype=dtype), 0.0
        for t in range(steps):
            h = ag.tanh(xs[t] @ p[0] + h @ p[1] + p[2])
            loss = loss + nn.cross_entropy(h @ p[3] + p[4], ys[t], reduction="sum")
        return loss

    argsets = [(ag.Tensor(rng.standard_normal((steps, batch_size, I)).astype(dtype)),
                rng.integers(0, C, (steps, batch_size))) for _ in range(3)]
    check(fn, p, argsets, batch=False)


def test_errors_interrupts_unused_inputs_and_backward_twice():
    rng = np.random.default_rng(15)
    w, v = param(rng, I, H), param(rng, H, H)
    x = rng.standard_normal((B, I))
    calls = [0]

    def fn(x):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return ((x @ w) ** 2).sum()

    step = ag.replay(fn)
    step(x).backward()
    with pytest.raises(KeyboardInterrupt):
        step(x)
    for _ in range(3):
        assert_same(run(step, [w], (x,)), run(fn, [w], (x,)))
    out = step(x)
    gw, gv = ag.grad(out, [w, v], allow_unused=True)
    assert gv is None
    np.testing.assert_allclose(gw.numpy(), 2 * x.T @ (x @ w.numpy()), rtol=1e-12)
    with pytest.raises(RuntimeError, match="not used"):
        ag.grad(step(x), [v])
    out = step(x)
    out.backward()
    with pytest.raises(RuntimeError, match="already"):
        out.backward()
    step(x)  # a result never differentiated
    assert_same(run(step, [w], (x,)), run(fn, [w], (x,)))
