"""Hostile review of issue 13 ("one truth per op"): probes that try to get a silently wrong
gradient or a crash deep inside the engine.

Every problem this review found is fixed; its probe is a regression test here;
the others are probes that held up and are kept as regression tests.
"""
import ast
import math
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.function import Memory, Op, record

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _raises_or_equals(fn, expected):
    """The engine's promise: the backward raises the in-place error, or gives `expected`."""
    try:
        got = fn()
    except RuntimeError as exc:
        assert "modified in place" in str(exc), exc
        return
    np.testing.assert_allclose(got, expected)


# ---- in-place changes made DURING the sweep (hooks) ---------------------------------------------
def test_a_hook_that_changes_a_saved_input_mid_sweep():
    def run():
        x = ag.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
        w = ag.Tensor(np.array([2.0, 2.0, 2.0]), requires_grad=True)
        h = x * w

        def hook(g):
            with ag.no_grad():
                w.add_(100.0)
        h.register_hook(hook)
        h.sum().backward()
        return x.grad.numpy()
    _raises_or_equals(run, [2.0, 2.0, 2.0])


def test_a_hook_that_changes_a_saved_output_mid_sweep():
    def run():
        x = ag.Tensor(np.array([0.0, 1.0]), requires_grad=True)
        e = x.exp()
        h = e * 2.0

        def hook(g):
            with ag.no_grad():
                e.fill_(0.0)
        h.register_hook(hook)
        h.sum().backward()
        return x.grad.numpy()
    _raises_or_equals(run, 2 * np.exp([0.0, 1.0]))


def test_a_hook_that_changes_x_before_the_deferred_weight_product():
    def run():
        x = ag.Tensor(np.ones((2, 3)), requires_grad=False)
        w = ag.Tensor(np.ones((4, 3)), requires_grad=True)
        y = ag.linear(x, w)
        z = y * 1.0

        def hook(g):
            with ag.no_grad():
                x.fill_(5.0)
        z.register_hook(hook)
        z.sum().backward()
        return w.grad.numpy()
    _raises_or_equals(run, np.full((4, 3), 2.0))


# ---- non-differentiated arguments ----------------------------------------------------------------
def test_a_list_index_changed_after_the_forward():
    x = ag.Tensor(np.arange(4.0), requires_grad=True)
    idx = [0, 1]
    y = x[idx]
    idx[0] = 3
    y.sum().backward()
    assert x.grad.numpy().tolist() == [1.0, 1.0, 0.0, 0.0]


def test_a_list_bound_of_clip_changed_after_the_forward():
    x = ag.Tensor(np.array([0.5, 0.5, 0.5]), requires_grad=True)
    lo = [0.0, 0.0, 0.0]
    y = ag.clip(x, lo, None)
    lo[0] = 1.0
    y.sum().backward()
    assert x.grad.numpy().tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("make", [
    lambda: np.array(1), lambda: np.array([], dtype=int), lambda: ag.Tensor(np.array([0, 2])),
    lambda: np.broadcast_to(np.array([1]), (2,)),  # read-only, stride 0
    lambda: np.arange(8)[::3][:2],  # non-contiguous
], ids=["0-d", "empty", "tensor", "read-only", "non-contiguous"])
def test_index_arrays_of_every_kind_are_kept_as_the_forward_saw_them(make):
    index = make()
    data = np.arange(12.0).reshape(4, 3)
    plain = index.numpy().copy() if isinstance(index, ag.Tensor) else np.array(index)
    want = np.zeros_like(data)
    np.add.at(want, plain, 1.0)
    x = ag.Tensor(data.copy(), requires_grad=True)
    y = x[index]
    if isinstance(index, ag.Tensor):
        index.add_(1)
    elif index.flags.writeable and index.size:
        index += 1
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), want)


def test_a_zero_d_integer_index_array_gives_a_copy_not_an_untracked_view():
    x = ag.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x * x
    v = x[np.array(1)]
    assert not np.shares_memory(v.numpy(), x.numpy())
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * np.arange(6.0).reshape(2, 3))


# ---- aliasing that escapes the version counter ---------------------------------------------------
def test_sum_to_the_same_shape_is_not_an_untracked_alias():
    def run():
        x = ag.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
        y = x * x
        z = ag.sum_to(x, (3,))
        with ag.no_grad():
            z[...] = 0.0
        y.sum().backward()
        return x.grad.numpy()
    _raises_or_equals(run, [2.0, 4.0, 6.0])


