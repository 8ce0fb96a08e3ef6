"""The reverse sweep's fast paths against the plain rules and finite differences.

The fast paths: a weight used by matmul / addmm / linear gets its gradient deferred and computed
as one stacked product when the sweep reaches it; indexing adds into one buffer per input;
buffers the sweep allocated itself are accumulated in place and handed to `.grad` without a
copy. Each probe runs a program twice, with the fast paths on and off (`plain()`), and checks
values and dtypes, that no user-visible array is written behind the user's back, and that
nothing deferred outlives the backward.
"""
import contextlib
import gc
import random
import threading
import tracemalloc
import weakref

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import engine
from autograd_core.ops import indexing, linalg

FAST_OPS = (linalg.Linear, linalg.AddMM, linalg.MatMul, indexing.GetItem)


@contextlib.contextmanager
def plain():
    """The sweep without its batched paths: every rule runs as written."""
    saved = [op.fast_backward for op in FAST_OPS]
    for op in FAST_OPS:
        op.fast_backward = None
    try:
        yield
    finally:
        for op, b in zip(FAST_OPS, saved):
            op.fast_backward = b


def leaf(rng, shape, dtype=np.float64, scale=1.0):
    return ag.Tensor((rng.standard_normal(shape) * scale).astype(dtype), requires_grad=True)


def backward_grads(build, leaves):
    """.grad of `leaves` after build().backward(), as arrays (None where no gradient)."""
    for t in leaves:
        t.grad = None
    build().backward()
    out = [None if t.grad is None else t.grad.numpy().copy() for t in leaves]
    for t in leaves:
        t.grad = None
    return out


def assert_same_grads(fast, slow, rtol=1e-12, atol=1e-12):
    assert len(fast) == len(slow)
    for k, (a, b) in enumerate(zip(fast, slow)):
        assert (a is None) == (b is None), k
        if a is None:
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, (k, a.dtype, b.dtype, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"gradient {k}")


def fast_equals_plain(build, leaves, rtol=1e-12, atol=1e-12):
    fast = backward_grads(build, leaves)
    with plain():
        slow = backward_grads(build, leaves)
    assert_same_grads(fast, slow, rtol, atol)
    return fast


