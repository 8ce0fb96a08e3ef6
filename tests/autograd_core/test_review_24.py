"""Review 24: hostile tests of commit 75fb168 (the eager sweep's immediate product for a
weight no other use reads, `shared` from _collect, the leaves' .grad written under one lock
after every leaf's hooks, reductions through the ufuncs' reduce, the root's ones, and
peak_memory's model of the immediate product). Values are held to numpy (bits, where the old
code computed the same product), to torch (float64, 1e-12) or to the slow path (an observer
turns the fast paths off)."""
import threading

import numpy as np
import pytest

import autograd_core as ag
import nn
from tests.autograd_core.test_stats_peak import measure

torch = pytest.importorskip("torch")


def _t(shape, dtype=np.float64, seed=0, rg=True):
    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return ag.Tensor(data, requires_grad=rg)


def _torch(t):
    return torch.tensor(np.asarray(t.data, dtype=np.float64), requires_grad=True)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


# ---- the immediate product: the same bits, its own memory ---------------------------------
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_single_use_weight_grad_has_the_products_bits(dtype):
    """A weight used once (matmul, addmm, linear) gets exactly left^T right, in its own array."""
    x, W = _t((5, 3), dtype, 1), _t((3, 4), dtype, 2)
    y = x @ W
    (y * 1).sum().backward()
    g = np.ones((5, 4), dtype)
    assert W.grad.data.tobytes() == x.data.T.dot(g).tobytes()
    assert not np.shares_memory(W.grad.data, x.data) and W.grad.data.flags.writeable

    c, a, B = _t((4,), dtype, 3), _t((5, 3), dtype, 4), _t((3, 4), dtype, 5)
    ag.addmm(c, a, B).sum().backward()
    assert B.grad.data.tobytes() == a.data.T.dot(np.ones((5, 4), dtype)).tobytes()
    assert c.grad.data.tobytes() == np.ones((5, 4), dtype).sum(axis=0).tobytes()

    xl, Wl, bl = _t((5, 3), dtype, 6), _t((4, 3), dtype, 7), _t((4,), dtype, 8)
    ag.linear(xl, Wl, bl).sum().backward()
    assert Wl.grad.data.tobytes() == np.ones((5, 4), dtype).T.dot(xl.data).tobytes()
    assert Wl.grad.dtype == dtype and W.grad.dtype == dtype


def test_mixed_dtype_single_use_weight_is_cast_to_its_dtype():
    """A float32 weight times a float64 input: the float64 product, cast once into .grad."""
    x, W = _t((5, 3), np.float64, 1), _t((3, 4), np.float32, 2)
    (x @ W).sum().backward()
    assert W.grad.dtype == np.float32
    want = np.matmul(x.data.T, np.ones((5, 4))).astype(np.float32)
    assert W.grad.data.tobytes() == want.tobytes()


def _weight_graphs():
    """(name, build(x, W) -> loss) for a weight read by more than one use, or through views."""
    return [
        ("x@W + W.sum()", lambda x, W: (ag.tanh(x @ W) ** 2).sum() + W.sum()),
        ("W@W", lambda x, W: ag.tanh(W @ W).sum()),
        ("W.T twice", lambda x, W: (ag.tanh(x @ W.T) + ag.exp(x @ W.T)).sum()),
        ("non-leaf weight", lambda x, W: ag.tanh(x @ ag.tanh(W * 2.0)).sum()),
        ("addmm c=W b=W", lambda x, W: ag.tanh(ag.addmm(W, x, W)).sum()),
        ("linear x=W w=W", lambda x, W: ag.tanh(ag.linear(W, W, W[0])).sum()),
    ]