@pytest.mark.parametrize("how", ["iadd", "setitem", "copy_"])
def test_an_in_place_write_of_a_graph_tensor_into_a_plain_tensor(how):
    def run():
        w = ag.Tensor(np.array([3.0]), requires_grad=True)
        buf = ag.Tensor(np.zeros(1))
        if how == "iadd":
            buf += w * 2.0
        elif how == "setitem":
            buf[0] = (w * 2.0)[0]
        else:
            buf.copy_(w * 2.0)
        (buf * w).sum().backward()  # loss = 2 w^2: d/dw = 4 w = 12
        return w.grad.numpy()
    try:
        got = run()
    except RuntimeError:
        return  # refusing is fine
    np.testing.assert_allclose(got, [12.0])


def test_node_vjp_after_an_in_place_change():
    def run():
        x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
        w = ag.Tensor(np.array([5.0, 5.0]), requires_grad=True)
        y = x * w
        with ag.no_grad():
            w.add_(1.0)
        return ag.node_vjp(y, np.ones(2))[0]
    _raises_or_equals(run, [5.0, 5.0])


def test_create_graph_leaves_do_not_share_one_grad_tensor():
    a = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    ((a + b) * ag.Tensor(np.array([2.0, 3.0]))).sum().backward(create_graph=True)
    assert a.grad is not b.grad
    with ag.no_grad():
        a.grad.zero_()
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 3.0])


def test_create_graph_grad_is_writable():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    x.sum().backward(create_graph=True)
    with ag.no_grad():
        x.grad.zero_()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0])


def test_data_assigned_another_shape_after_a_reduction():
    x = ag.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    x.sum()
    with pytest.raises(ValueError, match="another shape"):
        x.data = np.zeros(5)
    x.data = np.zeros(3)  # the same shape is fine (an in-place change)


# ---- declarations of user-defined ops -----------------------------------------------------------
def test_a_string_declaration_is_refused():
    with pytest.raises(TypeError):
        class ForgotComma(Op):  # noqa: F841
            name = "review13_forgot_comma"
            inputs = ("x",)
            saves = ("output")
            view = False
            rule = "d exp(x) = exp(x) g"
            hazard = None
            memory = Memory()
            forward = staticmethod(lambda out, x: x)

            @staticmethod
            def backward(g, out, xp):
                return (g * xp.val(out),)


def test_a_misspelt_role_in_saves_is_refused_naming_the_op():
    with pytest.raises(TypeError, match="review13_typo_role.*saves names \\['B'\\]"):
        class Typo(Op):  # noqa: F841
            name = "review13_typo_role"
            inputs = ("a", "b")
            saves = ("a", "B")
            view = False
            rule = "d(a b) = (g b, g a)"
            hazard = None
            memory = Memory()
            forward = staticmethod(lambda out, a, b: a * b)

            @staticmethod
            def backward(g, out, xp):
                a, b = out._inputs
                return g * xp.val(b), g * xp.val(a)
    assert "review13_typo_role" not in ag.ops_registry


def test_a_subclass_of_a_registered_op_must_take_a_new_name():
    from autograd_core.ops.arithmetic import Mul
    with pytest.raises(RuntimeError, match="registered twice"):
        class Again(Mul):  # noqa: F841
            pass


# ---- two sweeps of one graph --------------------------------------------------------------------
def test_a_freeing_backward_inside_a_retain_graph_sweep():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    m = (x * 2.0).exp()
    loss = m.sum()
    fired = []

    def hook(g):
        if not fired:
            fired.append(1)
            loss.backward()  # would free the graph the outer sweep is walking
    m.register_hook(hook)
    with pytest.raises(RuntimeError, match="is reading now"):
        loss.backward(retain_graph=True)
    x.grad = None
    loss.backward()  # the graph was left whole: it still runs, once
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(2 * np.array([1.0, 2.0])))


def test_a_freeing_backward_in_another_thread_during_a_retain_graph_sweep():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    m = (x * 2.0).exp()
    loss = m.sum()
    collected, freed = threading.Event(), threading.Event()
    results = {}

    def hook(g):
        if threading.current_thread().name == "retain":
            collected.set()
            freed.wait(10)

    def retain():
        try:
            loss.backward(retain_graph=True)
            results["retain"] = "ok"
        except Exception as exc:  # noqa: BLE001
            results["retain"] = exc
    m.register_hook(hook)
    t = threading.Thread(target=retain, name="retain")
    t.start()
    assert collected.wait(10)
    # the other thread is reading the graph: a freeing backward now is refused, not run
    with pytest.raises(RuntimeError, match="is reading now"):
        loss.backward()
    freed.set()
    t.join(10)
    assert results["retain"] == "ok"
    loss.backward()  # once it has ended, the graph can be freed


