"""Review 20g: hostile probes of the eager sweep's generated steps (sweep_steps.py, engine._sweep:
an op whose rule is text runs as one generated step), Op.__init_subclass__ and inline_text
after a rule is replaced, and replay's leaf gradients taken without a copy
(replay_step._replayed_backward) and its re-recording on a boolean mask's count.

Every eager probe runs twice, with the steps on and off (`rule_path()`: every op's rule runs as
written through the generic loop), and requires the same bits; leaves' .grad must not share
memory; replayed calls are compared with eager calls (batch=False: bit for bit)."""
import contextlib
import threading

import numpy as np
import pytest

import autograd_core as ag

from tests.autograd_core.replay_checks import assert_bits, run

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.replayer.ReplayWarning")

Tanh = ag.ops_registry["tanh"]


@contextlib.contextmanager
def rule_path():
    saved = {name: op.sweep_step for name, op in ag.ops_registry.items()}
    for op in ag.ops_registry.values():
        op.sweep_step = None
    try:
        yield
    finally:
        for name, op in ag.ops_registry.items():
            op.sweep_step = saved[name]


def leaves(seed, *shapes, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [ag.Tensor((rng.standard_normal(s) + 0.1).astype(dtype), requires_grad=True)
            for s in shapes]


def grads_of(fn, seed, shapes, dtype=np.float64, times=1):
    xs = leaves(seed, *shapes, dtype=dtype)
    for _ in range(times):
        out = fn(*xs)
        out.backward(np.ones(out.shape, out.dtype))
    gs = [x.grad for x in xs]
    arrays = [g.numpy() for g in gs if g is not None]
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert not np.shares_memory(arrays[i], arrays[j]), f"grads {i} and {j} share memory"
    return [None if g is None else g.numpy().copy() for g in gs]


def same_bits(a, b):
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b)):
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, k
            assert x.tobytes() == y.tobytes(), f"gradient {k}: {x} != {y}"


def both_paths(fn, shapes, dtype=np.float64, times=1, seed=0):
    got = grads_of(fn, seed, shapes, dtype, times)
    with rule_path():
        want = grads_of(fn, seed, shapes, dtype, times)
    same_bits(got, want)
    return got


