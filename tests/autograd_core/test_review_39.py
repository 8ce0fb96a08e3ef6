"""Review 39: a learner's own ops, written as README "Adding an op" says, through eager
backward, ag.grad, double backward, hooks, anomaly mode, the trace, the graph export and
ag.replay (batch on and off): all held, bit for bit with eager mode and with finite
differences. Two bugs, both of an inline text assigned after the class was made, fixed: a
text not of its form is refused at the assignment (TypeError naming the op, as at the class
statement) instead of a bare SyntaxError deep in the sweep's code generation; and a text put
in place since the class was made is not used (the rule runs), instead of silently standing
in for the rule it does not describe."""
import warnings
from unittest import mock

import numpy as np
import pytest

import autograd_core as ag
from autograd_core import Memory, Op
from tests.finite_differences import central_differences


def make_ops(prefix="review39_"):
    class Cube(Op):
        """x ** 3 (the README's recipe, word for word)."""
        name = prefix + "cube"
        inputs = ("x",)
        saves = ("x",)
        view = False
        rule = "d x^3 = 3 x^2 g"
        hazard = None
        memory = Memory()

        @staticmethod
        def forward(out, x):
            return x ** 3

        @staticmethod
        def backward(g, out, xp):
            x = xp.val(out.inputs[0])
            return (3 * g * x * x,)

    class Softplus(Op):
        name = prefix + "softplus"
        inputs = ("x",)
        saves = ("x",)
        view = False
        rule = "sigmoid(x) g"
        hazard = None
        memory = Memory()
        batch = "elementwise"

        @staticmethod
        def forward(out, x):
            return np.logaddexp(0.0, x)

        @staticmethod
        def backward(g, out, xp):
            x = xp.val(out.inputs[0])
            return (g / (1 + xp.exp(-x)),)

    class Leaky(Op):
        name = prefix + "leaky"
        inputs = ("x",)
        arguments = ("slope",)
        saves = ("slope", "x")
        view = False
        rule = "g (1 where x > 0, else slope)"
        hazard = None
        memory = Memory()
        batch = "elementwise"

        @staticmethod
        def forward(out, x):
            return np.where(x > 0, x, out._saved[0] * x)

        @staticmethod
        def backward(g, out, xp):
            return (g * np.where(out.inputs[0].data > 0, 1.0, out._saved[0]),)

    class Square(Op):
        name = prefix + "square"
        inputs = ("x",)
        saves = ("x",)
        view = False
        rule = "2 x g"
        hazard = None
        memory = Memory()
        batch = "elementwise"
        inline_forward = "{x0} * {x0}"
        inline_backward = ("{g} * (2.0 * {x0})",)

        @staticmethod
        def forward(out, x):
            return x * x

        @staticmethod
        def backward(g, out, xp):
            x = xp.val(out.inputs[0])
            return (g * (2.0 * x),)

    class RowSS(Op):
        name = prefix + "rowss"
        inputs = ("x",)
        saves = ("x",)
        view = False
        rule = "2 x g[..., None]"
        hazard = None
        memory = Memory()
        batch = "reduce"

        @staticmethod
        def forward(out, x):
            return (x * x).sum(axis=-1)

        @staticmethod
        def backward(g, out, xp):
            x = xp.val(out.inputs[0])
            return (2.0 * x * g[..., None],)

    class ClipGrad(Op):
        name = prefix + "clip"
        inputs = ("x",)
        saves = ()
        view = False
        rule = "clip(g, -0.5, 0.5)"
        hazard = None
        memory = Memory()

        @staticmethod
        def forward(out, x):
            return x.copy()

        @staticmethod
        def backward(g, out, xp):
            return (np.clip(g, -0.5, 0.5),)

    class MyMM(Op):
        name = prefix + "mm"
        inputs = ("a", "b")
        saves = ("a", "b")
        view = False
        rule = "g b^T, a^T g"
        hazard = None
        memory = Memory()

        @staticmethod
        def forward(out, a, b):
            return a @ b

        @staticmethod
        def backward(g, out, xp):
            a, b = (xp.val(t) for t in out.inputs)
            return (g @ b.T, a.T @ g)

    return dict(cube=Cube, softplus=Softplus, leaky=Leaky, square=Square, rowss=RowSS,
                clip=ClipGrad, mm=MyMM)