# ---- structural cases: the fast paths give what the plain rules give ---------------------------
def _cases():
    rng = np.random.default_rng(0)
    W, x, b = leaf(rng, (3, 3)), leaf(rng, (2, 3)), leaf(rng, (3,))
    v, x3 = leaf(rng, (3,)), leaf(rng, (2, 2, 3))
    s, row, col = leaf(rng, ()), leaf(rng, (1, 3)), leaf(rng, (2, 1))
    W32, x32 = leaf(rng, (3, 3), np.float32), leaf(rng, (2, 3), np.float32)
    ints = ag.Tensor(np.arange(6).reshape(2, 3))
    bools = ag.Tensor(np.array([[True, False, True], [False, True, True]]))
    return {
        "W @ W": (lambda: ((W @ W) ** 2).sum(), [W]),
        "addmm(W, W, W)": (lambda: (ag.addmm(W, W, W) ** 2).sum(), [W]),
        "linear(W, W, W)": (lambda: (ag.linear(W, W, W) ** 2).sum(), [W]),
        "weight also an input elsewhere": (
            lambda: (ag.linear(x @ W, W, b) ** 2).sum() + (ag.addmm(b, W, W.T) ** 2).sum(),
            [W, x, b]),
        "weight as transpose and slices (views of a parameter)": (
            lambda: ((x @ W.T) ** 2).sum() + (ag.linear(x, W[:2]) ** 3).sum()
            + ((x @ W[:, 1:]) ** 2).sum() + (ag.addmm(b[:2], x, W[:, ::-1][:, :2]) ** 2).sum(),
            [W, x, b]),
        "weight indexed (buffer) and deferred together": (
            lambda: ((x @ W) ** 2).sum() + (W[0] * W[1]).sum() + (W[[2, 2, 0]] ** 2).sum(),
            [W, x]),
        "rows of x through getitem into products": (
            lambda: sum(((x[i:i + 1] @ W) ** 2).sum() for i in range(2)) + (x[0] * x[1]).sum(),
            [W, x]),
        "1-D and batched operands beside 2-D uses (plain rule)": (
            lambda: ((v @ W) ** 2).sum() + ((W @ v) ** 2).sum() + ((x3 @ W) ** 2).sum()
            + ((x @ W) ** 2).sum(),
            [W, v, x3, x]),
        "0-d, (1, m), (n, 1) and (m,) biases": (
            lambda: (ag.linear(x, W, s) ** 2).sum() + (ag.linear(x, W, row) ** 2).sum()
            + (ag.addmm(col, x, W) ** 2).sum() + (ag.addmm(b, x, W) ** 2).sum() + s * s,
            [W, x, s, row, col, b]),
        "integer and boolean left operands": (
            lambda: ((ints @ W32) ** 2).sum() + (ag.linear(ints, W32.T) ** 2).sum()
            + (ag.addmm(0.5, bools, W32) ** 2).sum() + (ag.linear(bools, W32, 1.0) ** 2).sum(),
            [W32]),
        "float32 weight, float64 data and bias": (
            lambda: ((x @ W32) ** 2).sum() + (ag.linear(x32, W32, b) ** 2).sum()
            + (ag.addmm(b, x32, W32) ** 2).sum(),
            [W32, x, x32, b]),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_fast_paths_equal_the_plain_rules(name):
    build, leaves = CASES[name]
    float32 = any(t.dtype == np.float32 for t in leaves)
    grads = fast_equals_plain(build, leaves, rtol=1e-5 if float32 else 1e-12)
    for t, g in zip(leaves, grads):  # .grad has the leaf's dtype, whatever flowed
        assert g is not None and g.dtype == t.dtype


@pytest.mark.parametrize("name", [n for n in CASES if "integer" not in n and "float32" not in n])
def test_fast_paths_match_finite_differences(name):
    build, leaves = CASES[name]
    saved = [t.numpy().copy() for t in leaves]
    grads = backward_grads(build, leaves)
    h = 1e-6
    for t, g, x0 in zip(leaves, grads, saved):
        flat = t.numpy().reshape(-1)
        for j in range(flat.size):
            flat[j] = x0.reshape(-1)[j] + h
            up = build().item()
            flat[j] = x0.reshape(-1)[j] - h
            down = build().item()
            flat[j] = x0.reshape(-1)[j]
            np.testing.assert_allclose(g.reshape(-1)[j], (up - down) / (2 * h),
                                       rtol=1e-5, atol=1e-6)


def test_shared_weights_of_an_unrolled_rnn_against_gradcheck():
    rng = np.random.default_rng(1)
    xs = [ag.Tensor(rng.standard_normal((2, 3))) for _ in range(5)]

    def loss(w, u, b, h0):
        h, total = h0, 0
        for x in xs:
            h = ag.tanh(ag.linear(h, w, ag.addmm(b, x, u)))
            total = total + (h @ w.T).sum() + (h[0] * h[1]).sum()
        return total

    args = (leaf(rng, (4, 4), scale=0.5), leaf(rng, (3, 4)), leaf(rng, (4,)), leaf(rng, (2, 4)))
    assert ag.gradcheck(loss, args)
    fast_equals_plain(lambda: loss(*args), list(args))


# ---- random programs: fast and plain agree through .backward, retain_grad, hooks, ag.grad -----
N = 3


def _random_program(seed, values):
    r = random.Random(seed)
    leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in values]
    pool = list(leaves) + [ag.Tensor(np.eye(N)), ag.Tensor(np.arange(N * N).reshape(N, N) % 2 == 0)]
    retained = []
    for _ in range(r.randint(3, 12)):
        pick = lambda: r.choice(pool)  # noqa: E731
        k = r.randrange(11)
        if k == 0:
            t = ag.matmul(pick(), pick())
        elif k == 1:
            t = ag.addmm(pick(), pick(), pick())
        elif k == 2:
            t = ag.linear(pick(), pick(), r.choice([None, pick(), pick()[0], pick()[:1]]))
        elif k == 3:
            t = ag.transpose(pick())
        elif k == 4:
            t = pick()[r.choice([slice(None, None, -1), [2, 0, 0], (slice(None), [1, 1, 2])])]
        elif k == 5:
            t = pick() + pick()
        elif k == 6:
            t = ag.tanh(pick()) * pick()
        elif k == 7:
            t = ag.astype(pick(), r.choice([np.float32, np.float64]))
        elif k == 8:
            t = pick()[r.randrange(N)][None, :] * pick()
        elif k == 9:
            t = ag.linear(pick(), pick().T, pick()[:, :1].T)
        else:
            t = pick() * 0.5 + ag.matmul(pick()[r.randrange(N)], pick())[None, :]
        if t.requires_grad and r.random() < 0.25:
            t.retain_grad()
            retained.append(t)
        if t.requires_grad and r.random() < 0.2:
            c = r.choice([2.0, -1.0, 0.5])
            t.register_hook(lambda g, c=c: g * c)
        pool.append(t)
    outs = [t for t in pool[len(leaves) + 2:] if t.requires_grad]
    proj = np.random.default_rng(seed)
    loss = sum(((t * proj.standard_normal(t.shape)).sum() for t in outs), ag.Tensor(0.0))
    return loss, leaves, retained, outs