def _torch_graph(name, x, W):
    import torch.nn.functional as F
    return {
        "x@W + W.sum()": lambda: (torch.tanh(x @ W) ** 2).sum() + W.sum(),
        "W@W": lambda: torch.tanh(W @ W).sum(),
        "W.T twice": lambda: (torch.tanh(x @ W.T) + torch.exp(x @ W.T)).sum(),
        "non-leaf weight": lambda: torch.tanh(x @ torch.tanh(W * 2.0)).sum(),
        "addmm c=W b=W": lambda: torch.tanh(torch.addmm(W, x, W)).sum(),
        "linear x=W w=W": lambda: torch.tanh(F.linear(W, W, W[0])).sum(),
    }[name]()


@pytest.mark.parametrize("name,build", _weight_graphs(), ids=[n for n, _ in _weight_graphs()])
def test_weight_shapes_of_use_match_torch(name, build):
    """Weights read twice, by one node twice, through views, or as a non-leaf: torch's grads."""
    x, W = _t((4, 4), seed=1), _t((4, 4), seed=2)
    build(x, W).backward()
    tx, tW = _torch(x), _torch(W)
    _torch_graph(name, tx, tW).backward()
    _close(W.grad.data, tW.grad.numpy())
    if x.grad is not None or tx.grad is not None:
        _close(x.grad.data, tx.grad.numpy())


def test_fast_path_equals_slow_path_bits_for_models():
    """MLP and recurrent models: the fast sweep's grads equal an observer's (no split) run."""
    def grads(observer):
        out = []
        m = nn.MLP([6, 8, 5], rng=0, dtype=np.float64)
        x = ag.Tensor(np.random.default_rng(1).normal(size=(7, 6)))
        y = np.random.default_rng(2).integers(0, 5, 7)
        nn.cross_entropy(m(x), y).backward(observer=observer)
        out += [p.grad.data for p in m.parameters()]
        for cell in ("rnn", "gru", "lstm"):
            model = nn.RecurrentClassifier(4, 6, 3, cell=cell, rng=0, dtype=np.float64)
            r = np.random.default_rng(0)
            model.loss(r.standard_normal((5, 2, 4)), r.integers(0, 3, (5, 2))).backward(
                observer=observer)
            out += [p.grad.data for p in model.parameters()]
        return out
    fast, slow = grads(None), grads(ag.SweepObserver())
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_observer_glancer_and_anomaly_give_the_fast_grads():
    """An observer, a glancer (contributions=False) and anomaly mode: the same W.grad."""
    class Glancer(ag.SweepObserver):
        contributions = False
        seen = 0

        def node(self, tensor, grad, sent):
            Glancer.seen += 1

    results = []
    for mode in ("fast", "observer", "glancer", "anomaly"):
        x, W = _t((5, 3), seed=1), _t((3, 4), seed=2)
        loss = ag.tanh(x @ W).sum()
        if mode == "anomaly":
            with ag.detect_anomaly():
                loss.backward()
        else:
            loss.backward(observer={"fast": None, "observer": ag.SweepObserver(),
                                    "glancer": Glancer()}[mode])
        results.append(W.grad.data.copy())
    assert Glancer.seen == 3
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-14, atol=0)


# ---- roots, grad(), retain_graph, create_graph -----------------------------------------
def test_weight_that_is_also_a_root_of_grad():
    """grad([x@W sum, W], [W, x]): W's own root gradient is added to its product."""
    x, W = _t((5, 3), seed=1), _t((3, 4), seed=2)
    y = (x @ W).sum()
    gW, gx = ag.grad([y, W], [W, x], grad_outputs=[np.array(1.0), np.full((3, 4), 2.0)])
    _close(gW.data, x.data.T @ np.ones((5, 4)) + 2.0)
    _close(gx.data, np.ones((5, 4)) @ W.data.T)
    # the weight and its use both roots
    z = x @ W
    (gW2,) = ag.grad([z, z.sum()], [W], grad_outputs=[np.full((5, 4), 3.0), np.array(1.0)])
    _close(gW2.data, x.data.T @ np.full((5, 4), 4.0))


