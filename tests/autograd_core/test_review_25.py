"""Review 25: replay's buffers made once and written again by every call (b8e4e26). What an
earlier call or backward handed out must not change after later ones; later calls must match
eager mode (1e-12) and the replay without buffers (bit for bit)."""
import threading

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_buffers

from tests.autograd_core.replay_checks import assert_bits, assert_same, param, run

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.ReplayWarning")


def _plan(step):
    return next(p for p in step.plans.values() if not isinstance(p, str))


def _leaf_rows(seed=13, steps=5, width=256):
    """c_t + h @ W with per-step leaves c_t (rows of 8 KB): each c_t's gradient is a row."""
    rng = np.random.default_rng(seed)
    w = param(rng, width, width)
    w._data *= 0.1
    cs = [ag.Tensor(rng.standard_normal((4, width)), requires_grad=True) for _ in range(steps)]

    def fn(*cs):
        h, loss = ag.zeros((4, width)), 0.0
        for c in cs:
            h = ag.tanh(c + h @ w)
            loss = loss + (h * h).sum()
        return loss
    return w, cs, fn


def _fresh(cs, k):
    return [ag.Tensor(c.numpy() * (k + 2), requires_grad=True) for c in cs]


def _no_buffers(monkeypatch):
    monkeypatch.setattr(replay_buffers, "place", lambda *a: replay_buffers.Placement())


def _warm(step, params, args, calls=3):
    for _ in range(calls):
        run(step, params, args)


class Keep(ag.SweepObserver):
    def __init__(self, contributions=True):
        self.contributions = contributions
        self.kept = []

    def node(self, tensor, grad, sent):
        self.kept.append((grad, np.array(grad, copy=True)))
        for _, _, gi in sent or ():
            self.kept.append((gi, gi.copy()))

    def unchanged(self):
        return all(np.array_equal(a, b) for a, b in self.kept)


def test_hook_arguments_kept_from_a_leafs_gradient_row_survive_later_calls():
    """register_hook on c_t keeping its argument (a row of the gradient buffer)."""
    w, cs, fn = _leaf_rows()
    step = ag.replay(fn)
    _warm(step, [w] + cs, cs)
    kept = []
    for c in cs:
        c.register_hook(lambda g: kept.append((g, g.numpy().copy())))
    run(step, [w] + cs, cs)
    assert len(kept) == len(cs)
    for k in range(3):
        others = _fresh(cs, k)
        run(step, [w] + others, others)
    assert all(np.array_equal(g.numpy(), v) for g, v in kept)


def test_ag_grad_results_survive_later_calls_and_backwards():
    """ag.grad's results (the rows themselves) kept across later ag.grad and backward calls."""
    w, cs, fn = _leaf_rows()
    step = ag.replay(fn)
    _warm(step, [w] + cs, cs)
    gs = ag.grad(step(*cs), [w] + cs)
    values = [g.numpy().copy() for g in gs]
    for k in range(3):
        others = _fresh(cs, k)
        ag.grad(step(*others), others + [w])
        run(step, [w] + others, others)
    assert all(np.array_equal(g.numpy(), v) for g, v in zip(gs, values))
    want = ag.grad(fn(*cs), [w] + cs)
    got = ag.grad(step(*cs), [w] + cs)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-12, atol=1e-12)


def test_ag_grad_allow_unused_and_create_graph_refused_then_good_calls():
    """allow_unused with an unused leaf; create_graph refused; later calls still right."""
    w, cs, fn = _leaf_rows()
    unused = ag.Tensor(np.ones(3), requires_grad=True)
    step = ag.replay(fn)
    _warm(step, [w] + cs, cs)
    got = ag.grad(step(*cs), [w, unused], allow_unused=True)
    assert got[1] is None
    with pytest.raises(RuntimeError, match="create_graph"):
        ag.grad(step(*cs), [w], create_graph=True)
    assert_same(run(step, [w] + cs, cs), run(fn, [w] + cs, cs))


