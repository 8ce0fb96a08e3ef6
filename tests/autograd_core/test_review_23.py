"""Review 23: hostile tests of replay's buffers (replay_buffers): a loop's states written
into one buffer per call, the stacks of a weight's factors and of its uses' gradients as views.
Each replayed call is held to eager mode (float64, 1e-12) and, bit for bit, to the same
replay with the buffers switched off."""
import threading
import warnings

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_buffers

from tests.autograd_core.replay_checks import assert_bits, assert_same, param, run
from tests.autograd_core.test_replay_buffers import _loop


def _plan(step):
    (plan,) = step.plans.values()
    return plan


def _plain(monkeypatch):
    monkeypatch.setattr(replay_buffers, "place",
                        lambda program, steps: replay_buffers.Placement())


def _replays(monkeypatch, fn, params, argsets, calls=5, batch=True):
    """[(value, grads)] per call of the replay with buffers, then of the one without."""
    placed = ag.replay(fn, batch=batch)
    got = [run(placed, params, argsets[k % len(argsets)]) for k in range(calls)]
    with monkeypatch.context() as m:
        _plain(m)
        plain = ag.replay(fn, batch=batch)
        want = [run(plain, params, argsets[k % len(argsets)]) for k in range(calls)]
    return placed, got, want


def _held(monkeypatch, fn, params, argsets, calls=5, batch=True, eager=True):
    """Buffers vs no buffers bit for bit; and vs eager (float64 1e-12, or bits with
    batch=False). Returns the replay with buffers."""
    placed, got, want = _replays(monkeypatch, fn, params, argsets, calls, batch)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_bits(g, w, f"buffers vs none, call {k}")
    if eager:
        for k in range(calls):
            e = run(fn, params, argsets[k % len(argsets)])
            (assert_same if batch else assert_bits)(got[k], e, f"vs eager, call {k}")
    return placed


def _xs(rng, count=3, steps=6, batch=2, inputs=3, dtype=np.float64):
    return [(ag.Tensor(rng.standard_normal((steps, batch, inputs)).astype(dtype)),)
            for _ in range(count)]


def test_relu_loop_under_warnings_as_errors():
    """A relu loop's placed kernel must not warn (eager does not) when warnings are errors."""
    rng = np.random.default_rng(1)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    fn = _loop(act=ag.relu)
    args = _xs(rng)
    step = ag.replay(lambda xs: fn(xs, u, w))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ag.ReplayWarning)
        want = [run(lambda xs: fn(xs, u, w), [u, w], args[k % 3]) for k in range(5)]
        got = [run(step, [u, w], args[k % 3]) for k in range(5)]
    for g, e in zip(got, want):
        assert_same(g, e)


def _transposed_loop(u, w, batch, hidden, states_loss=True):
    def fn(xs):
        h, loss, states = ag.zeros((batch, hidden)), 0.0, []
        for t in range(6):
            h = ag.tanh(((w @ h.T) + (xs[t] @ u).T).T)  # a Fortran-ordered state in eager
            states.append(h)
            loss = loss + (h @ w).sum() * 0.1
        return loss + (ag.stack(states) ** 2).sum()
    return fn


def test_fortran_ordered_states(monkeypatch):
    """States tanh makes in Fortran order (of a transpose) placed in C rows: bits."""
    rng = np.random.default_rng(2)
    u, w = param(rng, 3, 33), param(rng, 33, 33)
    w._data *= 0.3
    _held(monkeypatch, _transposed_loop(u, w, 5, 33), [u, w], _xs(rng, batch=5))


def test_fortran_ordered_states_batch_false(monkeypatch):
    """batch=False stays eager's bits with Fortran-ordered states placed in a stack."""
    rng = np.random.default_rng(2)
    u, w = param(rng, 3, 33), param(rng, 33, 33)
    w._data *= 0.3
    _held(monkeypatch, _transposed_loop(u, w, 5, 33), [u, w], _xs(rng, batch=5), batch=False)


