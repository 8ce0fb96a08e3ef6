"""Review 32: two changes checked against the paths they replace.

1. sweep_steps.make_step: the step of an op with batch "elementwise" and one rule text adds
   the rule's result without summing it to the input's shape. For the library's unary ops
   (add_scalar exp log mul_scalar neg relu rsub_scalar sigmoid tanh) the result keeps the
   general path's bits around 0-d values, numpy-scalar data, views, hooks that change the
   dtype, retain_grad, grad(), backward(gradient=...), in-place changes, create_graph and
   replay. But "elementwise" means *broadcasting* ops (batching.py), and the Op docstring
   says "Gradients may come back in a broadcast shape: the engine sums them back to each
   input's shape": a learner's one-input elementwise op whose output broadcasts against a
   constant (x + C, x * C with C larger than x) now gets a .grad of the broadcast shape,
   silently (FAILS, four tests), and a linear feeding such an op gets a weight gradient of
   the wrong shape through its split step too.
2. linalg.product_text(two_d=True) in the split steps of linear / addmm: against the
   general path bit for bit on 1x1, 1xk, kx1, 0-row, mixed-dtype, non-contiguous, shared and
   non-leaf weights, nn.Linear on 3-D inputs, and a learner subclass with 2-D factors.
"""
import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.function import REGISTRY, Memory, Op, record
from autograd_core.grad_mode import no_grad
from autograd_core.ops.linalg import AddMM, Linear, product
from autograd_core.tensor import Tensor

UNARY = ["add_scalar", "exp", "log", "mul_scalar", "neg", "relu", "rsub_scalar", "sigmoid",
         "tanh"]


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _general(fn):
    """fn() with every op's sweep step off (the engine's rule call and adding loop)."""
    ops = [op for op in REGISTRY.values() if "sweep_step" in op.__dict__]
    kept = {op: op.__dict__["sweep_step"] for op in ops}
    try:
        for op in ops:
            op.sweep_step = None
        return fn()
    finally:
        for op, step in kept.items():
            op.sweep_step = step


def _both(fn):
    return fn(), _general(fn)


def _apply(name, x):
    return {"add_scalar": lambda: x + 1.5, "exp": lambda: ag.exp(x), "log": lambda: ag.log(x),
            "mul_scalar": lambda: x * 0.75, "neg": lambda: -x, "relu": lambda: ag.relu(x),
            "rsub_scalar": lambda: 2.0 - x, "sigmoid": lambda: ag.sigmoid(x),
            "tanh": lambda: ag.tanh(x)}[name]()


def _fd(f, x0, eps=1e-6):
    """Central finite differences of the scalar f at the float64 array x0."""
    out = np.zeros_like(x0)
    for i in np.ndindex(x0.shape):
        hi, lo = x0.copy(), x0.copy()
        hi[i] += eps
        lo[i] -= eps
        out[i] = (f(hi) - f(lo)) / (2 * eps)
    return out


# ==== learner ops: one input, batch "elementwise", a rule text; the output broadcasts ========
def _learner_ops():
    class AddConstant(Op):  # x + C, C a non-differentiated array (e.g. a fixed offset table)
        name = "add_constant_review32"
        inputs = ("x",)
        arguments = ("c",)
        saves = ("c",)
        view = False
        rule = "d(x + C) = g"
        hazard = None
        memory = Memory()
        batch = "elementwise"
        inline_backward = ("{g}",)

        @staticmethod
        def forward(out, x):
            return x + out._saved[0]

        @staticmethod
        def backward(g, out, xp):
            return (g,)

    class ScaleConstant(Op):  # x * C
        name = "scale_constant_review32"
        inputs = ("x",)
        arguments = ("c",)
        saves = ("c",)
        view = False
        rule = "d(x C) = g C"
        hazard = None
        memory = Memory()
        batch = "elementwise"
        inline_backward = ("{g} * {out}._saved[0]",)

        @staticmethod
        def forward(out, x):
            return x * out._saved[0]

        @staticmethod
        def backward(g, out, xp):
            return (g * out._saved[0],)

    return AddConstant, ScaleConstant