def _run_random(seed, values, how):
    loss, leaves, retained, outs = _random_program(seed, values)
    if how == "backward":
        loss.backward()
        return [None if t.grad is None else t.grad.numpy().copy() for t in leaves + retained]
    grads = ag.grad(loss, leaves + outs[:2], allow_unused=True)
    return [None if g is None else g.numpy().copy() for g in grads]


@pytest.mark.parametrize("how", ["backward", "grad"])
def test_random_programs_fast_equals_plain(how):
    for seed in range(150):
        rng = np.random.default_rng(seed)
        values = [rng.standard_normal((N, N)).astype(rng.choice([np.float32, np.float64]))
                  for _ in range(3)]
        fast = _run_random(seed, values, how)
        with plain():
            slow = _run_random(seed, values, how)
        assert_same_grads(fast, slow, rtol=1e-4, atol=1e-4)


# ---- nothing user-visible is written or shared behind the user's back -------------------------
def _arrays_share(a, b):
    return np.shares_memory(np.asarray(a), np.asarray(b))


def test_grads_own_their_memory_and_user_arrays_are_untouched():
    rng = np.random.default_rng(2)
    W, x, c, b = leaf(rng, (3, 3)), leaf(rng, (2, 3)), leaf(rng, (2, 3)), leaf(rng, (3,))
    G = rng.standard_normal((2, 3))
    data_before = [t.numpy().copy() for t in (W, x, c, b)]
    G_before = G.copy()
    hooked = []

    def keep(g):
        hooked.append((g, g.numpy().copy()))

    h = ag.addmm(c, x, W)  # c's gradient is the root gradient itself
    h.register_hook(keep)
    y = ag.linear(h + h, W, b) + ag.linear(x, W.T, c)
    y.register_hook(keep)
    y.backward(gradient=G)
    np.testing.assert_array_equal(G, G_before)
    for t, before in zip((W, x, c, b), data_before):
        np.testing.assert_array_equal(t.numpy(), before)
    grads = [t.grad.numpy() for t in (W, x, c, b)]
    for i, g in enumerate(grads):
        assert not _arrays_share(g, G)
        for t in (W, x, c, b):
            assert not _arrays_share(g, t.numpy())
        for other in grads[i + 1:]:
            assert not _arrays_share(g, other)
        for tensor, _ in hooked:
            assert not _arrays_share(g, tensor.numpy())
    for tensor, copy in hooked:  # what hooks were given was not written afterwards
        np.testing.assert_array_equal(tensor.numpy(), copy)
    # a second backward accumulates into .grad without touching the hooks' tensors
    first = W.grad.numpy().copy()
    ag.linear(x, W).sum().backward()
    np.testing.assert_allclose(W.grad.numpy(), first + np.tile(x.numpy().sum(0), (3, 1)))
    for tensor, copy in hooked:
        np.testing.assert_array_equal(tensor.numpy(), copy)


