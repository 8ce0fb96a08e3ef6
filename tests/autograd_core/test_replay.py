"""ag.replay: a replayed call gives eager mode's values and gradients (float64, 1e-12) for every
op of the table and the nn models, and whatever it cannot replay runs eagerly and says why."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd_core as ag
import nn
from nn import optim
from tests.autograd_core import test_ops_table, test_ops_table_shapes

CASES = test_ops_table.CASES + test_ops_table_shapes.CASES


def assert_same(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale)


def total(outs):
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    loss = outs[0].sum()
    for o in outs[1:]:
        loss = loss + o.sum()
    return loss


def loss_and_grads(fn, arrays):
    leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in arrays]
    loss = fn(*leaves)
    value = loss.numpy().copy()
    loss.backward()
    return value, [x.grad.numpy() for x in leaves], loss.op.name


def nearby(arrays, rng):
    """Other values of the same shapes, still inside each case's domain (1% away)."""
    return [a * (1 + 0.01 * rng.uniform(-1, 1, a.shape)) for a in arrays]


# ---- every op of the table ------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=repr)
@settings(max_examples=5)
@given(data=st.data())
def test_replay_gives_eager_gradients_for_every_op(case, data):
    ex = data.draw(case.strategy, label="example")
    rng = np.random.default_rng(0)

    def fn(*xs):
        return total(ex.fn(*xs))

    step = ag.replay(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)  # every op of the table replays
        for arrays in (ex.arrays, nearby(ex.arrays, rng), nearby(ex.arrays, rng)):
            got_loss, got, kind = loss_and_grads(step, arrays)
            want_loss, want, _ = loss_and_grads(fn, arrays)
            assert_same(got_loss, want_loss)
            for g, w in zip(got, want):
                assert_same(g, w)
    assert kind == "replay"  # the third call was replayed


def test_every_op_declares_a_forward_kernel_that_gives_its_output():
    x = ag.Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    y = ag.softmax(ag.tanh(x) * 2.0, axis=-1)
    assert np.array_equal(y.op.forward(y, y.inputs[0].numpy()), y.numpy())
    assert all(callable(op.forward) for op in ag.ops_registry.values())


# ---- the nn models ---------------------------------------------------------------------------
def _sequence_batches(n, rng, T=5, B=3, inputs=4, classes=3):
    return [(rng.standard_normal((T, B, inputs)), rng.integers(0, classes, (T, B)))
            for _ in range(n)]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_replay_gives_eager_gradients_for_recurrent_models(cell):
    model = nn.RecurrentClassifier(4, 6, 3, cell=cell, rng=0, dtype=np.float64)
    step = ag.replay(lambda xs, ys: model.loss(xs, ys))
    kinds = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)
        for xs, ys in _sequence_batches(4, np.random.default_rng(1)):
            model.zero_grad()
            want_loss = model.loss(xs, ys)
            want_loss.backward()
            want = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
            model.zero_grad()
            loss = step(xs, ys)
            kinds.append(loss.op.name)
            loss.backward()
            assert_same(loss.numpy(), want_loss.numpy())
            for n, p in model.named_parameters():
                assert_same(p.grad.numpy(), want[n])
    assert kinds[2:] == ["replay", "replay"]


def test_replay_gives_eager_gradients_for_an_mlp_and_its_training():
    rng = np.random.default_rng(2)
    models = [nn.MLP([5, 8, 8, 3], rng=0, dtype=np.float64) for _ in range(2)]
    opts = [optim.Adam(m.parameters(), lr=0.01) for m in models]
    eager = lambda x, y: nn.cross_entropy(models[0](x), y)  # noqa: E731
    step = ag.replay(lambda x, y: nn.cross_entropy(models[1](x), y))
    for k in range(5):  # the optimizer changes the parameters in place between calls
        x, y = rng.standard_normal((7, 5)), rng.integers(0, 3, 7)
        losses = []
        for fn, model, opt in ((eager, models[0], opts[0]), (step, models[1], opts[1])):
            opt.zero_grad()
            loss = fn(x, y)
            loss.backward()
            losses.append(loss.numpy().copy())
            opt.step()
        assert_same(losses[1], losses[0])
        if k >= 2:
            assert loss.op.name == "replay"
    for (n, p), (_, q) in zip(models[0].named_parameters(), models[1].named_parameters()):
        assert_same(q.numpy(), p.numpy())


def test_grad_of_a_replayed_result_and_arguments_that_require_grad():
    w = ag.Tensor(np.array([[0.5, -1.0], [2.0, 0.25]]), requires_grad=True)
    step = ag.replay(lambda x: ag.tanh(x @ w).sum())
    for k in range(3):
        x = ag.Tensor(np.array([[1.0, 2.0 + k]]), requires_grad=True)
        gx, gw = ag.grad(step(x), [x, w])
        x2 = ag.Tensor(x.numpy(), requires_grad=True)
        ex, ew = ag.grad(ag.tanh(x2 @ w).sum(), [x2, w])
        assert_same(gx.numpy(), ex.numpy())
        assert_same(gw.numpy(), ew.numpy())


# ---- the replayed sweep's accumulation ------------------------------------------------------
def _shared_gradient(x, w):  # add hands one array to u and v; their older uses add to them
    u, v = x @ w, x * 2.0
    older = (u * 3.0).sum() + (v + v).sum()
    return older + (u + v).sum()


def _computed_weight(x, w):  # a weight that is a node: its deferred products come first
    w2 = ag.tanh(w) * 0.5
    h = x[:1] @ w2
    for t in range(1, x.shape[0]):
        h = ag.tanh(x[t:t + 1] @ w2 + h @ w2)
    return (h * h).sum() + w2.sum()