@pytest.mark.parametrize("batch", [True, False])
def test_fortran_ordered_gradient_rows(monkeypatch, batch):
    """Gradient rows: a weight's uses whose gradients eager mode has in Fortran order."""
    rng = np.random.default_rng(3)
    x, w, v = param(rng, 5, 5, 33), param(rng, 33, 65), param(rng, 7, 65)

    def fn():
        loss = 0.0
        for t in range(5):
            p = -(x[t] @ w)
            loss = loss + ((v @ p.T) ** 2).sum()
        return loss

    step = _held(monkeypatch, fn, [x, w, v], [()], batch=batch)
    assert _plan(step).placement.gradient_buffers


def test_fortran_ordered_cases_are_eager_bits_without_buffers(monkeypatch):
    """Control: without buffers both Fortran-ordered cases above are eager's bits
    (batch=False)."""
    _plain(monkeypatch)
    rng = np.random.default_rng(2)
    u, w = param(rng, 3, 33), param(rng, 33, 33)
    w._data *= 0.3
    fn = _transposed_loop(u, w, 5, 33)
    step = ag.replay(fn, batch=False)
    for k, (x,) in enumerate(_xs(rng, batch=5, count=5)):
        assert_bits(run(step, [u, w], (x,)), run(fn, [u, w], (x,)), f"call {k}")
    rng = np.random.default_rng(3)
    x, w, v = param(rng, 5, 5, 33), param(rng, 33, 65), param(rng, 7, 65)

    def negated():
        loss = 0.0
        for t in range(5):
            p = -(x[t] @ w)
            loss = loss + ((v @ p.T) ** 2).sum()
        return loss

    step = ag.replay(negated, batch=False)
    for k in range(5):
        assert_bits(run(step, [x, w, v], ()), run(negated, [x, w, v], ()), f"call {k}")


def test_h0_argument_requiring_grad_changes_each_call(monkeypatch):
    """h_0 an argument that requires grad, new values every call: its gradient and W's."""
    rng = np.random.default_rng(4)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    fn = _loop()
    h0s = [param(rng, 2, 4) for _ in range(4)]
    argsets = [(x, h0) for (x,), h0 in zip(_xs(rng, count=4), h0s)]
    _held(monkeypatch, lambda xs, h0: fn(xs, u, w, h0), [u, w] + h0s, argsets, calls=8)


def test_grad_with_several_inputs():
    """ag.grad of a replayed loss for W, U and h_0 together, against eager."""
    rng = np.random.default_rng(5)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    fn = _loop()
    args = _xs(rng)
    h0 = param(rng, 2, 4)
    step = ag.replay(lambda xs, h: fn(xs, u, w, h))
    for k in range(5):
        got = ag.grad(step(args[k % 3][0], h0), [w, h0, u])
        want = ag.grad(fn(args[k % 3][0], u, w, h0), [w, h0, u])
        for g, e in zip(got, want):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-12, atol=1e-12)


def test_backward_twice_with_retain_graph():
    """Two backward passes of one replayed result give eager's two passes (each pass's
    .grad as eager's, the second accumulated)."""
    rng = np.random.default_rng(6)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    fn = _loop()
    args = _xs(rng)
    step = ag.replay(lambda xs: fn(xs, u, w))

    def twice(f, x):
        for p in (u, w):
            p.grad = None
        out = f(x)
        out.backward(retain_graph=True)
        first = [p.grad.numpy().copy() for p in (u, w)]
        out.backward()
        return first + [p.grad.numpy().copy() for p in (u, w)]

    for k in range(6):
        got = twice(step, args[k % 3][0])
        want = twice(lambda x: fn(x, u, w), args[k % 3][0])
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


class _Keeper(ag.SweepObserver):
    def __init__(self):
        self.seen = []

    def node(self, tensor, grad, sent):
        self.seen.append((grad, grad.copy()))
        for _, _, gi in sent:
            if gi is not None:
                self.seen.append((gi, gi.copy()))