def test_retain_grad_and_hooks_returning_new_gradients_on_weights_and_products():
    rng = np.random.default_rng(3)
    W, x, b = leaf(rng, (3, 3)), leaf(rng, (2, 3)), leaf(rng, (3,))
    retained = []

    def build():
        retained.clear()
        Wt = W.T
        Wt.register_hook(lambda g: g + 1.0)
        h = ag.linear(x, W, b)
        h.register_hook(lambda g: g * 2.0)
        k = ag.addmm(b, h, W)
        k.register_hook(lambda g: ag.Tensor(g.numpy()[::-1].copy()))
        m = k @ Wt
        for t in (h, k, m, Wt):
            t.retain_grad()
            retained.append(t)
        return (m * m).sum() + (h @ W).sum()

    handle = W.register_hook(lambda g: g * 3.0)
    try:
        fast = backward_grads(build, [W, x, b]) + [t.grad.numpy().copy() for t in retained]
        with plain():
            slow = backward_grads(build, [W, x, b]) + [t.grad.numpy().copy() for t in retained]
    finally:
        handle.remove()
    assert_same_grads(fast, slow)


def test_grad_of_intermediate_weight_views_and_leaves():
    rng = np.random.default_rng(4)
    W, x, b = leaf(rng, (3, 3)), leaf(rng, (2, 3)), leaf(rng, (3,))

    def grads():
        Wt = W.T
        h = x @ Wt
        loss = (ag.linear(h, Wt) ** 2).sum() + (ag.addmm(b, h, Wt) ** 2).sum()
        out = ag.grad(loss, [Wt, h, W, b, Wt])
        assert all(g.dtype == np.float64 for g in out)
        return [g.numpy() for g in out]

    fast = grads()
    with plain():
        slow = grads()
    assert_same_grads(fast, slow)
    np.testing.assert_allclose(fast[0], fast[2].T, rtol=1e-12)
    assert W.grad is None and b.grad is None  # ag.grad writes no .grad
    assert not _arrays_share(fast[0], fast[4])  # each returned gradient is its own array


def test_retain_graph_second_backward_and_create_graph():
    rng = np.random.default_rng(5)
    W, x, b = leaf(rng, (3, 3)), leaf(rng, (2, 3)), leaf(rng, (3,))

    def twice():
        for t in (W, x, b):
            t.grad = None
        loss = (ag.linear(ag.linear(x, W, b), W) ** 2).sum() + (x @ W).sum()
        loss.backward(retain_graph=True)
        first = W.grad.numpy().copy()
        loss.backward()
        return [first] + [t.grad.numpy().copy() for t in (W, x, b)]

    fast = twice()
    with plain():
        slow = twice()
    assert_same_grads(fast, slow)
    np.testing.assert_allclose(fast[1], 2 * fast[0], rtol=1e-12)
    assert ag.gradgradcheck(lambda x, W, b: ag.tanh(ag.linear(x, W, b)) * ag.addmm(b, x, W),
                            (x, W, b))

    def double():
        for t in (W, x, b):
            t.grad = None
        (gW,) = ag.grad((ag.linear(x, W, b) ** 2).sum(), [W], create_graph=True)
        (gW * gW).sum().backward()
        return [t.grad.numpy().copy() for t in (W, x, b)]

    fast = double()
    with plain():
        slow = double()
    assert_same_grads(fast, slow)