def test_grad_allow_unused_and_returned_arrays_are_copies():
    """grad(): an unused weight gives None, a used one an array no later backward touches."""
    x, W, V = _t((5, 3), seed=1), _t((3, 4), seed=2), _t((3, 4), seed=3)
    y = (x @ W).sum()
    gW, gV = ag.grad(y, [W, V], allow_unused=True, retain_graph=True)
    assert gV is None and W.grad is None
    keep = gW.data.copy()
    y.backward()
    W.grad.data[...] = 0
    assert np.array_equal(gW.data, keep)


def test_retain_graph_second_backward_adds_without_aliasing():
    """Two backwards: .grad doubles; the first .grad's array is not written into."""
    x, W = _t((5, 3), seed=1), _t((3, 4), seed=2)
    y = ag.tanh(x @ W).sum()
    y.backward(retain_graph=True)
    first = W.grad.data
    first_copy = first.copy()
    y.backward()
    assert np.array_equal(first, first_copy)
    assert W.grad.data.tobytes() == (first_copy + first_copy).tobytes()


def test_double_backward_through_a_single_use_weight_matches_torch():
    """create_graph=True: d/dW of ||dL/dW||^2 and d/dx, as torch."""
    x, W = _t((5, 3), seed=1), _t((3, 4), seed=2)
    (gW,) = ag.grad(ag.tanh(x @ W).sum(), [W], create_graph=True)
    (gW ** 2).sum().backward()
    tx, tW = _torch(x), _torch(W)
    (tgW,) = torch.autograd.grad(torch.tanh(tx @ tW).sum(), [tW], create_graph=True)
    (tgW ** 2).sum().backward()
    _close(gW.data, tgW.detach().numpy())
    _close(W.grad.data, tW.grad.numpy())
    _close(x.grad.data, tx.grad.numpy())


# ---- hooks ---------------------------------------------------------------------------
def test_weight_hook_keeps_and_replaces_gradient():
    """A hook that keeps its gradient and one that returns a new one: .grad is its own copy."""
    x, W = _t((5, 3), seed=1), _t((3, 4), seed=2)
    kept = []
    W.register_hook(kept.append)
    W.register_hook(lambda g: g * 3)
    (x @ W).sum().backward()
    want = x.data.T @ np.ones((5, 4)) * 3
    _close(W.grad.data, want)
    kept[0].data[...] = 7.0
    _close(W.grad.data, want)
    assert not np.shares_memory(kept[0].data, W.grad.data)


def test_weight_hook_modifying_gradient_in_place():
    """A hook doubling its gradient in place: .grad is the doubled product."""
    x, W = _t((5, 3), seed=1), _t((3, 4), seed=2)

    def double(g):
        g.data[...] *= 2
    W.register_hook(double)
    (x @ W).sum().backward()
    _close(W.grad.data, 2 * x.data.T @ np.ones((5, 4)))


def test_nonleaf_weight_hook_and_retain_grad():
    """A non-leaf weight's hook and retain_grad see its product; P's grad goes through it."""
    x, P = _t((5, 3), seed=1), _t((3, 4), seed=2)
    W = P * 2.0
    W.retain_grad()
    seen = []
    W.register_hook(lambda g: seen.append(g.data.copy()))
    (x @ W).sum().backward()
    gW = x.data.T @ np.ones((5, 4))
    _close(seen[0], gW)
    _close(W.grad.data, gW)
    _close(P.grad.data, 2 * gW)


def test_hook_changing_a_factor_after_its_use_gives_the_forward_gradient():
    """A later node's hook adds to x in place after x@W's visit: W.grad reads the forward x."""
    x = ag.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    W = ag.Tensor(np.ones((3, 4)), requires_grad=True)
    x0 = x.data.copy()
    p = x + 0.0
    y = x @ W

    def bump(g):
        with ag.no_grad():
            x.add_(1.0)
    p.register_hook(bump)
    (p.sum() + y.sum()).backward()
    assert W.grad.data.tobytes() == x0.T.dot(np.ones((2, 4))).tobytes()


def _leaf_hook_graph():
    x = _t((5, 3), seed=1, rg=False)
    W1, W2 = _t((3, 4), seed=2), _t((4, 2), seed=3)
    return x, W1, W2, ((x @ W1) @ W2).sum()