def test_observer_arrays_unchanged_by_later_calls():
    """Arrays an observer was shown stay as shown after later calls and backwards."""
    rng = np.random.default_rng(7)
    u, w = param(rng, 3, 256), param(rng, 256, 256)
    w._data *= 0.1
    fn = _loop(steps=5)
    args = _xs(rng, batch=4)
    step = ag.replay(lambda xs: fn(xs, u, w))
    keepers = []
    for k in range(6):
        keeper = _Keeper()
        step(args[k % 3][0]).backward(observer=keeper)
        keepers.append(keeper)
    for keeper in keepers:
        for a, c in keeper.seen:
            np.testing.assert_array_equal(a, c)


def _states_fn(u, w, steps, combine, start=None):
    """The loop's states h_1..h_T handed to `combine(states, h)` for the loss."""
    def fn(xs):
        h = ag.zeros((xs.shape[1], w.shape[0])) if start is None else start(xs)
        states = []
        for t in range(steps):
            h = ag.tanh(xs[t] @ u + h @ w)
            states.append(h)
        return combine(states)
    return fn


_COMBINE = {
    "offsets": lambda hs: ((ag.stack(hs[:4]) ** 2).sum() + (ag.stack(hs[2:]) * 3).sum()
                           + (ag.stack(hs[1:5]) ** 3).sum()),
    "every_other": lambda hs: (ag.stack(hs[1::2]) ** 2).sum(),
    "reversed": lambda hs: (ag.stack(hs[::-1])
                            * ag.Tensor(np.arange(len(hs), dtype=float)[:, None, None])).sum(),
    "twice_in_one": lambda hs: (ag.stack(hs + hs[:1]) ** 2).sum(),
    "stack_of_stacks": lambda hs: (ag.stack([ag.stack(hs[:3]), ag.stack(hs[3:6])]) ** 2).sum(),
    "last_only": lambda hs: (hs[-1] * hs[-1]).sum(),
    "sum_then_stack": lambda hs: (ag.stack(hs) ** 2).sum() + (ag.stack(hs[:-1]) * 2).sum(),
}


@pytest.mark.parametrize("how", sorted(_COMBINE))
def test_stacks_of_states_in_odd_orders(monkeypatch, how):
    """States shared by stacks at several offsets, some steps only, reversed, repeated."""
    rng = np.random.default_rng(10)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    _held(monkeypatch, _states_fn(u, w, 6, _COMBINE[how]), [u, w], _xs(rng))


def test_first_state_made_by_a_ufunc_inside(monkeypatch):
    """h_1 = tanh(x_0 U) (a state no product made) heads both the stack and W's factors."""
    rng = np.random.default_rng(11)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    fn = _states_fn(u, w, 6, lambda hs: (ag.stack(hs) ** 2).sum(),
                    start=lambda xs: ag.tanh(xs[0] @ u))
    _held(monkeypatch, fn, [u, w], _xs(rng))


def test_states_of_two_interleaved_loops(monkeypatch):
    """One stack interleaving the states of two loops (and each loop's weight)."""
    rng = np.random.default_rng(12)
    u, w, u2, w2 = (param(rng, 3, 4), param(rng, 4, 4), param(rng, 3, 4), param(rng, 4, 4))

    def fn(xs):
        h, g, hs = ag.zeros((2, 4)), ag.zeros((2, 4)), []
        for t in range(6):
            h = ag.tanh(xs[t] @ u + h @ w)
            g = ag.tanh(xs[t] @ u2 + g @ w2)
            hs += [h, g]
        return (ag.stack(hs) ** 2).sum() + (ag.stack(hs[1::2]) * ag.stack(hs[::2])).sum()

    _held(monkeypatch, fn, [u, w, u2, w2], _xs(rng))