@pytest.fixture
def ops(unregister):
    made = make_ops()
    for cls in made.values():
        unregister(cls.name)

    def call(name, *xs, saved=None):
        cls = made[name]
        ts = tuple(ag.as_tensor(x) for x in xs)
        if saved is not None:  # the forward reads the saved argument: a stand-in node
            class Node:
                _saved = saved
            data = cls.forward(Node, *(t.data for t in ts))
        else:
            data = cls.forward(None, *(t.data for t in ts))
        return ag.record(cls, data, ts, saved)

    call.classes = made
    return call


def test_readme_recipe_as_written(ops):
    x = ag.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    ops("cube", x).sum().backward()
    assert np.allclose(x.grad.numpy(), [3.0, 12.0])
    assert ag.gradcheck(lambda t: ops("cube", t), [np.array([0.5, -1.5])])


def test_eager_grad_double_backward_and_finite_differences(ops):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3))
    b = rng.standard_normal((3, 3))

    def f(a, b):
        h = ops("mm", a, b)
        h = ops("leaky", ops("softplus", h) - 0.7, saved=(np.array(0.1),))
        return ops("rowss", ops("square", ops("cube", h))).sum()

    ta, tb = ag.Tensor(a, requires_grad=True), ag.Tensor(b, requires_grad=True)
    f(ta, tb).backward()
    ga, gb = ag.grad(f(ta, tb), [ta, tb])
    assert np.array_equal(ga.numpy(), ta.grad.numpy())
    assert np.array_equal(gb.numpy(), tb.grad.numpy())
    num = lambda *arrs: f(*arrs).item()
    assert np.allclose(ga.numpy(), central_differences(num, [a, b], 0), rtol=1e-6, atol=1e-7)
    assert np.allclose(gb.numpy(), central_differences(num, [a, b], 1), rtol=1e-6, atol=1e-7)
    # second order of smooth ops (cube, softplus, square)
    x0 = rng.standard_normal(4)
    x = ag.Tensor(x0, requires_grad=True)
    (g,) = ag.grad(ops("square", ops("cube", ops("softplus", x))).sum(), [x], create_graph=True)
    (gg,) = ag.grad(g.sum(), [x])
    d1 = lambda v: (lambda t: ag.grad(ops("square", ops("cube", ops("softplus", t))).sum(),
                                      [t])[0].numpy().sum())(ag.Tensor(v, requires_grad=True))
    assert np.allclose(gg.numpy(), central_differences(d1, [x0], 0), rtol=1e-5, atol=1e-7)


def test_hooks_anomaly_trace_and_graph(ops):
    x = ag.Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    y = ops("cube", x)
    y.register_hook(lambda g: g * 2.0)
    with ag.detect_anomaly():
        ops("clip", y).sum().backward()
    assert np.allclose(x.grad.numpy(), 3 * x.data ** 2)  # clip sends 0.5, the hook doubles it
    tr = ag.trace_backward(ops("softplus", ops("cube", x)).sum())
    rows = {r["op"]: r for r in tr.rows}
    assert rows["review39_cube"]["rule"] == "d x^3 = 3 x^2 g"
    assert rows["review39_softplus"]["rule"] == "sigmoid(x) g"
    assert "review39_cube" in ag.to_dot(ops("cube", x).sum()).source
    z = ag.Tensor(np.array([1.0, 0.0]), requires_grad=True)
    with pytest.raises(ag.AnomalyError, match="backward of mul produced inf"):
        with ag.detect_anomaly():
            (ops("cube", z) * np.array([np.inf, 1.0])).sum().backward()


def _loop_case(ops, seed=1, steps=6):
    rng = np.random.default_rng(seed)
    w = ag.Tensor(rng.standard_normal((3, 3)) * 0.4, requires_grad=True)
    xs = ag.Tensor(rng.standard_normal((steps, 2, 3)))

    def loop(xs):
        h, loss = ag.zeros((2, 3), dtype=np.float64), 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(ops("mm", xs[t], w) + ops("mm", h, w))
            h = ops("clip", ops("softplus", ops("leaky", h, saved=(np.array(0.1),))) * 0.5)
            loss = loss + ops("rowss", ops("square", ops("cube", h))).sum()
        return loss
    return loop, xs, w