def test_leaf_hook_sees_the_grad_of_a_leaf_finished_before():
    """W1's hook runs after W2 is finished (as in torch): it must see W2.grad."""
    x, W1, W2, loss = _leaf_hook_graph()
    seen, tseen = {}, {}

    def look(g):
        seen["W2"] = None if W2.grad is None else W2.grad.data.copy()

    def tlook(g):
        tseen["W2"] = tW2.grad is not None
    W1.register_hook(look)
    loss.backward()
    tx = torch.tensor(x.data)
    tW1, tW2 = _torch(W1), _torch(W2)
    tW1.register_hook(tlook)
    ((tx @ tW1) @ tW2).sum().backward()
    assert tseen["W2"] is True
    assert seen["W2"] is not None
    _close(seen["W2"], W2.grad.data)


def test_leaf_hook_clipping_the_grads_already_written():
    """The last leaf's hook scales the .grad of the leaves finished before it, in place."""
    x, W1, W2, loss = _leaf_hook_graph()

    def clip_others(g):
        W2.grad.data[...] *= 0.5
    W1.register_hook(clip_others)
    loss.backward()
    gW2 = (x.data @ W1.data).T @ np.ones((5, 2))
    _close(W2.grad.data, 0.5 * gW2)


def test_leaf_hook_raising_after_earlier_leaves_finished():
    """W1's hook raises; W2 (finished before it, as in torch) keeps its .grad."""
    x, W1, W2, loss = _leaf_hook_graph()

    def boom(g):
        raise RuntimeError("hook says no")
    W1.register_hook(boom)
    with pytest.raises(RuntimeError, match="hook says no"):
        loss.backward()
    tW1, tW2 = _torch(W1), _torch(W2)
    tW1.register_hook(boom)
    with pytest.raises(RuntimeError, match="hook says no"):
        ((torch.tensor(x.data) @ tW1) @ tW2).sum().backward()
    assert tW2.grad is not None
    assert W2.grad is not None
    _close(W2.grad.data, tW2.grad.numpy())