def test_two_weights_read_the_same_states(monkeypatch):
    """h W and sigmoid(h W2) each step: two weights whose factor lists are the same."""
    rng = np.random.default_rng(13)
    u, w, w2 = param(rng, 3, 4), param(rng, 4, 4), param(rng, 4, 4)

    def fn(xs):
        h, loss = ag.zeros((2, 4)), 0.0
        for t in range(6):
            h = ag.tanh(xs[t] @ u + h @ w + ag.sigmoid(h @ w2))
            loss = loss + (h * h).sum()
        return loss

    _held(monkeypatch, fn, [u, w, w2], _xs(rng))


@pytest.mark.parametrize("dtypes", [("float16",) * 3, ("float32",) * 3,
                                    ("float32", "float64", "float32"),
                                    ("float32", "float32", "float64"),
                                    ("float32", "float16", "float32"),
                                    ("float64", "float32", "float64")])
@pytest.mark.parametrize("batch", [True, False])
def test_dtypes_of_params_inputs_and_first_state(monkeypatch, dtypes, batch):
    """Weights, inputs and h_0 of several dtypes: bits of the replay without buffers."""
    pdt, xdt, hdt = (np.dtype(d) for d in dtypes)
    rng = np.random.default_rng(14)
    u, w = param(rng, 3, 64, dtype=pdt), param(rng, 64, 64, dtype=pdt)
    w._data *= 0.2

    def fn(xs):
        h, loss = ag.zeros((16, 64), dtype=hdt), 0.0
        for t in range(6):
            h = ag.tanh(xs[t] @ u + h @ w)
            loss = loss + (h * h).sum()
        return loss

    eager = all(d == np.float64 for d in (pdt, xdt, hdt))
    _held(monkeypatch, fn, [u, w], _xs(rng, batch=16, dtype=xdt), batch=batch, eager=eager)


@pytest.mark.parametrize("steps, batch, hidden", [(1, 2, 4), (2, 2, 4), (6, 0, 4), (6, 2, 0),
                                                  (6, 1, 1), (400, 2, 4), (60, 4, 64)])
@pytest.mark.parametrize("stacked", [False, True])
def test_edge_shapes_single_step_and_long_loops(monkeypatch, steps, batch, hidden, stacked):
    """Size-0 states, 1x1 states, one and two steps, a 400-step loop."""
    rng = np.random.default_rng(15)
    u, w = param(rng, 3, hidden), param(rng, hidden, hidden)
    w._data *= 0.3

    def combine(hs):
        loss = 0.0
        for h in hs:
            loss = loss + (h * h).sum()
        return loss + (ag.stack(hs) * 0.5).sum() if stacked and len(hs) > 1 else loss

    _held(monkeypatch, _states_fn(u, w, steps, combine), [u, w],
          _xs(rng, steps=steps, batch=batch), calls=4)


def test_one_dimensional_states_stacked(monkeypatch):
    """1-D states h_t = tanh(W h + x_t) stacked, and the stack read by a product."""
    rng = np.random.default_rng(16)
    w, v = param(rng, 300, 300), param(rng, 300, 3)
    w._data *= 0.05

    def fn(xs):
        h, hs = ag.zeros(300), []
        for t in range(5):
            h = ag.tanh(w @ h + xs[t])
            hs.append(h)
        return ((ag.stack(hs) @ v) ** 2).sum()

    argsets = [(ag.Tensor(rng.standard_normal((5, 300))),) for _ in range(3)]
    _held(monkeypatch, fn, [w, v], argsets)


def test_nan_inf_and_negative_zero(monkeypatch):
    """Inputs with NaN, inf and -0.0: the same bits (NaN payloads, signs of zeros)."""
    rng = np.random.default_rng(17)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    argsets = []
    for k in range(3):
        x = rng.standard_normal((6, 2, 3))
        x[1, 0, 0], x[2, 1, 1], x[3, 0, 2] = [np.nan, np.inf, -np.inf][k], -0.0, 0.0
        argsets.append((ag.Tensor(x),))
    fn = _states_fn(u, w, 6, lambda hs: (ag.stack(hs) * -0.0).sum() + (hs[-1] ** 2).sum())
    with np.errstate(all="ignore"):
        placed, got, want = _replays(monkeypatch, fn, [u, w], argsets)
    for g, e in zip(got, want):
        assert_bits(g, e)