@pytest.mark.parametrize("contributions", [True, False])
def test_observer_arrays_kept_survive_retained_backwards_and_later_calls(contributions):
    """An observer keeping what it is shown, backward(retain_graph=True) twice, later calls."""
    w, cs, fn = _leaf_rows()
    step = ag.replay(fn)
    _warm(step, [w] + cs, cs)
    keep = Keep(contributions)
    for p in [w] + cs:
        p.grad = None
    loss = step(*cs)
    loss.backward(retain_graph=True, observer=keep)
    first = [c.grad.numpy().copy() for c in cs] + [w.grad.numpy().copy()]
    loss.backward(observer=keep)
    second = [c.grad.numpy() for c in cs] + [w.grad.numpy()]
    for a, b in zip(second, first):
        np.testing.assert_allclose(a, 2 * b, rtol=1e-14, atol=0)
    for k in range(3):
        others = _fresh(cs, k)
        run(step, [w] + others, others)
    assert keep.unchanged()
    assert_same(run(step, [w] + cs, cs), run(fn, [w] + cs, cs))


def test_grad_arrays_and_loss_views_kept_survive_later_calls():
    """.grad arrays and loss.numpy() views kept (no copy) across later calls."""
    w, cs, fn = _leaf_rows()
    step = ag.replay(fn)
    _warm(step, [w] + cs, cs)
    kept = []
    for k in range(4):
        args = cs if k % 2 == 0 else _fresh(cs, k)
        for p in [w] + list(args):
            p.grad = None
        loss = step(*args)
        loss.backward()
        for a in [loss.numpy(), w.grad.numpy()] + [c.grad.numpy() for c in args]:
            kept.append((a, a.copy()))
    assert all(np.array_equal(a, v) for a, v in kept)


def test_two_calls_then_backward_on_the_first_raises_and_the_second_matches():
    """Two calls; the first's backward raises, the second's equals eager."""
    w, cs, fn = _leaf_rows()
    step = ag.replay(fn)
    _warm(step, [w] + cs, cs)
    others = _fresh(cs, 0)
    first = step(*others)
    for p in [w] + cs:
        p.grad = None
    second = step(*cs)
    with pytest.raises(RuntimeError, match="later call"):
        first.backward()
    value = second.numpy().copy()
    second.backward()
    got = (value, [p.grad.numpy().copy() for p in [w] + cs])
    assert_same(got, run(fn, [w] + cs, cs))


def test_accumulating_grads_over_calls_without_zeroing_matches_eager():
    """.grad accumulated over several replayed calls, never zeroed."""
    w, cs, fn = _leaf_rows()
    step = ag.replay(fn)
    _warm(step, [w] + cs, cs)
    for p in [w] + cs:
        p.grad = None
    for k in range(3):
        step(*cs).backward()
    got = [p.grad.numpy().copy() for p in [w] + cs]
    for p in [w] + cs:
        p.grad = None
    for k in range(3):
        fn(*cs).backward()
    for g, e in zip(got, [p.grad.numpy() for p in [w] + cs]):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def _state_loop(steps=5, width=256, stacked=False):
    rng = np.random.default_rng(3)
    u, w = param(rng, 3, width), param(rng, width, width)
    w._data *= 0.1

    def fn(xs):
        h, hs = ag.zeros((xs.shape[1], width)), []
        for t in range(steps):
            h = ag.tanh(xs[t] @ u + h @ w)
            hs.append(h)
        return ag.stack(hs) if stacked else h
    xs = [ag.Tensor(rng.standard_normal((steps, 4, 3))) for _ in range(3)]
    return u, w, fn, xs