def test_anomaly_mode_gives_the_fast_gradients_of_views_and_buffers():
    rng = np.random.default_rng(6)
    W, x = leaf(rng, (3, 3)), leaf(rng, (2, 3))

    def build():
        return ((x @ W[:, :2]) ** 2).sum() + (ag.linear(x, W.T) ** 2).sum() + (W[0] * x[1]).sum()

    fast = backward_grads(build, [W, x])
    with ag.detect_anomaly():
        watched = backward_grads(build, [W, x])
    assert_same_grads(fast, watched)


# ---- dtypes -------------------------------------------------------------------------------------
def test_dtypes_of_mixed_graphs_follow_the_leaves():
    rng = np.random.default_rng(7)
    W32, x64 = leaf(rng, (4, 3), np.float32), leaf(rng, (2, 3))
    b64 = leaf(rng, (4,))
    y = ag.linear(x64, W32, b64)
    assert y.dtype == np.float64
    (y.sum() + (x64.astype(np.float32) @ W32.T).sum()).backward()
    assert (W32.grad.dtype, x64.grad.dtype, b64.grad.dtype) == (np.float32, np.float64,
                                                                np.float64)
    expected = np.tile(2 * x64.numpy().sum(0), (4, 1))
    np.testing.assert_allclose(W32.grad.numpy(), expected, rtol=1e-5)
    # the root gradient given as a float64 Tensor for a float32 output: .grad stays float32
    W32.grad = None
    x32 = ag.Tensor(rng.standard_normal((2, 3)).astype(np.float32))
    out = ag.linear(x32, W32)
    out.backward(gradient=ag.Tensor(np.ones((2, 4))))
    assert W32.grad.dtype == np.float32
    np.testing.assert_allclose(W32.grad.numpy(), np.tile(x32.numpy().sum(0), (4, 1)), rtol=1e-6)


# ---- memory: nothing deferred outlives the backward ---------------------------------------------
def test_deferred_factors_are_released_by_backward():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        rng = np.random.default_rng(8)
        W = ag.Tensor(rng.standard_normal((64, 64)) * 0.1, requires_grad=True)
        U = ag.Tensor(rng.standard_normal((64, 64)) * 0.1, requires_grad=True)
        xs = [rng.standard_normal((256, 64)) for _ in range(6)]
        refs = [weakref.ref(x) for x in xs]
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            h, total = ag.Tensor(xs[0]), 0
            for x in xs:
                h = ag.tanh(ag.linear(h, W, ag.addmm(0.0, ag.Tensor(x), U)))
                total = total + (h @ W).sum()
            del x, h
            xs.clear()
            total.backward()
            del total
            left = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert all(r() is None for r in refs)  # the factors (inputs of the products) are gone
        grads = W.grad.numpy().nbytes + U.grad.numpy().nbytes
        assert left < grads + 16 * 1024, (left, grads)  # one step's activations: 128 KiB
    finally:
        if was_enabled:
            gc.enable()


# ---- threads ------------------------------------------------------------------------------------
def _rnn_loss(W, x, steps=15):
    h = ag.Tensor(x)
    for _ in range(steps):
        h = ag.tanh(ag.linear(h, W))
    return (h * h).sum()


def test_concurrent_grads_of_a_shared_weight_equal_their_single_thread_values():
    rng = np.random.default_rng(9)
    W = leaf(rng, (6, 6), scale=0.4)
    xs = [rng.standard_normal((3, 6)) for _ in range(2)]
    alone = [ag.grad(_rnn_loss(W, x), [W])[0].numpy() for x in xs]
    results, errors = [[], []], []
    barrier = threading.Barrier(2, timeout=20)

    def work(k):
        try:
            for _ in range(10):
                loss = _rnn_loss(W, xs[k])
                barrier.wait()
                results[k].append(ag.grad(loss, [W])[0].numpy())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(2):
        assert len(results[k]) == 10
        for g in results[k]:
            np.testing.assert_array_equal(g, alone[k])
    assert W.grad is None