def test_keyboard_interrupt_in_a_hook_then_a_second_backward():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    z = h.exp().sum()

    def hook(g):
        raise KeyboardInterrupt
    handle = h.register_hook(hook)
    with pytest.raises(KeyboardInterrupt):
        z.backward()
    assert x.grad is None  # nothing half-written on the leaves
    handle.remove()
    with pytest.raises(RuntimeError, match="already freed"):
        z.backward()


def test_an_exception_in_a_retain_graph_sweep_leaves_the_graph_usable():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    z = h.exp().sum()
    handle = h.register_hook(lambda g: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        z.backward(retain_graph=True)
    handle.remove()
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * np.exp([3.0, 6.0]))


# ---- observers ----------------------------------------------------------------------------------
class _Keep(ag.SweepObserver):
    def __init__(self):
        self.seen = []

    def node(self, tensor, grad, sent):
        self.seen.append((grad, np.array(grad, copy=True),
                          [(gi, np.array(gi, copy=True)) for _, _, gi in sent]))


def test_what_an_observer_keeps_is_not_changed_by_the_rest_of_the_sweep():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = ag.Tensor(np.array([3.0, 4.0]), requires_grad=True)
    y = ((x * w) + (x * w).exp() + x + x).sum()
    keep = _Keep()
    y.backward(observer=keep)
    for grad, copy, sent in keep.seen:
        np.testing.assert_array_equal(grad, copy)
        for gi, gcopy in sent:
            np.testing.assert_array_equal(gi, gcopy)
    with ag.no_grad():
        x.grad.mul_(0.0)  # .grad owns its data: what the observer kept stays
    for grad, copy, _ in keep.seen:
        np.testing.assert_array_equal(grad, copy)


def test_an_observer_with_create_graph_and_anomaly_mode_gives_the_same_gradients():
    def grads(observer, anomaly):
        x = ag.Tensor(np.array([0.3, -1.2]), requires_grad=True)
        y = (ag.sigmoid(x) * x + ag.logsigmoid(x) + ag.softplus(x * x)).sum()
        if anomaly:
            with ag.detect_anomaly():
                (gx,) = ag.grad(y, x, create_graph=True, observer=observer)
        else:
            (gx,) = ag.grad(y, x, create_graph=True, observer=observer)
        gx.sum().backward()
        return gx.numpy().copy(), x.grad.numpy().copy()
    base = grads(None, False)
    for observer, anomaly in ((_Keep(), False), (_Keep(), True)):
        for a, b in zip(base, grads(observer, anomaly)):
            np.testing.assert_allclose(a, b, rtol=1e-15)


def test_an_observer_that_raises_stops_the_backward_without_touching_leaves():
    class Boom(ag.SweepObserver):
        def node(self, tensor, grad, sent):
            raise ValueError("boom")
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x.exp() * 2.0).sum()
    with pytest.raises(ValueError, match="boom"):
        y.backward(observer=Boom(), retain_graph=True)
    assert x.grad is None
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]))


def test_an_observer_cannot_write_into_the_callers_gradient_array():
    class Mutate(ag.SweepObserver):
        def node(self, tensor, grad, sent):
            for _, _, gi in sent:
                try:
                    gi *= 0
                except ValueError:  # read-only: fine
                    pass
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    gradient = np.ones(2)
    y = x + x * 1.0
    y.backward(gradient, observer=Mutate())
    np.testing.assert_array_equal(gradient, [1.0, 1.0])


# ---- numerics -----------------------------------------------------------------------------------
def _ref_sigmoid(x):
    x = np.asarray(x, dtype=np.longdouble)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _ref_logsigmoid(x):
    x = np.asarray(x, dtype=np.longdouble)
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def _ref_softplus(x):
    x = np.asarray(x, dtype=np.longdouble)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= 1e-18, reason="needs an 80-bit longdouble")
@pytest.mark.parametrize("dtype,limit", [(np.float16, 12.0), (np.float32, 104.0),
                                         (np.float64, 750.0)])
@pytest.mark.parametrize("fn,ref", [(ag.sigmoid, _ref_sigmoid),
                                    (ag.logsigmoid, _ref_logsigmoid),
                                    (ag.softplus, _ref_softplus)],
                         ids=["sigmoid", "logsigmoid", "softplus"])