@pytest.fixture
def learner():
    ops = _learner_ops()
    try:
        yield ops
    finally:
        for op in ops:
            REGISTRY.pop(op.name, None)


def _add_c(op, x, c):
    return record(op, x._data + c, (x,), (c,))


def _scale_c(op, x, c):
    return record(op, x._data * c, (x,), (c,))


C = np.arange(12.0).reshape(3, 4) / 7.0
X0 = np.array([0.3, -1.2, 2.0, 0.5])


def test_learner_elementwise_ops_are_declared_as_the_change_assumes(learner):
    add_c, scale_c = learner
    assert add_c.batch == scale_c.batch == "elementwise"
    assert len(add_c.inline_backward) == len(scale_c.inline_backward) == 1
    # the general path: the engine sums the broadcast gradient back to x's shape
    x = Tensor(X0.copy(), requires_grad=True)
    y = _general(lambda: _add_c(add_c, x, C))
    assert y.shape == (3, 4) and x.shape == (4,)
    _general(lambda: (y * y).sum().backward())
    np.testing.assert_allclose(x.grad.numpy(), (2 * (X0 + C)).sum(axis=0), rtol=1e-13)


@pytest.mark.parametrize("how", ["backward", "grad"])
def test_bug_learner_broadcasting_add_gives_a_leaf_grad_of_the_broadcast_shape(learner, how):
    """BUG (fails): x (4,) + C (3, 4) through a learner's elementwise one-input op. The step
    adds g (3, 4) into x's gradient without sum_to: x.grad has shape (3, 4) (no error), where
    the general path (and the old step) give the (4,) sum."""
    add_c, _ = learner

    def run():
        x = Tensor(X0.copy(), requires_grad=True)
        y = _add_c(add_c, x, C)
        loss = (y * y).sum()
        if how == "grad":
            return ag.grad(loss, [x])[0].numpy()
        loss.backward()
        return x.grad.numpy()

    got, want = _both(run)
    assert want.shape == (4,)
    np.testing.assert_allclose(want, (2 * (X0 + C)).sum(axis=0), rtol=1e-13)
    assert got.shape == (4,), f"x.grad has shape {got.shape} for x of shape (4,)"
    assert _same(got, want)


def test_bug_learner_broadcasting_scale_after_tanh_with_retain_grad(learner):
    """BUG (fails): u = tanh(x) (4,), v = u * C (3, 4) by a learner's op. u's retained .grad
    and x.grad come out (3, 4); the general path gives (4,) for both, equal to finite
    differences."""
    _, scale_c = learner

    def run():
        x = Tensor(X0.copy(), requires_grad=True)
        u = ag.tanh(x)
        u.retain_grad()
        v = _scale_c(scale_c, u, C)
        (v * v).sum().backward()
        return x.grad.numpy(), u.grad.numpy()

    got, want = _both(run)
    fd = _fd(lambda a: float(((np.tanh(a) * C) ** 2).sum()), X0)
    np.testing.assert_allclose(want[0], fd, rtol=1e-6, atol=1e-8)
    assert want[0].shape == want[1].shape == (4,)
    assert got[1].shape == (4,), f"u.grad has shape {got[1].shape} for u of shape (4,)"
    assert got[0].shape == (4,), f"x.grad has shape {got[0].shape} for x of shape (4,)"
    assert _same(got[0], want[0]) and _same(got[1], want[1])