def test_concurrent_backwards_into_a_shared_leaf_lose_no_gradient(monkeypatch):
    # Deterministic: hold each thread between its `.grad is None` check and its assignment
    # until the other thread gets there too (a lock around leaf accumulation makes the first
    # thread's wait time out and the second then accumulates).
    rng = np.random.default_rng(10)
    W = leaf(rng, (6, 6), scale=0.4)
    xs = [rng.standard_normal((3, 6)) for _ in range(2)]
    alone = [ag.grad(_rnn_loss(W, x), [W])[0].numpy() for x in xs]
    losses = [_rnn_loss(W, x) for x in xs]
    meet = threading.Barrier(2)
    real_make = engine._make

    def slow_make(g):
        if getattr(g, "shape", None) == W.shape:
            try:
                meet.wait(timeout=2)
            except threading.BrokenBarrierError:
                pass
        return real_make(g)

    monkeypatch.setattr(engine, "_make", slow_make)
    threads = [threading.Thread(target=loss.backward) for loss in losses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(W.grad.numpy(), alone[0] + alone[1], rtol=1e-12)


# ---- bugs found in review -----------------------------------------------------------------------
def test_leaf_hooks_that_update_parameters_do_not_change_other_gradients():
    rng = np.random.default_rng(11)
    A0, B0 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))

    def run():
        W1 = ag.Tensor(A0.copy(), requires_grad=True)
        W2 = ag.Tensor(B0.copy(), requires_grad=True)
        def sgd_step(p):  # SGD as soon as a parameter's gradient is known
            def hook(g):
                p.sub_(0.1 * g.numpy())  # in place; grad mode is off during the sweep
            return hook

        for p in (W1, W2):
            p.register_hook(sgd_step(p))
        # each is the deferred weight of one product and the other operand of the other, so
        # whichever leaf the sweep finishes first changes the factor of the second
        loss = ((W1 @ W2) ** 2).sum() + (ag.linear(W2, W1) ** 2).sum()
        loss.backward()
        return W1.grad.numpy(), W2.grad.numpy()

    with plain():
        slow = run()
    y, z = A0 @ B0, B0 @ A0.T
    np.testing.assert_allclose(slow[0], 2 * y @ B0.T + 2 * z.T @ B0, rtol=1e-12)
    np.testing.assert_allclose(slow[1], 2 * A0.T @ y + 2 * z @ A0, rtol=1e-12)
    fast = run()
    assert_same_grads(list(fast), list(slow))


def test_cross_entropy_of_time_major_logits_seen_batch_first():
    rng = np.random.default_rng(12)
    T, B, C = 4, 3, 5
    z = leaf(rng, (T, B, C))
    target = rng.integers(0, C, (B, T))
    w = rng.standard_normal((T, B))

    def loss(z):
        per = ag.softmax_cross_entropy(ag.transpose(z, (1, 0, 2)), target)  # (B, T)
        return (ag.transpose(per) * w).sum()  # weighted per time step

    loss(z).backward()
    x = z.numpy()
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, target.T[..., None], 1.0, axis=-1)
    np.testing.assert_allclose(z.grad.numpy(), (p - onehot) * w[..., None], rtol=1e-10,
                               atol=1e-12)


def test_a_subclass_with_its_own_rule_does_not_inherit_the_fast_path():
    from autograd_core.function import record
    from autograd_core.ops.linalg import MatMul

    class DoubledMatMul(MatMul):  # the same forward, a rule that doubles the gradient
        name = "test_doubled_matmul"

        @staticmethod
        def backward(g, out, xp):
            return tuple(2 * gi for gi in MatMul.backward(g, out, xp))

    try:
        assert DoubledMatMul.backward_split is None and DoubledMatMul.fast_backward is None
        a = ag.Tensor(np.eye(2), requires_grad=True)
        w = ag.Tensor(np.arange(4.0).reshape(2, 2), requires_grad=True)
        record(DoubledMatMul, a.numpy() @ w.numpy(), (a, w)).sum().backward()
        np.testing.assert_allclose(w.grad.numpy(), 2 * a.numpy().T @ np.ones((2, 2)))
    finally:
        ag.ops_registry.pop("test_doubled_matmul")