def test_sigmoid_family_within_a_few_ulps_over_the_whole_range(dtype, limit, fn, ref):
    fi = np.finfo(dtype)
    xs = np.concatenate([np.linspace(-limit, limit, 20001),
                         [fi.tiny, -fi.tiny, fi.smallest_subnormal, -fi.smallest_subnormal,
                          0.0, -0.0, float(fi.max), -float(fi.max)]]).astype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        got = fn(ag.Tensor(xs)).numpy()
        want = ref(xs)
    assert got.dtype == dtype
    normal = (np.abs(want) >= fi.tiny) & (np.abs(want) <= fi.max)
    rel = np.abs((got.astype(np.longdouble) - want)[normal] / want[normal])
    assert float(rel.max()) <= 4 * float(fi.eps), float(rel.max())
    assert np.all(np.isfinite(got[np.isfinite(want)]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_family_at_nan_inf_and_signed_zero(dtype):
    x = ag.Tensor(np.array([np.nan, np.inf, -np.inf, -0.0], dtype=dtype), requires_grad=True)
    s, ls, sp = ag.sigmoid(x), ag.logsigmoid(x), ag.softplus(x)
    (s.sum() + ls.sum() + sp.sum()).backward()
    np.testing.assert_array_equal(s.numpy(), np.array([np.nan, 1, 0, 0.5], dtype=dtype))
    np.testing.assert_array_equal(ls.numpy()[:3], np.array([np.nan, 0, -np.inf], dtype=dtype))
    np.testing.assert_array_equal(sp.numpy()[:3], np.array([np.nan, np.inf, 0], dtype=dtype))
    assert ls.numpy()[3] == pytest.approx(-math.log(2), rel=1e-3)
    # d/dx: sigmoid' + sigmoid(-x) + sigmoid(x); finite and exact at +-inf
    np.testing.assert_array_equal(x.grad.numpy()[1:3], np.array([1, 1], dtype=dtype))
    assert np.isnan(x.grad.numpy()[0])


def test_log_of_sigmoid_is_finite_down_to_minus_80_in_float32_with_gradient_1():
    xs = np.array([-80.0, -87.0, -60.0, -20.0], dtype=np.float32)
    for make in (lambda t: ag.log(ag.sigmoid(t)), ag.logsigmoid):
        x = ag.Tensor(xs.copy(), requires_grad=True)
        y = make(x)
        y.sum().backward()
        np.testing.assert_allclose(y.numpy(), xs, rtol=1e-6)
        np.testing.assert_allclose(x.grad.numpy(), 1.0, rtol=1e-6)


def test_float16_mean_over_many_elements_has_a_nonzero_gradient():
    x = ag.Tensor(np.ones(70000, dtype=np.float16), requires_grad=True)
    x.mean().backward()
    np.testing.assert_allclose(x.grad.numpy().astype(np.float64), 1 / 70000, rtol=1e-2)


def test_max_with_a_nan_sends_the_gradient_to_one_element():
    x = ag.Tensor(np.array([1.0, np.nan, 3.0]), requires_grad=True)
    with np.errstate(invalid="ignore"):
        x.max().backward()
    assert np.isfinite(x.grad.numpy()).all()


# ---- import side effects, spec conformance ------------------------------------------------------
def test_importing_the_packages_never_calls_mallopt():
    code = (
        "import ctypes\n"
        "calls = []\n"
        "real = ctypes.CDLL\n"
        "def spy(*a, **k):\n"
        "    calls.append(a)\n"
        "    return real(*a, **k)\n"
        "ctypes.CDLL = spy\n"
        "import autograd_core, nn, nn.cli, nn.bptt_report\n"
        "assert not any('libc' in str(a) for a in calls), calls\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


_PRIVATE = {"_op", "_inputs", "_saved", "_seq", "_version", "_data", "_step", "_epoch",
            "_hooks", "_retain", "_origin"}


@pytest.mark.parametrize("path", ["autograd_core/trace.py", "autograd_core/peak_memory.py"])
def test_the_sweep_watchers_use_only_public_attributes(path):
    tree = ast.parse((ROOT / path).read_text())
    found = sorted({f"{node.lineno}: .{node.attr}" for node in ast.walk(tree)
                    if isinstance(node, ast.Attribute) and node.attr in _PRIVATE})
    found += [f"{node.lineno}: import {a.name}" for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) for a in node.names
              if a.name.startswith("_")]
    assert not found, found


def test_the_readme_has_the_recipe_and_the_current_sigmoid():
    text = (ROOT / "README.md").read_text()
    assert "Adding an op" in text
    assert "(1 + tanh(x/2)) / 2" not in text