@pytest.mark.parametrize("edit", ["h0", "w", "xs"])
def test_in_place_edit_between_forward_and_backward_raises_as_eager(edit):
    """An in-place edit (under no_grad) of h_0 (the front row's copy), W or the inputs
    between a replayed forward and its backward raises where eager mode does."""
    rng = np.random.default_rng(18)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    h0 = ag.Tensor(rng.standard_normal((2, 4)))
    fn = _loop()
    step = ag.replay(lambda xs: fn(xs, u, w, h0))

    def one(f, x):
        for p in (u, w):
            p.grad = None
        out = f(x)
        with ag.no_grad():
            {"h0": h0, "w": w, "xs": x}[edit].mul_(1.5)
        try:
            out.backward()
        except RuntimeError:
            return "raised"
        finally:
            with ag.no_grad():
                {"h0": h0, "w": w, "xs": x}[edit].div_(1.5)
        return w.grad.numpy().copy()

    for k in range(6):
        data = rng.standard_normal((6, 2, 3))
        got = one(step, ag.Tensor(data.copy()))
        want = one(lambda x: fn(x, u, w, h0), ag.Tensor(data.copy()))
        if k < 2:  # the recording calls (their probes are not the caller's tensors)
            continue
        assert isinstance(got, str) == isinstance(want, str), (k, got, want)
        if not isinstance(want, str):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_numpy_h0_argument_changed_between_forward_and_backward(monkeypatch):
    """h_0 passed as a raw numpy array and overwritten after the forward: every mode
    reads the array when its backward runs (the front row is copied then)."""
    rng = np.random.default_rng(19)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    fn = _loop()
    args = _xs(rng)
    h0 = np.zeros((2, 4))

    def calls(f):
        out = []
        r = np.random.default_rng(0)
        for k in range(5):
            h0[:] = r.standard_normal((2, 4))
            for p in (u, w):
                p.grad = None
            loss = f(args[k % 3][0], h0)
            value = loss.numpy().copy()
            h0[:] = r.standard_normal((2, 4))
            loss.backward()
            out.append((value, [u.grad.numpy().copy(), w.grad.numpy().copy()]))
        return out

    got = calls(ag.replay(lambda xs, h: fn(xs, u, w, h)))
    with monkeypatch.context() as m:
        _plain(m)
        plain = calls(ag.replay(lambda xs, h: fn(xs, u, w, h)))
    eager = calls(lambda xs, h: fn(xs, u, w, h))
    for g, p, e in zip(got, plain, eager):
        assert_bits(g, p)
        assert_same(g, e)


def test_gradients_of_per_step_bias_leaves_are_not_rows_that_change(monkeypatch):
    """Per-step bias leaves of addmm get their use's gradient ({g}, a gradient row): their
    .grad held over later calls and backwards stays as it was."""
    rng = np.random.default_rng(20)
    w = param(rng, 64, 64)
    w._data *= 0.2
    cs = [param(rng, 4, 64) for _ in range(5)]
    args = [(ag.Tensor(rng.standard_normal((5, 4, 64))),) for _ in range(3)]

    def fn(xs):
        h, loss = ag.zeros((4, 64)), 0.0
        for t in range(5):
            h = ag.tanh(ag.addmm(cs[t], h, w) + xs[t] * 0.1)
            loss = loss + (h * h).sum()
        return loss

    step = _held(monkeypatch, fn, [w] + cs, args)
    held = []
    for k in range(4):
        for p in [w] + cs:
            p.grad = None
        step(args[k % 3][0]).backward()
        held.append([(p.grad, p.grad.numpy().copy()) for p in [w] + cs])
    for grads in held:
        for g, c in grads:
            np.testing.assert_array_equal(g.numpy(), c)