@pytest.mark.parametrize("batch", [False, True])
def test_replay_of_a_loop_of_learner_ops_gives_eager_gradients(ops, batch):
    loop, xs, w = _loop_case(ops)
    eager = ag.grad(loop(xs), [w])[0].numpy()
    step = ag.replay(loop, batch=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)
        for _ in range(4):
            w.grad = None
            step(xs).backward()
    if batch:
        assert np.allclose(w.grad.numpy(), eager, rtol=1e-12, atol=0)
    else:
        assert np.array_equal(w.grad.numpy(), eager)


def _mine(g, out, xp):
    x = xp.val(out.inputs[0])
    return (g * (2.0 * x) * 10.0,)


@pytest.mark.parametrize("how", ["assign", "patch"])
@pytest.mark.parametrize("batch", [False, True])
def test_a_rule_put_in_place_on_the_class_or_a_parent_runs_in_replay(unregister, how, batch):
    made = make_ops(prefix="review39_parent_")
    unregister("review39_child_square")
    for cls in made.values():
        unregister(cls.name)

    class Child(made["square"]):
        name = "review39_child_square"
        batch = "elementwise"

    rng = np.random.default_rng(2)
    w = ag.Tensor(rng.standard_normal((3, 3)) * 0.4, requires_grad=True)
    xs = ag.Tensor(rng.standard_normal((5, 2, 3)))

    def loop(xs):
        h, loss = ag.zeros((2, 3), dtype=np.float64), 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(xs[t] @ w + h @ w)
            loss = loss + ag.record(Child, Child.forward(None, h.data), (h,)).sum()
        return loss

    step = ag.replay(loop, batch=batch)
    for _ in range(3):
        step(xs)
    for target in (Child, made["square"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ag.ReplayWarning)
            if how == "patch":
                with mock.patch.object(target, "backward", staticmethod(_mine)):
                    mine_eager = ag.grad(loop(xs), [w])[0].numpy()
                    for _ in range(3):
                        w.grad = None
                        step(xs).backward()
            else:
                old = target.__dict__["backward"] if "backward" in target.__dict__ else None
                target.backward = staticmethod(_mine)
                try:
                    mine_eager = ag.grad(loop(xs), [w])[0].numpy()
                    for _ in range(3):
                        w.grad = None
                        step(xs).backward()
                finally:
                    if old is None:
                        del target.backward
                    else:
                        target.backward = old
        assert np.allclose(w.grad.numpy(), mine_eager, rtol=1e-12, atol=0)
        back = ag.grad(loop(xs), [w])[0].numpy()
        assert not np.allclose(back, mine_eager)
        w.grad = None
        step(xs).backward()
        assert np.allclose(w.grad.numpy(), back, rtol=1e-12, atol=0)


def test_bug_an_assigned_malformed_inline_backward_fails_deep_in_the_sweep(ops):
    """A text that is not of its form is refused when the class is defined (README), but
    assigned afterwards (`Square.inline_backward = ("{g} * (2.0 * {x0}",)`, as a learner
    trying a text would) it is taken unchecked: the first backward dies with a bare
    SyntaxError from compile() in sweep_steps._made (via function._first_step), not naming
    the op's text or that it was assigned. The class hook that watches `backward` could
    check (or refuse) a text put in place as the class statement does."""
    Square = ops.classes["square"]
    declared = Square.inline_backward
    with pytest.raises(TypeError, match="review39_square.*is no Python expression"):
        Square.inline_backward = ("{g} * (2.0 * {x0}",)  # refused as at definition
    assert Square.inline_backward is declared  # nothing was put in place
    x = ag.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    ops("square", x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * x.data)


def test_bug_an_assigned_inline_backward_silently_replaces_the_rule(ops):
    """README: a rule put in place is what runs, and "the text is used only beside the
    function it was written for". Assigning another text (`Square.inline_backward =
    ("{g} * (3.0 * {x0})",)`) leaves `backward` (2 x g) as it was, yet the eager sweep runs
    the new text: the gradient is 3x, not 2x, matching neither the op's backward,
    ag.node_vjp nor finite differences, with no error or warning. The text is tied to the
    function it was declared with only by identity of the function, not of the text."""
    Square = ops.classes["square"]
    Square.inline_backward = ("{g} * (3.0 * {x0})",)
    x = ag.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    ops("square", x).sum().backward()
    assert np.allclose(x.grad.numpy(), 2 * x.data)