def test_bug_learner_broadcast_after_linear_reaches_the_split_step_as_a_3d_gradient(learner):
    """BUG (fails): y = linear(x, W, b) (2, 4); v = y + C (2, 2, 4) by a learner's op. The
    unary step hands y a (2, 2, 4) gradient, so linear's split step (whose products no longer
    ask ndim) runs g.T.dot(x) on a 3-D g: W.grad (4, 3) comes out (4, 2, 3), silently."""
    add_c, _ = learner
    rng = np.random.default_rng(32)
    x0, w0, b0 = rng.standard_normal((2, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    c = rng.standard_normal((2, 2, 4))

    def run():
        x = Tensor(x0.copy())
        w, b = Tensor(w0.copy(), requires_grad=True), Tensor(b0.copy(), requires_grad=True)
        v = _add_c(add_c, ag.linear(x, w, b), c)
        (v * v).sum().backward()
        return w.grad.numpy(), b.grad.numpy()

    got, want = _both(run)
    fd = _fd(lambda a: float((((x0 @ a.T + b0) + c) ** 2).sum()), w0)
    np.testing.assert_allclose(want[0], fd, rtol=1e-6, atol=1e-7)
    assert got[0].shape == (4, 3), f"W.grad has shape {got[0].shape} for W of shape (4, 3)"
    assert got[1].shape == (4,), f"b.grad has shape {got[1].shape} for b of shape (4,)"
    assert _same(got[0], want[0]) and _same(got[1], want[1])


def test_learner_op_of_its_input_shape_keeps_the_general_paths_bits(learner):
    """Where the learner's op does not broadcast (C of x's shape) the step is fine."""
    _, scale_c = learner
    c = np.linspace(-1, 2, 4)

    def run():
        x = Tensor(X0.copy(), requires_grad=True)
        v = _scale_c(scale_c, ag.sigmoid(x), c)
        (v * v).sum().backward()
        return x.grad.numpy()

    got, want = _both(run)
    assert got.shape == (4,) and _same(got, want)


# ==== the library's unary ops: the claim holds ==============================================
def _hostile(name, case, dtype):
    rng = np.random.default_rng(sum(map(ord, name + case)))
    seen = []
    if case == "zero_d":
        x = Tensor(np.asarray(rng.uniform(1.5, 3.0), dtype=dtype), requires_grad=True)
        u = _apply(name, x)
        u.register_hook(lambda g: seen.append((g.shape, g.dtype)))
        v = _apply(name, u * Tensor(rng.uniform(0.5, 1.0, (2, 3)).astype(dtype)))
        v.sum().backward()
    elif case == "numpy_scalar_data":
        x = Tensor(dtype(rng.uniform(1.5, 3.0)), requires_grad=True)  # a numpy scalar
        u = _apply(name, _apply(name, x))
        u.backward()
    elif case == "transposed_view":
        x = Tensor(rng.uniform(1.5, 3.0, (3, 2)).astype(dtype), requires_grad=True)
        u = _apply(name, x.T)  # a non-contiguous view as the input
        w = Tensor(rng.uniform(0.5, 1.0, (4, 2, 3)).astype(dtype))
        (_apply(name, u) * w).sum().backward()
    elif case == "hook_changes_dtype":  # a hook hands the node a float16 / Python float
        x = Tensor(rng.uniform(1.5, 3.0, (1,)).astype(dtype), requires_grad=True)
        u = _apply(name, x)
        u.register_hook(lambda g: g.numpy().astype(np.float16))
        s = _apply(name, u.sum())  # 0-d
        s.register_hook(lambda g: 0.625)
        (s * 3.0).backward()
    elif case == "retain_and_grad":
        x = Tensor(rng.uniform(1.5, 3.0, (2, 1)).astype(dtype), requires_grad=True)
        u = _apply(name, x)
        u.retain_grad()
        v = _apply(name, u + Tensor(rng.uniform(0.5, 1.0, (2, 5)).astype(dtype)))
        go = Tensor(rng.uniform(-1.0, 1.0, (2, 5)).astype(dtype))
        (gx, gu) = ag.grad(v, [x, u], grad_outputs=go, retain_graph=True)
        v.backward(gradient=go.numpy().tolist())
        return x.grad.numpy(), u.grad.numpy(), gx.numpy(), gu.numpy(), seen
    elif case == "inplace_on_input":  # x changed in place after the op read it
        x = Tensor(rng.uniform(1.5, 3.0, (3,)).astype(dtype), requires_grad=True)
        u = _apply(name, x)
        with no_grad():
            x.add_(0.25)  # log and relu saved x: a version error; the others read no x
        try:
            (u * u).sum().backward()
        except RuntimeError as e:
            return ("raised", "place" in str(e))
    if x.grad is None:
        return None, seen
    return x.grad.numpy(), seen


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("case", ["zero_d", "numpy_scalar_data", "transposed_view",
                                  "hook_changes_dtype", "retain_and_grad", "inplace_on_input"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_library_unary_steps_keep_the_general_paths_shapes_and_bits(name, case, dtype):
    got, want = _both(lambda: _hostile(name, case, dtype))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if isinstance(a, np.ndarray):
            assert _same(a, b), (a, b)
        else:
            assert a == b
    op = REGISTRY[name]
    assert op.sweep_step is not None and op.sweep_step[1].__name__ == "step"  # made and run


@pytest.mark.parametrize("name", UNARY)
def test_library_unary_grad_shapes_and_finite_differences(name):
    x0 = np.array([[1.7], [2.4]])  # (2, 1), broadcast against (2, 3) after the op
    w = np.array([[0.5, 1.0, 2.0], [1.5, 0.25, 0.75]])  # log(log(x) w) defined

    def f(a):
        t = Tensor(a)
        return float((_apply(name, _apply(name, t) * Tensor(w)) ** 2).sum().numpy())

    x = Tensor(x0.copy(), requires_grad=True)
    (_apply(name, _apply(name, x) * Tensor(w)) ** 2).sum().backward()
    assert x.grad.shape == (2, 1)
    np.testing.assert_allclose(x.grad.numpy(), _fd(f, x0), rtol=1e-5, atol=1e-7)


def test_a_hook_returning_a_broadcastable_shape_raises_in_both_paths():
    def run():
        x = Tensor(np.ones((2, 3)), requires_grad=True)
        y = ag.exp(x)
        y.register_hook(lambda g: np.ones((1, 3)))
        try:
            y.sum().backward()
        except RuntimeError as e:
            return "shape" in str(e), x.grad
        return False, x.grad

    got, want = _both(run)
    assert got == want == (True, None)


@pytest.mark.parametrize("gradient", [np.ones(3), np.ones((1, 3)), 1.0])
def test_backward_gradient_of_another_shape_raises_in_both_paths(gradient):
    def run():
        x = Tensor(np.full((2, 3), 0.5), requires_grad=True)
        y = ag.sigmoid(x)
        with pytest.raises(ValueError, match="shape"):
            y.backward(gradient=gradient)
        return x.grad

    assert _both(run) == (None, None)


def test_create_graph_and_replay_around_unary_ops_keep_the_bits():
    def run():
        x = Tensor(np.array([0.3, -0.8, 1.1]), requires_grad=True)
        y = ag.tanh(ag.exp(x * 0.5) - 1.0)
        (g,) = ag.grad(y.sum(), [x], create_graph=True)
        g.sum().backward()
        first = x.grad.numpy()

        step = ag.replay(lambda a: (ag.sigmoid(2.0 - ag.relu(a) + 1.5) * 0.75).sum())
        out = []
        for k in range(4):
            p = Tensor(np.linspace(-1, 1, 6).reshape(2, 3) + k, requires_grad=True)
            step(p).backward()
            q = Tensor(p.numpy().copy(), requires_grad=True)  # eager after the replay
            (-ag.log(ag.exp(q) + 1.5)).sum().backward()
            out += [p.grad.numpy(), q.grad.numpy()]
        return [first] + out

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, want = _both(run)
    assert all(_same(a, b) and a.shape in ((3,), (2, 3)) for a, b in zip(got, want))


# ==== split steps: product_text(two_d=True) =================================================
def _split_case(kind, rng):
    if kind == "1x1":
        x, w, b = rng.standard_normal((1, 1)), rng.standard_normal((1, 1)), rng.standard_normal(1)
    elif kind == "row":
        x, w, b = rng.standard_normal((1, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    elif kind == "column":
        x, w, b = rng.standard_normal((4, 1)), rng.standard_normal((1, 1)), rng.standard_normal(1)
    elif kind == "zero_rows":
        x, w, b = np.zeros((0, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    elif kind == "mixed_dtype":
        x = rng.standard_normal((3, 4)).astype(np.float32)
        w, b = rng.standard_normal((2, 4)), rng.standard_normal(2).astype(np.float32)
    else:  # "transposed": a non-contiguous input
        x, w, b = rng.standard_normal((4, 3)).T, rng.standard_normal((2, 4)), rng.standard_normal(2)
    return x, w, b


@pytest.mark.parametrize("kind", ["1x1", "row", "column", "zero_rows", "mixed_dtype",
                                  "transposed"])
@pytest.mark.parametrize("shared", [False, True])
def test_split_steps_keep_the_general_paths_bits(kind, shared):
    x0, w0, b0 = _split_case(kind, np.random.default_rng(len(kind)))

    def run():
        x = Tensor(x0, requires_grad=True)
        w0t = Tensor(w0.copy(), requires_grad=True)
        w = w0t * 0.5  # a non-leaf weight (its own unary step after the products)
        b = Tensor(b0.copy(), requires_grad=True)
        y = ag.linear(x, w, b)
        z = ag.addmm(b, x, w.T if not shared else ag.transpose(w))
        loss = (ag.tanh(y) * 1.5).sum() + (z * z).sum()
        if shared:
            loss = loss + ag.linear(x * 2.0, w).sum()
        loss.backward()
        return x.grad.numpy(), w0t.grad.numpy(), b.grad.numpy()

    got, want = _both(run)
    for a, b, ref in zip(got, want, (x0, w0, b0)):
        assert a.shape == np.shape(ref) and _same(a, b)
    assert Linear.sweep_step[1].__name__ == "step" and AddMM.sweep_step[1].__name__ == "step"


def test_split_step_weight_gradient_against_finite_differences():
    rng = np.random.default_rng(3)
    x0, w0, b0 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    w = Tensor(w0.copy(), requires_grad=True)
    y = ag.addmm(Tensor(b0), Tensor(x0), w.T)
    ag.sigmoid(y).sum().backward()
    fd = _fd(lambda a: float((1 / (1 + np.exp(-(x0 @ a.T + b0)))).sum()), w0)
    assert w.grad.shape == (4, 3)
    np.testing.assert_allclose(w.grad.numpy(), fd, rtol=1e-6, atol=1e-8)


def test_nn_linear_on_3d_input_reaches_the_split_step_2d():
    def run():
        layer = nn.Linear(3, 2, rng=np.random.default_rng(0), dtype=np.float64)
        x = Tensor(np.random.default_rng(1).standard_normal((4, 5, 3)), requires_grad=True)
        out = layer(x)
        assert out.shape == (4, 5, 2)
        (ag.relu(out) * out).sum().backward()
        return x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()

    got, want = _both(run)
    assert [a.shape for a in got] == [(4, 5, 3), (2, 3), (2,)]
    assert all(_same(a, b) for a, b in zip(got, want))


def test_learner_linear_subclass_with_2d_split_factors_keeps_the_bits():
    class ScaledLinear(Linear):  # its own split rule and a text for any node
        name = "scaled_linear_review32"

        @staticmethod
        def backward_split(g, out):
            x, w = out._inputs[0], out._inputs[1]
            return ((product(g, w._data) if x.requires_grad else None, None), g * 2.0,
                    x._data)

        @staticmethod
        def inline_split(out):
            return (("product({g}, {x1})", None), "{g} * 2.0", "{x0}")

    try:
        rng = np.random.default_rng(11)
        x0, w0 = rng.standard_normal((3, 2)), rng.standard_normal((4, 2))

        def run():
            x = Tensor(x0.copy(), requires_grad=True)
            w = Tensor(w0.copy(), requires_grad=True)
            y = record(ScaledLinear, x0 @ w0.T, (x, w))
            (y * y).sum().backward()
            return x.grad.numpy(), w.grad.numpy()

        got, want = _both(run)
        assert all(_same(a, b) for a, b in zip(got, want))
        np.testing.assert_allclose(got[1], 2 * (2 * (x0 @ w0.T)).T @ x0, rtol=1e-12)
        assert ScaledLinear.sweep_step[1].__name__ == "step"
    finally:
        REGISTRY.pop("scaled_linear_review32", None)