def _indexed_and_dense(x, w):  # indexing adds into one buffer, dense uses add to it
    y = x @ w
    loss = (y * y).sum()
    for t in range(x.shape[0]):
        loss = loss + (y[t] * float(t + 1)).sum() + y[t, :1].sum()
    return loss + (y + 1.0).sum()


def _broadcast(x, w):  # gradients summed back to an operand's shape
    b = w[0]
    return (ag.tanh(x + b) * b).sum() + (x * w[:1]).sum()


@pytest.mark.parametrize("fn", [_shared_gradient, _computed_weight, _indexed_and_dense,
                                _broadcast], ids=lambda f: f.__name__.strip("_"))
def test_the_replayed_sweep_accumulates_as_eager_mode(fn):
    rng = np.random.default_rng(3)
    step = ag.replay(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)
        for k in range(4):
            arrays = [rng.standard_normal((4, 3)), rng.standard_normal((3, 3))]
            got_loss, got, kind = loss_and_grads(step, arrays)
            want_loss, want, _ = loss_and_grads(fn, arrays)
            assert_same(got_loss, want_loss)
            for g, w in zip(got, want):
                assert_same(g, w)
            assert (kind == "replay") == (k >= 2)


# ---- what it does not replay -------------------------------------------------------------------
def _w():
    return ag.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)


def test_value_dependent_control_flow_runs_eagerly_and_says_why_once():
    w = _w()

    def fn(x):
        y = x * w
        return (y * 2).sum() if y.sum().item() > 0 else (y * -1).sum()

    step = ag.replay(fn)
    with pytest.warns(ag.ReplayWarning, match=r"read a value of the graph \(item\(\)\)"):
        step(np.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        for sign in (1.0, -1.0, 1.0):
            x = np.array([sign, 0.5, 0.1])
            loss = step(x)
            assert loss.op.name != "replay"
            w.grad = None
            loss.backward()
            assert_same(w.grad.numpy(), x * (2 if (x * w.numpy()).sum() > 0 else -1))


def test_a_mask_computed_from_the_arguments_is_caught_by_the_second_recording():
    w = _w()

    def fn(x):  # the mask is numpy, out of the graph's sight
        return ag.where(np.asarray(x) > 0, x * w, x * 0.0).sum()

    step = ag.replay(fn)
    step(np.array([1.0, -1.0, 1.0]))
    with pytest.warns(ag.ReplayWarning, match="graph changed between two calls"):
        step(np.array([-1.0, 1.0, 1.0]))
    x = np.array([1.0, 1.0, -1.0])
    w.grad = None
    step(x).backward()
    assert_same(w.grad.numpy(), np.where(x > 0, x, 0.0))


def test_new_shapes_are_recorded_again_and_said():
    w = ag.Tensor(np.ones((3, 2)), requires_grad=True)
    step = ag.replay(lambda x: (x @ w).sum())
    for _ in range(3):
        step(np.ones((4, 3)))
    with pytest.warns(ag.ReplayWarning, match="new argument shapes"):
        loss = step(np.ones((5, 3)))
    w.grad = None
    loss.backward()
    assert_same(w.grad.numpy(), np.full((3, 2), 5.0))


@pytest.mark.parametrize("why", ["anomaly", "no_grad", "hook", "not a tensor"])
def test_what_cannot_be_replayed_runs_eagerly(why):
    w = _w()

    def fn(x):
        y = x * w
        if why == "hook":
            y.register_hook(lambda g: g * 2)
        return (y * y).sum() if why != "not a tensor" else ((y * y).sum(), y)

    step = ag.replay(fn)
    with pytest.warns(ag.ReplayWarning):
        for _ in range(3):
            if why == "anomaly":
                with ag.detect_anomaly():
                    out = step(np.ones(3))
            elif why == "no_grad":
                with ag.no_grad():
                    out = step(np.ones(3))
            else:
                out = step(np.ones(3))
    loss = out[0] if isinstance(out, tuple) else out
    assert loss.op is None or loss.op.name != "replay"


def test_a_replayed_result_refuses_what_would_be_silently_wrong():
    w = _w()
    step = ag.replay(lambda x: (x * w * w).sum())
    for _ in range(2):
        step(np.ones(3)).backward()
    first = step(np.ones(3))
    second = step(np.full(3, 2.0))
    with pytest.raises(RuntimeError, match="overwrote"):
        first.backward()
    with ag.no_grad():
        w.mul_(2.0)  # an optimizer step between forward and backward
    with pytest.raises(RuntimeError, match="modified in place"):
        second.backward()
    third = step(np.ones(3))
    with pytest.raises(RuntimeError, match="create_graph"):
        third.backward(create_graph=True)


def test_threads_sharing_a_replayed_step_get_eager_gradients_or_the_overwrite_error():
    import threading
    w = ag.Tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True)
    step = ag.replay(lambda x: ag.tanh(x @ w).sum())
    for _ in range(2):
        step(np.ones((2, 3))).backward()
    outcomes = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(30):
            x = rng.standard_normal((2, 3))
            try:
                (gw,) = ag.grad(step(x), [w])
            except RuntimeError as e:
                assert "overwrote" in str(e)
                outcomes.append("raised")
                continue
            (want,) = ag.grad(ag.tanh(ag.Tensor(x) @ w).sum(), [w])
            assert_same(gw.numpy(), want.numpy())
            outcomes.append("same")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 60