@pytest.mark.parametrize("stacked", [False, True])
def test_a_result_that_is_a_state_or_the_stack_of_states_stays(monkeypatch, stacked):
    """fn returns the last h or stack(hs): kept results, and bits against no buffers."""
    u, w, fn, xs = _state_loop(stacked=stacked)

    def calls(step):
        out, kept = [], []
        for k in range(6):
            for p in (u, w):
                p.grad = None
            r = step(xs[k % 3])
            kept.append((r, r.numpy().copy()))
            r.backward(np.ones(r.shape) * (k + 1))
            out.append((r.numpy().copy(), [u.grad.numpy().copy(), w.grad.numpy().copy()]))
        assert all(np.array_equal(r.numpy(), v) for r, v in kept)
        return out

    step = ag.replay(fn)
    with_buffers = calls(step)
    assert _plan(step).placement.buffers or not stacked  # the stack: rows of a buffer
    with monkeypatch.context() as m:
        _no_buffers(m)
        without = calls(ag.replay(fn))
    for a, b in zip(with_buffers, without):
        assert_bits(a, b)
    for k in range(6):
        for p in (u, w):
            p.grad = None
        r = fn(xs[k % 3])
        r.backward(np.ones(r.shape) * (k + 1))
        assert_same(with_buffers[k], (r.numpy(), [u.grad.numpy(), w.grad.numpy()]))


def test_shapes_change_and_back_reuse_the_old_plans_buffers(monkeypatch):
    """Batch size 4, then 2, then 4 again: the first plan's buffers, bits against no buffers."""
    rng = np.random.default_rng(7)
    u, w = param(rng, 3, 256), param(rng, 256, 256)
    w._data *= 0.1

    def fn(xs):
        h, loss = ag.zeros((xs.shape[1], 256)), 0.0
        for t in range(5):
            h = ag.tanh(xs[t] @ u + h @ w)
            loss = loss + (h * h).sum()
        return loss
    sets = [(ag.Tensor(rng.standard_normal((5, b, 3))),) for b in (4, 4, 4, 2, 2, 2, 4, 2, 4)]

    def calls(step):
        return [run(step, [u, w], a) for a in sets]
    got = calls(ag.replay(fn))
    with monkeypatch.context() as m:
        _no_buffers(m)
        off = calls(ag.replay(fn))
    for k, (a, b) in enumerate(zip(got, off)):
        assert_bits(a, b, f"call {k}")
        assert_same(a, run(fn, [u, w], sets[k]), f"call {k}")


def test_a_forward_that_raises_midway_then_good_calls(monkeypatch):
    """cross_entropy with a target out of range on one call, then good calls."""
    import nn
    rng = np.random.default_rng(11)
    u, w, v = param(rng, 3, 256), param(rng, 256, 256), param(rng, 256, 5)
    w._data *= 0.1

    def fn(xs, ys):
        h, loss = ag.zeros((xs.shape[1], 256)), 0.0
        for t in range(4):
            h = ag.tanh(xs[t] @ u + h @ w)
            loss = loss + nn.cross_entropy(h @ v, ys[t])
        return loss
    xs = [ag.Tensor(rng.standard_normal((4, 3, 3))) for _ in range(3)]
    ys = [rng.integers(0, 5, (4, 3)) for _ in range(3)]
    bad = ys[0].copy()
    bad[2, 1] = 7

    def calls(step):
        out = []
        for k in range(4):
            out.append(run(step, [u, w, v], (xs[k % 3], ys[k % 3])))
        pending = step(xs[1], ys[1])
        with pytest.raises(Exception):
            step(xs[0], bad)
        with pytest.raises(RuntimeError):
            pending.backward()
        for k in range(4):
            out.append(run(step, [u, w, v], (xs[k % 3], ys[k % 3])))
        return out
    got = calls(ag.replay(fn))
    with monkeypatch.context() as m:
        _no_buffers(m)
        off = calls(ag.replay(fn))
    for k, (a, b) in enumerate(zip(got, off)):
        assert_bits(a, b, f"call {k}")
        assert_same(a, run(fn, [u, w, v], (xs[k % 4 % 3], ys[k % 4 % 3])), f"call {k}")


