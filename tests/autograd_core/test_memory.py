"""Memory: a backward releases the graph (by reference counting alone), training keeps memory
flat, a 100,000-step unroll costs its saved activations and is freed without recursion, and
nothing is saved under no_grad.

Run with -s to see the measured figures."""
import gc
import sys
import tracemalloc
import weakref
from contextlib import contextmanager

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.anomaly import _origin
import nn
from nn import optim

DEFAULT_RECURSION_LIMIT = 1000
LONG = 100_000


@pytest.fixture
def no_gc():
    """The cycle collector off: whatever is freed here is freed by reference counting."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


@contextmanager
def traced():
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _current():
    return tracemalloc.get_traced_memory()[0]


@contextmanager
def tight_recursion_limit(headroom=60):
    """Allow only `headroom` more Python frames than the caller has: any recursion over the
    graph (100,000 deep) would raise RecursionError."""
    limit = sys.getrecursionlimit()
    depth, f = 0, sys._getframe()
    while f is not None:
        depth, f = depth + 1, f.f_back
    sys.setrecursionlimit(depth + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


# ---- the graph is released by backward ----------------------------------------------------------
def _small_graph():
    rng = np.random.default_rng(0)
    W = ag.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    x_arr = rng.standard_normal((2, 4))
    x = ag.Tensor(x_arr)  # saved by matmul for W's gradient
    a = x @ W
    h = ag.tanh(a)  # saves its output
    loss = (h * h).sum()
    hv = np.tanh(x_arr @ W.data)
    expected = x_arr.T @ (2 * hv * (1 - hv ** 2))
    refs = {"input array of matmul": weakref.ref(x_arr), "matmul output": weakref.ref(a),
            "its array": weakref.ref(a.data), "tanh output": weakref.ref(h),
            "tanh's saved array": weakref.ref(h.data)}
    return W, loss, refs, expected


def test_backward_frees_saved_arrays_and_intermediates_by_refcount(no_gc):
    W, loss, refs, expected = _small_graph()
    assert all(r() is not None for r in refs.values())  # the graph holds them for backward
    loss.backward()
    assert [k for k, r in refs.items() if r() is not None] == []  # freed, loss still alive
    assert loss._inputs is None and loss._saved is None
    np.testing.assert_allclose(W.grad.data, expected, rtol=1e-12)


def test_retain_graph_keeps_them_until_the_last_backward(no_gc):
    W, loss, refs, expected = _small_graph()
    loss.backward(retain_graph=True)
    assert all(r() is not None for r in refs.values())
    loss.backward()
    assert all(r() is None for r in refs.values())
    np.testing.assert_allclose(W.grad.data, 2 * expected, rtol=1e-12)


def test_backward_in_anomaly_mode_also_frees_the_graph(no_gc):
    with ag.detect_anomaly():
        W, loss, refs, expected = _small_graph()
        loss.backward()
    assert all(r() is None for r in refs.values())


def test_a_gru_step_frees_its_graph_and_leaves_no_cycles(no_gc):
    gru, head = nn.GRU(3, 5, rng=0), nn.Linear(5, 1, rng=1)
    xs = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    out, h = gru(xs)
    loss = (head(h[0]) ** 2).mean()
    refs = [weakref.ref(out), weakref.ref(out.data), weakref.ref(h)]
    del out, h
    loss.backward()
    assert all(r() is None for r in refs)
    assert gc.collect() == 0  # nothing was left for the cycle collector


# ---- 1,000 training steps of a GRU keep memory flat --------------------------------------------
def test_gru_training_memory_is_flat_over_1000_steps(no_gc):
    rng = np.random.default_rng(0)
    gru, head = nn.GRU(4, 16, rng=0), nn.Linear(16, 1, rng=1)
    opt = optim.Adam(list(gru.parameters()) + list(head.parameters()), lr=3e-3)
    xs = rng.standard_normal((4, 32, 4)).astype(np.float32)
    ys = np.tanh(xs.sum(axis=(0, 2)))[:, None].astype(np.float32)

    def step():
        _, h = gru(xs)
        loss = nn.mse_loss(head(h[0]), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    # Preallocated records: appending to lists would itself grow the traced memory.
    peaks, losses = np.zeros(1000, dtype=np.int64), np.zeros(1000)
    retained, cycles = [0, 0], [-1, -1]
    with traced():
        for _ in range(100):  # warm-up: optimizer state, the engine's and numpy's caches
            step()
        for i in range(1000):
            if i in (0, 900):
                # A full collection also empties the interpreter's free lists; it must find
                # no garbage cycles (the cycle collector has been off since the start).
                cycles[i // 900] = gc.collect()
                retained[i // 900] = _current()
            tracemalloc.reset_peak()
            losses[i] = step()
            peaks[i] = tracemalloc.get_traced_memory()[1]
    first, last = peaks[:100].max(), peaks[900:].max()
    print(f"\nGRU 1,000 steps: peak of steps 1-100 {first} B, of steps 901-1000 {last} B "
          f"({last / first - 1:+.2%}); retained at step 1 {retained[0]} B, at step 901 "
          f"{retained[1]} B")
    assert cycles == [0, 0]
    assert abs(last - first) <= 0.03 * first
    assert retained[1] - retained[0] <= 0.03 * first
    assert losses[900:].mean() < 0.5 * losses[:100].mean()  # it did train


# ---- a 100,000-step unroll ----------------------------------------------------------------------
def _recurrence(steps):
    """h_t = tanh(h_{t-1} W + x_t) with hidden size 4, ||W||_2 = 0.5 (float64)."""
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    W = ag.Tensor(0.5 * q, requires_grad=True)
    xs = [ag.Tensor(v) for v in rng.standard_normal((steps, 1, 4))]
    return W, xs, ag.Tensor(np.zeros((1, 4)))


def _unroll(W, xs, h, steps):
    for t in range(steps):
        h = ag.tanh(h @ W + xs[t])
    return h


def _graph_bytes(root, exclude):
    """What the graph behind `root` holds: each node's tensor, array and inputs tuple."""
    seen, stack, total = {id(root)}, [root], 0
    while stack:
        t = stack.pop()
        total += sys.getsizeof(t) + sys.getsizeof(t._data)
        if t._inputs:
            total += sys.getsizeof(t._inputs)
        for i in t._inputs or ():
            if id(i) not in seen and id(i) not in exclude:
                seen.add(id(i))
                stack.append(i)
    return total