def test_two_threads_sharing_one_replay():
    """Two threads taking turns (call and backward under their own lock) on one replay."""
    rng = np.random.default_rng(21)
    u, w = param(rng, 3, 64), param(rng, 64, 64)
    w._data *= 0.2
    fn = _loop(steps=5)
    args = _xs(rng, steps=5, batch=8)
    wants = [run(lambda xs: fn(xs, u, w), [u, w], a) for a in args]
    step = ag.replay(lambda xs: fn(xs, u, w))
    lock, errors, results = threading.Lock(), [], []

    def worker(seed):
        try:
            for k in range(12):
                j = (k + seed) % 3
                with lock:
                    for p in (u, w):
                        p.grad = None
                    got = run(step, [u, w], args[j])
                results.append((j, got))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for j, got in results:
        assert_same(got, wants[j])


@pytest.mark.parametrize("cell, kwargs", [("rnn", {}), ("gru", {}), ("lstm", {}),
                                          ("rnn", {"num_layers": 2}),
                                          ("gru", {"variant": "torch"}),
                                          ("rnn", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("batch", [True, False])
def test_nn_recurrent_models(monkeypatch, cell, kwargs, batch):
    """nn.RNN / GRU / LSTM classifiers (float64, gradient rows of 2 KB): eager and bits."""
    import nn

    rng = np.random.default_rng(22)
    model = nn.RecurrentClassifier(5, 16, 4, cell=cell, rng=rng, dtype=np.float64, **kwargs)
    params = list(model.parameters())
    argsets = [(ag.Tensor(rng.standard_normal((7, 16, 5))), rng.integers(0, 4, (7, 16)))
               for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _held(monkeypatch, lambda x, y: model.loss(x, y), params, argsets, batch=batch)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_nn_model_initial_state_argument_requiring_grad(monkeypatch, cell):
    """model.loss with h_0 (LSTM: h_0, c_0) arguments that require grad and change."""
    import nn

    rng = np.random.default_rng(23)
    model = nn.RecurrentClassifier(5, 16, 4, cell=cell, rng=rng, dtype=np.float64)
    params = list(model.parameters())
    starts = [param(rng, 1, 16, 16) for _ in range(6)]
    argsets = []
    for k in range(3):
        x, y = ag.Tensor(rng.standard_normal((7, 16, 5))), rng.integers(0, 4, (7, 16))
        argsets.append((x, y, (starts[2 * k], starts[2 * k + 1]) if cell == "lstm"
                        else starts[2 * k]))
    _held(monkeypatch, lambda x, y, h: model.loss(x, y, h0=h), params + starts, argsets,
          calls=6)


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_benchmark_user_loops(monkeypatch, cell):
    """benchmarks' rnn_user_loop / gru_user_loop on sequence_task (float32): bits."""
    import nn
    from benchmarks import _steps

    model, _, xs, targets = _steps.sequence_task(cell)
    p = dict(model.named_parameters())
    loop = _steps.rnn_user_loop if cell == "rnn" else _steps.gru_user_loop
    rng = np.random.default_rng(24)
    argsets = [(ag.Tensor(rng.standard_normal(xs[:12].shape).astype(np.float32)),
                rng.integers(0, 32, targets[:12].shape)) for _ in range(2)]
    step = _held(monkeypatch, lambda x, y: loop(ag, nn, p, x, y), list(p.values()), argsets,
                 calls=4, eager=False)
    assert _plan(step).placement.buffers and _plan(step).placement.gradient_buffers


# ---- a user op's texts (Op allows any Python expression, checked by check_text) ---------------
def _tanh_op(text):
    """tanh with its own inline_forward text (name None: not registered)."""
    return type("OwnTanh", (ag.ops_registry["tanh"],), {"name": None, "inline_forward": text})


def _user_op_loop(op, u, w):
    from autograd_core.function import record

    def fn(xs):
        h, hs = ag.zeros((2, 4)), []
        for t in range(6):
            a = xs[t] @ u + h @ w
            h = record(op, np.tanh(a.data), (a,))
            hs.append(h)
        return (ag.stack(hs) ** 2).sum()
    return fn


_FORWARD_TEXTS = ["np.tanh({x0})  # the kernel's own", "np.tanh({x0}) ", "np.tanh({x0})\n",
                  "(np.tanh({x0}))"]


@pytest.mark.parametrize("text", _FORWARD_TEXTS)
def test_user_forward_texts_replay_without_buffers(monkeypatch, text):
    """Control: these valid texts replay as eager mode with the buffers switched off."""
    rng = np.random.default_rng(25)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    _plain(monkeypatch)
    for batch in (True, False):
        step = ag.replay(_user_op_loop(_tanh_op(text), u, w), batch=batch)
        for k, (x,) in enumerate(_xs(rng, count=5)):
            got = run(step, [u, w], (x,))
            want = run(_user_op_loop(_tanh_op(text), u, w), [u, w], (x,))
            (assert_same if batch else assert_bits)(got, want, f"call {k}")


@pytest.mark.parametrize("text", _FORWARD_TEXTS)
def test_user_forward_texts_placed_in_a_buffer(monkeypatch, text):
    """A user op's valid inline_forward text (a comment, trailing space, parentheses)."""
    rng = np.random.default_rng(25)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    _held(monkeypatch, _user_op_loop(_tanh_op(text), u, w), [u, w], _xs(rng))


def _negation(bwd):
    class Negation(ag.Op):
        name = None
        inputs = ("x",)
        saves = ("x",)
        view = False
        rule = "d(-x) = -g"
        hazard = None
        memory = ag.Memory()
        inline_forward, inline_backward = "np.negative({x0})", (bwd,)

        @staticmethod
        def forward(out, x):
            return np.negative(x)

        @staticmethod
        def backward(g, out, xp):
            return (-g,)
    return Negation


def _negated_uses(op, x, w):
    from autograd_core.function import record

    def fn():
        loss = 0.0
        for t in range(5):
            p = x[t] @ w
            q = record(op, np.negative(p.data), (p,))
            loss = loss + (q * q).sum()
        return loss
    return fn


_RULE_TEXTS = ["(np.negative({g}))", "np.negative({g}) ", "np.negative({g})\n"]


@pytest.mark.parametrize("text", _RULE_TEXTS)
def test_user_rule_texts_replay_without_buffers(monkeypatch, text):
    """Control: these valid rule texts replay as eager mode with the buffers switched off."""
    rng = np.random.default_rng(26)
    x, w = param(rng, 5, 5, 33), param(rng, 33, 65)
    _plain(monkeypatch)
    fn = _negated_uses(_negation(text), x, w)
    step = ag.replay(fn)
    for k in range(5):
        assert_same(run(step, [x, w], ()), run(fn, [x, w], ()), f"call {k}")


@pytest.mark.parametrize("text", _RULE_TEXTS)
def test_user_rule_texts_written_into_gradient_rows(monkeypatch, text):
    """A user op's valid inline_backward text written into a weight use's gradient row."""
    rng = np.random.default_rng(26)
    x, w = param(rng, 5, 5, 33), param(rng, 33, 65)
    _held(monkeypatch, _negated_uses(_negation(text), x, w), [x, w], [()])


def test_two_threads_without_a_lock_raise_or_give_eager_values():
    """Two threads calling one replay and ag.grad with no lock of their own: a backward
    either raises (a later call overwrote its values) or gives eager mode's gradients."""
    rng = np.random.default_rng(27)
    u, w = param(rng, 3, 64), param(rng, 64, 64)
    w._data *= 0.2
    fn = _loop(steps=5)
    args = _xs(rng, steps=5, batch=8)
    wants = [[g.numpy().copy() for g in ag.grad(fn(a[0], u, w), [u, w])] for a in args]
    step = ag.replay(lambda xs: fn(xs, u, w))
    for k in range(3):
        ag.grad(step(args[k][0]), [u, w])
    wrong, unexpected = [], []

    def worker(seed):
        for k in range(40):
            j = (k + seed) % 3
            try:
                got = ag.grad(step(args[j][0]), [u, w])
            except RuntimeError as e:
                if "overwrote" not in str(e):
                    unexpected.append(e)
                continue
            except Exception as e:  # noqa: BLE001
                unexpected.append(e)
                continue
            for g, e in zip(got, wants[j]):
                if not np.allclose(g.numpy(), e, rtol=1e-12, atol=1e-12):
                    wrong.append(j)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not unexpected and not wrong


def test_a_call_that_raises_in_its_forward_leaves_later_calls_right(monkeypatch):
    """A replayed call whose forward raises (targets out of range) between good calls."""
    import nn

    rng = np.random.default_rng(28)
    model = nn.RecurrentClassifier(5, 16, 4, cell="rnn", rng=rng, dtype=np.float64)
    params = list(model.parameters())
    step = ag.replay(lambda x, y: model.loss(x, y))
    good = [(ag.Tensor(rng.standard_normal((7, 16, 5))), rng.integers(0, 4, (7, 16)))
            for _ in range(3)]
    bad = (good[0][0], np.full((7, 16), 9))
    for k in range(8):
        if k in (3, 5):
            with pytest.raises(Exception):
                step(*bad)
            with pytest.raises(Exception):
                model.loss(*bad)
            continue
        got = run(step, params, good[k % 3])
        want = run(lambda x, y: model.loss(x, y), params, good[k % 3])
        assert_same(got, want, f"call {k}")


_ACTS = {
    "log": lambda z, a: ag.log(z * z + 1.0),
    "mul": lambda z, a: z * a,
    "sub": lambda z, a: a - ag.tanh(z),
    "neg": lambda z, a: -ag.tanh(z),
    "exp": lambda z, a: ag.exp(-z * z),
    "sigmoid": lambda z, a: ag.sigmoid(z),
    "add": lambda z, a: ag.tanh(z) + a,
}


@pytest.mark.parametrize("act", sorted(_ACTS))
@pytest.mark.parametrize("batch", [True, False])
def test_states_made_by_each_ufunc_kernel(monkeypatch, act, batch):
    """log, multiply, subtract, negative, exp, add states (and sigmoid's, not placed), with
    rows large enough for gradient rows: eager and the bits of no buffers."""
    rng = np.random.default_rng(30)
    u, w, a = param(rng, 3, 64), param(rng, 64, 64), param(rng, 4, 64)
    w._data *= 0.1

    def fn(xs):
        h, hs, loss = ag.zeros((4, 64)), [], 0.0
        for t in range(6):
            h = _ACTS[act](xs[t] @ u + h @ w, a)
            hs.append(h)
            loss = loss + (h * h).sum()
        return loss + (ag.stack(hs) * 0.3).sum()

    _held(monkeypatch, fn, [u, w, a], _xs(rng, batch=4), batch=batch)


def test_a_stack_of_states_as_the_result(monkeypatch):
    """The function returns the stack itself (a view of the buffer): the value a call
    returned stays after later calls, and backward(gradient) gives eager's gradients."""
    rng = np.random.default_rng(31)
    u, w = param(rng, 3, 64), param(rng, 64, 64)
    w._data *= 0.1
    fn = _states_fn(u, w, 6, lambda hs: ag.stack(hs) * 2.0)
    args = _xs(rng, batch=4)
    grad = ag.Tensor(rng.standard_normal((6, 4, 64)))
    step = ag.replay(fn)
    kept = []
    for k in range(6):
        outs = []
        for f in (step, fn):
            for p in (u, w):
                p.grad = None
            out = f(args[k % 3][0])
            outs.append((out.numpy().copy(), out))
            out.backward(grad)
            outs.append([p.grad.numpy().copy() for p in (u, w)])
        (v, out), gs, (ev, _), egs = outs
        kept.append((out, v))
        assert_same((v, gs), (ev, egs), f"call {k}")
    for out, v in kept:
        np.testing.assert_array_equal(out.numpy(), v)