def test_two_replays_sharing_parameters_interleaved():
    """Two replayed functions over the same W, calls interleaved, results kept."""
    w, cs, fn = _leaf_rows()
    a, b = ag.replay(fn), ag.replay(lambda *cs: fn(*cs) * 2.0)
    kept = []
    for k in range(5):
        args = cs if k % 2 else _fresh(cs, k)
        la = a(*args)
        lb = b(*args)
        for p in [w] + list(args):
            p.grad = None
        lb.backward()
        gb = [p.grad.numpy().copy() for p in [w] + list(args)]
        for p in [w] + list(args):
            p.grad = None
        la.backward()
        ga = [p.grad for p in [w] + list(args)]
        kept += [(g, g.numpy().copy()) for g in ga]
        for x, y in zip(ga, gb):
            np.testing.assert_allclose(2 * x.numpy(), y, rtol=1e-12, atol=1e-12)
    assert all(np.array_equal(g.numpy(), v) for g, v in kept)


def test_threads_sharing_one_replayed_function():
    """Threads taking turns with one replayed function: each thread's gradients as eager."""
    w, cs, fn = _leaf_rows()
    step = ag.replay(fn)
    _warm(step, [w] + cs, cs)
    want = ag.grad(fn(*cs), [w] + cs)
    errors, lock = [], threading.Lock()

    def work():
        for _ in range(5):
            with lock:  # call and backward together: a later call would overwrite
                got = ag.grad(step(*cs), [w] + cs)
            for g, e in zip(got, want):
                if not np.allclose(g.numpy(), e.numpy(), rtol=1e-12, atol=1e-12):
                    errors.append("differs")
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_user_loops_kept_grads_and_bits_against_no_buffers(monkeypatch, cell):
    """benchmarks' rnn/gru user loops: kept .grad/loss unchanged, bits against no buffers."""
    import nn
    from benchmarks import _steps
    model, _, xs, targets = _steps.sequence_task(cell)
    xs, targets = xs[:6], targets[:6]
    loop = _steps.rnn_user_loop if cell == "rnn" else _steps.gru_user_loop
    params = dict(model.named_parameters())
    plist = list(params.values())
    xsets = [ag.Tensor(xs), ag.Tensor(xs[::-1].copy())]

    def calls(step):
        out, kept = [], []
        for k in range(5):
            for p in plist:
                p.grad = None
            loss = step(xsets[k % 2])
            loss.backward()
            kept += [(a, a.copy()) for a in [loss.numpy()] + [p.grad.numpy() for p in plist]]
            out.append((loss.numpy().copy(), [p.grad.numpy().copy() for p in plist]))
        assert all(np.array_equal(a, v) for a, v in kept)
        return out

    fn = lambda x: loop(ag, nn, params, x, targets)  # noqa: E731
    step = ag.replay(fn)
    got = calls(step)
    assert _plan(step).placement.buffers
    with monkeypatch.context() as m:
        _no_buffers(m)
        off = calls(ag.replay(fn))
    for k, (a, b) in enumerate(zip(got, off)):
        assert_bits(a, b, f"call {k}")


def test_one_leaf_given_as_several_steps_c_t_with_retained_ag_grad():
    """The same leaf as c_0, c_2, c_4; ag.grad twice on one result (retained), a later call."""
    w, cs, fn = _leaf_rows()
    c = cs[0]
    args = [c, cs[1], c, cs[2], c]
    step = ag.replay(fn)
    _warm(step, [w] + cs, args)
    loss = step(*args)
    first = ag.grad(loss, [c, cs[1]], retain_graph=True)
    values = [g.numpy().copy() for g in first]
    second = ag.grad(loss, [c, cs[1]])
    others = _fresh(cs, 0)
    ag.grad(step(others[0], others[1], others[0], others[2], others[0]), [others[0], others[1]])
    for g1, g2, v in zip(first, second, values):
        assert np.array_equal(g1.numpy(), v) and np.array_equal(g2.numpy(), v)
    want = ag.grad(fn(*args), [c, cs[1], w])
    got = ag.grad(step(*args), [c, cs[1], w])
    for g, e in zip(got, want):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-12, atol=1e-12)