def test_100k_step_unroll_costs_its_saved_activations_and_del_frees_it(no_gc):
    assert sys.getrecursionlimit() == DEFAULT_RECURSION_LIMIT
    W, xs, h0 = _recurrence(LONG)
    exclude = {id(x) for x in xs} | {id(W), id(h0)}
    per_step = (_graph_bytes(_unroll(W, xs, h0, 2000), exclude)
                - _graph_bytes(_unroll(W, xs, h0, 1000), exclude)) / 1000
    gc.collect()  # what the set-up left (numpy's first calls); from here on none is made
    with traced():
        base = _current()
        h = _unroll(W, xs, h0, LONG)
        held = _current() - base
        previous = weakref.ref(h._inputs[0]._inputs[0]._inputs[0])  # h_{T-1}
        with tight_recursion_limit():
            del h
        left = _current() - base
        assert previous() is None
        cycles = gc.collect()
        left_after_collect = _current() - base
    print(f"\n100k unroll: {held / LONG:.0f} B per step held ({held / 2**20:.1f} MiB), "
          f"{per_step:.0f} B per step in the graph's tensors, arrays and tuples; after del "
          f"{left} B ({left_after_collect} B after gc.collect)")
    assert 0.8 * per_step <= held / LONG <= 1.5 * per_step
    assert left < 0.01 * held  # the rest are the interpreter's free lists
    assert cycles == 0 and left_after_collect < 16 * 1024
    assert sys.getrecursionlimit() == DEFAULT_RECURSION_LIMIT


def _manual_grad_W(W, xs, steps, window=80):
    """d sum(h_T) / dW by hand, through the last `window` steps (the rest contribute
    < 0.5**window)."""
    hs = [np.zeros((1, 4))]
    for t in range(steps):
        hs.append(np.tanh(hs[-1] @ W + xs[t].data))
    grad, delta = np.zeros_like(W), np.ones((1, 4))
    for t in range(steps, steps - window, -1):
        pre = delta * (1 - hs[t] ** 2)
        grad += hs[t - 1].T @ pre
        delta = pre @ W.T
    return grad


def test_100k_step_unroll_runs_backward_without_recursion_and_is_freed(no_gc):
    W, xs, h0 = _recurrence(LONG)
    h = _unroll(W, xs, h0, LONG)
    refs, node = [], h
    for t in range(LONG, 0, -1):  # every 10,000th hidden state and its array
        if t % 10_000 == 0:
            refs += [weakref.ref(node), weakref.ref(node.data)]
        node = node._inputs[0]._inputs[0]._inputs[0] if t > 1 else None
    loss = h.sum()
    del h, node
    with tight_recursion_limit():
        loss.backward()
    assert sum(r() is not None for r in refs) == 0  # released while loss is alive
    assert sys.getrecursionlimit() == DEFAULT_RECURSION_LIMIT
    np.testing.assert_allclose(W.grad.data, _manual_grad_W(W.data, xs, LONG), rtol=1e-10)


# ---- under no_grad nothing is saved -------------------------------------------------------------
def test_no_grad_outputs_record_nothing():
    rng = np.random.default_rng(0)
    x = ag.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    W = ag.Tensor(rng.standard_normal((4, 4)), requires_grad=True)
    gru = nn.GRU(4, 2, rng=0, dtype=np.float64)
    with ag.detect_anomaly(check_forward=True), ag.no_grad():
        outs = [x @ W, x + 1.0, x * x, ag.tanh(x), ag.sigmoid(x), x[1:], ag.softmax(x),
                ag.stack([x, x]), x.sum(axis=0), ag.max(x), ag.maximum(x, 0.0),
                ag.log_softmax(x), gru(x[:, None])[0]]
    for out in outs:
        assert not out.requires_grad and out._op is None and out._inputs == ()
        assert out._saved is None and out._step is None and _origin(out) is None
    assert x.grad is None


def test_long_no_grad_unroll_does_not_grow(no_gc):
    W, xs, h0 = _recurrence(20_000)
    used = {}
    with traced():
        for steps in (2_000, 20_000):
            base = _current()
            with ag.no_grad():
                h = _unroll(W, xs, h0, steps)
            assert h._op is None and not h.requires_grad
            used[steps] = _current() - base
            del h
    print(f"\nno_grad unroll: {used[2_000]} B kept after 2,000 steps, {used[20_000]} B after "
          f"20,000")
    assert used[20_000] < 8 * 1024 and used[2_000] < 8 * 1024