PROGRAMS = {
    "x*x": (lambda x: x * x, [(5,)]),
    "x+x": (lambda x: x + x, [(5,)]),
    "x-x": (lambda x: x - x, [(5,)]),
    "x*x*x+x": (lambda x: x * x * x + x, [(5,)]),
    "tanh(x)*x-x": (lambda x: ag.tanh(x) * x - x, [(4,)]),
    "sigmoid exp log relu": (lambda x: ag.sigmoid(x) * ag.exp(x) + ag.log(x * x + 1.0)
                             - ag.relu(x), [(6,)]),
    "scalars": (lambda x: 2.0 - (x * 3.0 + 1.0) * -x, [(3,)]),
    "(3,1)*(1,4)": (lambda a, b: a * b + a - b, [(3, 1), (1, 4)]),
    "bias+(3,4)": (lambda b, x: ag.tanh(b + x) * b, [(4,), (3, 4)]),
    "0-d*(3,)": (lambda s, x: s * x + s - x * s, [(), (3,)]),
    "0-d only": (lambda s, t: s * t * s + ag.tanh(t), [(), ()]),
    "shared leaf, several nodes": (lambda a, b: (a * b) + (a + b) * (a - b) + ag.exp(a) * a,
                                   [(3,), (3,)]),
    "broadcast both ways": (lambda a, b: (a + b) * (a - b) * a, [(2, 1, 3), (4, 1)]),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("times", [1, 2])
def test_step_bits_equal_rule_path(name, dtype, times):
    fn, shapes = PROGRAMS[name]
    both_paths(fn, shapes, dtype, times)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_step_gradcheck(name):
    fn, shapes = PROGRAMS[name]
    xs = leaves(3, *shapes)
    assert ag.gradcheck(lambda *a: fn(*a).sum(), xs)


def test_mixed_dtypes_and_int_inputs():
    def f(a32, b64):
        i = ag.Tensor(np.array([1, 2, 3]))  # int, no grad
        return (a32 * b64) * i + a32 * i + ag.tanh(a32) * b64
    got = both_paths(f, [(3,), (3,)])
    xs = leaves(0, (3,), (3,))
    a = ag.Tensor(xs[0].numpy().astype(np.float32), requires_grad=True)
    f(a, xs[1]).sum().backward()
    assert a.grad.dtype == np.float32
    with rule_path():
        a2 = ag.Tensor(xs[0].numpy().astype(np.float32), requires_grad=True)
        f(a2, xs[1]).sum().backward()
    assert a.grad.numpy().tobytes() == a2.grad.numpy().tobytes()
    assert got[0].dtype == np.float64


def test_grad_modified_in_place_between_backwards():
    def go():
        x, y = leaves(1, (3,), (3,))
        (x * y + x + y).sum().backward()
        x.grad.numpy()[...] *= 10.0  # the user scales .grad in place
        y.grad.numpy()[0] = 0.0
        (x * x - y).sum().backward()
        return [x.grad.numpy().copy(), y.grad.numpy().copy()], x, y
    got, x, y = go()
    with rule_path():
        want, _, _ = go()
    same_bits(got, want)
    want_x = 10 * (y.numpy() + 1) + 2 * x.numpy()
    np.testing.assert_allclose(got[0], want_x)


def test_retain_graph_twice_and_third():
    def go():
        x, y = leaves(2, (4,), (4,))
        out = (ag.tanh(x * y) + x * x).sum()
        out.backward(retain_graph=True)
        out.backward(retain_graph=True)
        out.backward()
        return [x.grad.numpy().copy(), y.grad.numpy().copy()]
    got = go()
    with rule_path():
        want = go()
    same_bits(got, want)
    x, y = leaves(2, (4,), (4,))
    (ag.tanh(x * y) + x * x).sum().backward()
    np.testing.assert_allclose(got[0], 3 * x.grad.numpy(), rtol=1e-14)


@pytest.mark.parametrize("allow_unused", [False, True])
def test_grad_want_path(allow_unused):
    def go():
        x, y, z = leaves(4, (3,), (3,), (3,))
        u = ag.tanh(x) * y
        v = u + u * x
        wanted = (x, u, z) if allow_unused else (x, u)
        gs = ag.grad(v.sum(), wanted, allow_unused=allow_unused)
        assert x.grad is None and y.grad is None
        if allow_unused:
            assert gs[2] is None
        return [g.numpy().copy() for g in gs if g is not None]
    got = go()
    with rule_path():
        want = go()
    same_bits(got, want)
    if not allow_unused:
        x, y, z = leaves(4, (3,), (3,), (3,))
        with pytest.raises(RuntimeError, match="not used"):
            ag.grad((x * y).sum(), (x, z))


def test_hooks_intermediate_and_leaf():
    def go():
        x, y = leaves(5, (3,), (3,))
        seen = []
        u = x * y
        u.register_hook(lambda g: g * 2.0)  # a new array
        w = u + x
        w.retain_grad()

        def in_place(g):
            seen.append(g.numpy().copy())
            g.numpy()[...] += 1.0  # modifies its input and returns nothing
        w.register_hook(in_place)
        x.register_hook(lambda g: g * 3.0)
        (w * w + u).sum().backward()
        return [x.grad.numpy().copy(), y.grad.numpy().copy(), w.grad.numpy().copy(), seen[0]]
    got = go()
    with rule_path():
        want = go()
    same_bits(got, want)


def test_patched_rule_is_followed_then_restored(monkeypatch):
    x, = leaves(6, (4,))
    ag.tanh(x).sum().backward()
    plain = x.grad.numpy().copy()
    orig = Tanh.__dict__["backward"]
    monkeypatch.setattr(Tanh, "backward", staticmethod(lambda g, out, xp: (g * 7.0,)))
    x.grad = None
    ag.tanh(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(4, 7.0))
    monkeypatch.setattr(Tanh, "backward", orig)
    x.grad = None
    ag.tanh(x).sum().backward()
    assert x.grad.numpy().tobytes() == plain.tobytes()


def test_subclass_overriding_backward():
    class Tanh3(Tanh):
        name = None

        @staticmethod
        def backward(g, out, xp):
            return (g * 3.0,)
    x, = leaves(7, (3,))
    ag.tanh(x).sum().backward()  # the parent's step is made first
    x.grad = None
    ag.record(Tanh3, np.tanh(x.numpy()), (x,)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(3, 3.0))


def test_threads_separate_graphs():
    def work(seed):
        x, y = leaves(seed, (50,), (50,))
        for _ in range(20):
            (ag.tanh(x * y) + x * x - ag.sigmoid(y) * x).sum().backward()
        return [x.grad.numpy().copy(), y.grad.numpy().copy()]
    want = {s: work(s) for s in range(4)}
    results, errors = {}, []

    def target(s):
        try:
            results[s] = work(s)
        except BaseException as e:  # pragma: no cover
            errors.append(e)
    ts = [threading.Thread(target=target, args=(s,)) for s in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for s in range(4):
        same_bits(results[s], want[s])


@pytest.mark.parametrize("exc", [KeyboardInterrupt, ValueError])
def test_exception_from_hook_mid_sweep(exc):
    x, y = leaves(8, (3,), (3,))
    u = ag.tanh(x * y)
    fired = []

    def hook(g):
        if not fired:
            fired.append(1)
            raise exc("stop")
    u.register_hook(hook)
    out = (u * x + y).sum()
    with pytest.raises(exc):
        out.backward(retain_graph=True)
    assert x.grad is None and y.grad is None
    out.backward()
    x2, y2 = leaves(8, (3,), (3,))
    (ag.tanh(x2 * y2) * x2 + y2).sum().backward()
    same_bits([x.grad.numpy(), y.grad.numpy()], [x2.grad.numpy(), y2.grad.numpy()])


def test_steps_really_run():
    x, = leaves(9, (3,))
    ag.tanh(x).sum().backward()
    assert Tanh.sweep_step is not None and Tanh.sweep_step[1] is not None
    assert Tanh.sweep_step[0] is Tanh.backward


# ---- problem found (fixed: an inherited text keeps the function it was declared for) ------
def test_subclass_made_while_parent_rule_patched(monkeypatch):
    monkeypatch.setattr(Tanh, "backward", staticmethod(lambda g, out, xp: (g * 7.0,)))

    class MyTanh(Tanh):
        name = None
    x, = leaves(10, (2,))
    ag.record(MyTanh, np.tanh(x.numpy()), (x,)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full(2, 7.0))  # the rule path's result


# ---- replay ----------------------------------------------------------------------------------
def replay_vs_eager(step, fn, args_of, n_leaves, calls=6, pre=None, after=None, bits=True):
    """Each call of `step` against `fn` on the same leaves (the first n_leaves args)."""
    olds = []
    for k in range(calls):
        args = args_of(k)
        xs = args[:n_leaves]
        results = []
        for f in (step, fn):
            for x in xs:
                x.grad = None if pre is None else ag.Tensor(pre(x))
            out = f(*args)
            value = out.numpy().copy()
            out.backward()
            arrays = [x.grad.numpy() for x in xs]
            for i in range(len(arrays)):
                for j in range(i + 1, len(arrays)):
                    assert not np.shares_memory(arrays[i], arrays[j])
            results.append((value, [a.copy() for a in arrays]))
            if after is not None:
                after(xs)
            if f is step:
                olds += [(a, a.copy()) for a in arrays]
        if bits:
            assert_bits(*results, what=f"call {k}")
        else:
            for a, b in zip(results[0][1], results[1][1]):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        for a, copy in olds:  # an earlier call's .grad is no buffer a later call writes
            assert a.tobytes() == copy.tobytes()


REPLAYED = {
    "x+y": (lambda x, y: (x + y).sum(), [(3,), (3,)]),
    "(x+y)^2": (lambda x, y: ((x + y) * (x + y)).sum(), [(3,), (3,)]),
    "broadcast x+y": (lambda x, y: (x + y).sum(), [(3, 1), (4,)]),
    "once vs many": (lambda x, y: (x * y).sum() + (y * y * y).sum() + ag.tanh(y).sum(),
                     [(3,), (3,)]),
    "matmul": (lambda x, w: ag.tanh(x @ w).sum() + (x * x).sum(), [(3, 4), (4, 2)]),
}


@pytest.mark.parametrize("name", list(REPLAYED))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pre", [None, "ones"])
def test_replayed_leaf_gradients(name, dtype, pre):
    fn, shapes = REPLAYED[name]
    xs = leaves(11, *shapes, dtype=dtype)
    replay_vs_eager(ag.replay(fn, batch=False), fn, lambda k: xs, len(xs),
                    pre=None if pre is None else (lambda x: np.ones(x.shape, x.dtype)))
    assert xs[0].grad.dtype == dtype


def test_replayed_float32_leaf_float64_gradient_and_outer_uses():
    a, = leaves(12, (3,), dtype=np.float32)
    w, b = leaves(13, (3,), (3,))
    f = lambda a, w, b: (a * w + a + b).sum()
    r = ag.replay(f, batch=False)
    outer = lambda g: lambda a, w, b: (a * 2.0).sum() + g(a, w, b) + ((a + b) * b).sum()
    replay_vs_eager(outer(r), outer(f), lambda k: (a, w, b), 3)
    assert a.grad.dtype == np.float32


def test_replayed_grad_modified_in_place_afterwards():
    x, y = leaves(14, (3,), (3,))
    fn = lambda x, y: ((x + y) * (x + y)).sum()

    def scale(xs):
        xs[0].grad.numpy()[...] += 100.0
    replay_vs_eager(ag.replay(fn, batch=False), fn, lambda k: (x, y), 2, after=scale)


def test_replayed_same_leaf_twice_and_eager_intermediate():
    x, y = leaves(15, (3,), (3,))
    f = lambda a, b: (a * b + b).sum()
    r = ag.replay(f, batch=False)
    replay_vs_eager(lambda a: r(a, a), lambda a: f(a, a), lambda k: (x,), 1)
    r3 = ag.replay(lambda a, b: (a * b).sum(), batch=False)
    replay_vs_eager(lambda a, b: r3(ag.tanh(a), b), lambda a, b: (ag.tanh(a) * b).sum(),
                    lambda k: (x, y), 2)


MASKS = [np.array(m, bool) for m in ([1, 0, 1, 0, 1, 0], [1, 1, 1, 0, 1, 0],
                                     [0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 1])]
SEQUENCE = [0, 0, 0, 1, 1, 1, 2, 2, 0, 0, 0, 3, 0, 2]  # changes, stays, changes back


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("form", ["direct", "tuple", "view"])
def test_replayed_mask_count_changes(batch, form):
    x, = leaves(16, (6,))
    if form == "direct":
        fn = lambda a, m: (ag.tanh(a[m]) * a[m]).sum() + (a * a).sum()
        args = lambda k: (x, MASKS[SEQUENCE[k]])
    elif form == "tuple":
        fn = lambda a, ms: (a[ms[0]] * 2.0).sum() + (a[ms[1]] * a[ms[1]]).sum()
        args = lambda k: (x, (MASKS[SEQUENCE[k]], MASKS[SEQUENCE[-1 - k]]))
    else:
        fn = lambda a, M: (a[M[0]] * a[M[0]]).sum() + (a[M[1]] * 3.0).sum()
        args = lambda k: (x, np.stack([MASKS[SEQUENCE[k]], MASKS[SEQUENCE[-1 - k]]]))
    replay_vs_eager(ag.replay(fn, batch=batch), fn, args, 1, calls=len(SEQUENCE), bits=not batch)