# ---- threads ----------------------------------------------------------------------------
def test_threads_sharing_a_single_use_parameter():
    """Eight threads x 10 backwards through one parameter: every contribution is summed."""
    W = _t((20, 20), seed=0)
    xs = [_t((30, 20), seed=s + 1, rg=False) for s in range(8)]

    def run(x):
        for _ in range(10):
            ag.tanh(x @ W).sum().backward()
    threads = [threading.Thread(target=run, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = sum(10 * (x.data.T @ (1 - np.tanh(x.data @ W.data) ** 2)) for x in xs)
    np.testing.assert_allclose(W.grad.data, want, rtol=1e-10, atol=1e-10)


# ---- edge values ------------------------------------------------------------------------
def test_empty_nan_and_inf_factors():
    """Empty batch, empty inner axis, NaN/inf in the input: as numpy's product."""
    x, W = _t((0, 3), seed=1), _t((3, 4), seed=2)
    (x @ W).sum().backward()
    assert W.grad.shape == (3, 4) and not W.grad.data.any() and x.grad.shape == (0, 3)
    x2, W2 = _t((5, 0), seed=1), _t((0, 4), seed=2)
    (x2 @ W2).sum().backward()
    assert W2.grad.shape == (0, 4) and x2.grad.shape == (5, 0) and not x2.grad.data.any()
    x3, W3 = _t((5, 3), seed=1), _t((3, 4), seed=2)
    x3.data[0, 0], x3.data[1, 1] = np.nan, np.inf
    with np.errstate(invalid="ignore"):
        (x3 @ W3).sum().backward()
        want = x3.data.T.dot(np.ones((5, 4)))
    np.testing.assert_array_equal(W3.grad.data, want)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (1, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_root_gradient_of_one_element_tensors(shape, dtype):
    """The implied root gradient (ones): right value and dtype; .grad owned, adds on repeat."""
    x = ag.Tensor(np.full(shape, 2.0, dtype), requires_grad=True)
    x.backward()
    assert x.grad.dtype == dtype and x.grad.shape == shape
    np.testing.assert_array_equal(x.grad.data, np.ones(shape, dtype))
    x.grad.data[...] = 5
    x.backward()
    np.testing.assert_array_equal(x.grad.data, np.full(shape, 6, dtype))
    y = ag.Tensor(np.full(shape, 2.0, dtype), requires_grad=True)
    (y * y).backward()
    np.testing.assert_array_equal(y.grad.data, np.full(shape, 4.0, dtype))
    (g,) = ag.grad(y * 3, [y])
    np.testing.assert_array_equal(g.data, np.full(shape, 3.0, dtype))


# ---- reductions through np.<ufunc>.reduce ------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int8, np.bool_, np.uint8, np.int32, np.float16])
def test_sum_to_and_sum_dtypes_match_ndarray_sum(dtype):
    """sum_to / sum of int8, bool, uint8..: ndarray.sum's dtype and values."""
    a = (np.arange(24).reshape(3, 2, 4) % 3).astype(dtype)
    x = ag.Tensor(a)
    for shape, axes in [((2, 4), (0,)), ((1, 4), (0, 1)), ((2, 1), (0, 2)), ((1, 1), (0, 1, 2)),
                        ((4,), (0, 1))]:
        r = ag.sum_to(x, shape)
        want = a.sum(axis=axes, keepdims=True).reshape(shape)
        assert r.dtype == want.dtype and np.array_equal(r.data, want), shape
    for axis in (None, 0, (0, 2), -1, ()):
        assert x.sum(axis=axis).dtype == a.sum(axis=axis).dtype
        np.testing.assert_array_equal(x.sum(axis=axis).data, a.sum(axis=axis))


@pytest.mark.parametrize("fn", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2), (-3, -1), ()])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_and_their_gradients_match_torch(fn, axis, keepdims):
    """sum/mean/max/min over axes, negative axes, empty tuples, keepdims: torch's values."""
    a = np.random.default_rng(5).normal(size=(3, 4, 5))
    x = ag.Tensor(a, requires_grad=True)
    y = getattr(x, fn)(axis=axis, keepdims=keepdims)
    want = getattr(np, {"max": "amax", "min": "amin"}.get(fn, fn))(a, axis=axis,
                                                                  keepdims=keepdims)
    np.testing.assert_allclose(y.data, want, rtol=1e-14)
    w = np.random.default_rng(6).normal(size=y.shape)
    (y * ag.Tensor(w)).sum().backward()
    tx = torch.tensor(a, requires_grad=True)
    dims = tuple(range(3)) if axis is None else axis
    if fn in ("sum", "mean"):
        ty = getattr(tx, fn)(dim=dims, keepdim=keepdims) if dims != () else tx * 1
    else:
        ty = getattr(torch, "amax" if fn == "max" else "amin")(tx, dim=dims, keepdim=keepdims) \
            if dims != () else tx * 1
    (ty * torch.tensor(w)).sum().backward()
    _close(x.grad.data, tx.grad.numpy())


def test_broadcast_gradients_fill_for_float16_float32_float64():
    """Scalar-like grads broadcast by fill: same values and dtype as np.full, per dtype."""
    for dtype in (np.float16, np.float32, np.float64):
        x = ag.Tensor(np.arange(3, dtype=dtype), requires_grad=True)
        b = ag.Tensor(np.array([[2.0]], dtype), requires_grad=True)
        c = ag.Tensor(np.array(3.0, dtype), requires_grad=True)
        z = ag.Tensor(np.ones((4, 1, 3), dtype), requires_grad=True)
        ((x * b + c) * z).sum().backward()
        assert x.grad.dtype == b.grad.dtype == c.grad.dtype == dtype
        np.testing.assert_array_equal(x.grad.data, np.full(3, 8.0, dtype))
        np.testing.assert_array_equal(c.grad.data, np.array(12.0, dtype))
        np.testing.assert_array_equal(z.grad.data, np.broadcast_to(x.data * 2 + 3, (4, 1, 3)))
        assert x.grad.data.flags.writeable and x.grad.data.flags.owndata


# ---- cross entropy: messages and values ----------------------------------------------------
@pytest.mark.parametrize("target,logits,kind,message", [
    ([0, 5], (2, 3), IndexError, "softmax_cross_entropy: target class out of range [0, 3)"),
    ([-1, 0], (2, 3), IndexError, "softmax_cross_entropy: target class out of range [0, 3)"),
    ([0, 0], (2, 0), IndexError, "softmax_cross_entropy: target class out of range [0, 0)"),
    (np.array([2 ** 63], np.uint64), (1, 3), IndexError,
     "softmax_cross_entropy: target class out of range [0, 3)"),
    ([0.0, 1.0], (2, 3), TypeError,
     "softmax_cross_entropy: target must hold integer classes, got dtype float64"),
    (np.array([], int), (0, 0), ValueError,
     "zero-size array to reduction operation maximum which has no identity"),
])
def test_cross_entropy_bad_targets_keep_their_messages(target, logits, kind, message):
    """Out-of-range, negative, uint64, float targets and an empty class axis: same errors."""
    L = ag.Tensor(np.zeros(logits), requires_grad=True)
    with pytest.raises(kind) as info:
        ag.softmax_cross_entropy(L, np.asarray(target))
    assert str(info.value) == message
    if kind is IndexError and logits[1]:
        with pytest.raises(IndexError, match=r"^cross_entropy: target class out of range"):
            nn.cross_entropy(L, np.asarray(target))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_values_and_grads_match_torch(dtype):
    """Large logits, 3-D logits, a 0-d loss and int8 targets: torch's loss and gradient."""
    r = np.random.default_rng(3)
    for shape, target in [((4, 5), np.array([0, 4, 2, 1], np.int8)),
                          ((2, 3, 5), np.array([[0, 4, 2], [1, 1, 1]])),
                          ((5,), np.array(3))]:
        a = (r.normal(size=shape) * 30).astype(dtype)
        L = ag.Tensor(a, requires_grad=True)
        loss = ag.softmax_cross_entropy(L, target)
        w = r.normal(size=loss.shape).astype(dtype)
        (loss * ag.Tensor(w)).sum().backward()
        tL = torch.tensor(a.astype(np.float64), requires_grad=True)
        tl = torch.nn.functional.cross_entropy(tL.reshape(-1, shape[-1]),
                                               torch.tensor(target.reshape(-1).astype(np.int64)),
                                               reduction="none").reshape(target.shape)
        (tl * torch.tensor(w.astype(np.float64))).sum().backward()
        tol = 1e-12 if dtype == np.float64 else 2e-4
        np.testing.assert_allclose(loss.data, tl.detach().numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(L.grad.data, tL.grad.numpy(), rtol=tol, atol=tol)


# ---- peak memory ---------------------------------------------------------------------------
@pytest.mark.parametrize("left, size, count, x_shape, scale", [
    (False, 128, 8, (256, 128), 12),  # x @ W: W the right operand, its product owned
    (True, 256, 16, (256, 4), 16),  # W @ h: W the left operand, its gradient copied to .grad
])
def test_peak_of_single_use_weights_matches_tracemalloc(left, size, count, x_shape, scale):
    """Layers whose weights have no other use: model vs measured peak."""
    r = np.random.default_rng(0)
    Ws = [ag.Tensor(r.normal(size=(size, size)) / scale, requires_grad=True)
          for _ in range(count)]
    x = ag.Tensor(r.normal(size=x_shape))

    def loss():
        h = x
        for W in Ws:
            h = ag.tanh(W @ h if left else h @ W)
        return h.sum()
    s, forward, rise = measure(loss)
    assert s.backward_peak_bytes == pytest.approx(forward + rise, rel=0.15)
