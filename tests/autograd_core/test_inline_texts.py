"""The ops' inline texts (Op.inline_forward, inline_backward, inline_split), which replay's
generated code runs in place of the ops' functions, hold to those functions bit for bit on
every node of the op table; a subclass with its own kernel or rule does not inherit them; a
text that names something unknown is refused with the op's name."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd_core as ag
from autograd_core import replay_codegen, replay_texts
from autograd_core.backmath import ArrayMath
from autograd_core.function import record
from autograd_core.ops.linalg import product

from tests.autograd_core import test_ops_table, test_ops_table_shapes
from tests.autograd_core.replay_checks import check, param

CASES = test_ops_table.CASES + test_ops_table_shapes.CASES
NAMES = replay_texts.NAMES  # what the generated code may name


def _evaluate(text, node, inputs, g=None):
    """A text as the generated code runs it, on `node`, its inputs' arrays and `g`."""
    local = {"out": node, "g": g, "xs": inputs}
    filled = text.format(out="out", g="g", **{f"x{k}": f"xs[{k}]" for k in range(len(inputs))})
    return eval(filled, dict(NAMES), local)


def _same_bits(got, want, what):
    if want is None:
        assert got is None, what
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    assert got.tobytes() == want.tobytes(), what


def _nodes(outs):
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    return [t for t in ag.walk_graph(outs) if t._op is not None]


def _check_node(node, rng):
    op, inputs = node._op, [i._data for i in node._inputs]
    checked = 0
    text = replay_texts.for_node(op, "inline_forward", node, *inputs)
    if text is not None:
        _same_bits(_evaluate(text, node, inputs), op.forward(node, *inputs), f"{op.name} kernel")
        checked += 1
    g = rng.standard_normal(node.shape).astype(node.dtype)
    rule = replay_texts.for_node(op, "inline_backward", node)
    if rule is not None:
        want = op.backward(g, node, ArrayMath)
        for k, expr in enumerate(rule):
            if expr is not None and node._inputs[k].requires_grad:
                _same_bits(_evaluate(expr, node, inputs, g), want[k], f"{op.name} rule {k}")
                checked += 1
    split = replay_texts.for_node(op, "inline_split", node)
    if split is not None:
        want_grads, want_left, want_right = op.backward_split(g, node)
        grads, left, right = split
        for k, expr in enumerate(grads):
            if expr is not None and node._inputs[k].requires_grad:
                _same_bits(_evaluate(expr, node, inputs, g), want_grads[k],
                           f"{op.name} split {k}")
        _same_bits(_evaluate(left, node, inputs, g), want_left, f"{op.name} left")
        _same_bits(_evaluate(right, node, inputs, g), want_right, f"{op.name} right")
        checked += 1
    return checked


@pytest.mark.parametrize("case", CASES, ids=repr)
@settings(max_examples=5)
@given(data=st.data())
def test_every_inline_text_is_its_function_to_the_bit(case, data):
    ex = data.draw(case.strategy, label="example")
    leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in ex.arrays]
    rng = np.random.default_rng(0)
    for node in _nodes(ex.fn(*leaves)):
        _check_node(node, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_products_texts_follow_the_dtypes_they_cover(dtype):
    """Each product op, with and without a bias, in the dtypes its text covers and one it
    does not (a float32 weight with a float64 bias: no in-place add, so no text)."""
    rng = np.random.default_rng(1)
    x = ag.Tensor(rng.standard_normal((3, 4)).astype(dtype), requires_grad=True)
    w = ag.Tensor(rng.standard_normal((5, 4)).astype(dtype), requires_grad=True)
    b = ag.Tensor(rng.standard_normal(5).astype(dtype), requires_grad=True)
    wide = ag.Tensor(rng.standard_normal(5), requires_grad=True)  # float64
    outs = [ag.linear(x, w, b), ag.linear(x, w), ag.matmul(x, w.T), ag.addmm(b, x, w.T),
            ag.linear(x, w, wide), ag.addmm(wide, x, w.T)]
    checked = sum(_check_node(node, rng) for node in _nodes(outs))
    assert checked >= 10
    widened = [o for o in outs[-2:]]
    for o in widened:
        covered = replay_texts.for_node(o._op, "inline_forward", o,
                                       *[i._data for i in o._inputs]) is not None
        assert covered == (dtype == np.float64)


def test_a_subclass_with_its_own_kernel_or_rule_does_not_inherit_the_texts():
    class Doubled(ag.ops_registry["tanh"]):
        name = None

        @staticmethod
        def forward(out, x):
            return 2 * np.tanh(x)

    class Quiet(ag.ops_registry["tanh"]):
        name = None

        @staticmethod
        def backward(g, out, xp):
            return (g * 0,)

    assert Doubled.inline_forward is None and Doubled.inline_backward is not None
    assert Quiet.inline_backward is None and Quiet.inline_forward is not None
    linear = ag.ops_registry["linear"]

    class Split(linear):
        name = None

        @staticmethod
        def backward_split(g, out):
            return None

    assert Split.inline_split is None and Split.inline_forward is not None


class _Misnamed(ag.Op):
    name = None
    inline_forward = "np.negative({x0}) + {y}"  # {y} is nothing

    @staticmethod
    def forward(out, x):
        return np.negative(x) + 0

    @staticmethod
    def backward(g, out, xp):
        return (-g,)


def test_a_text_that_names_something_unknown_is_refused_with_the_ops_name():
    rng = np.random.default_rng(2)
    w = param(rng, 3)
    _Misnamed.name = "misnamed"  # for the message only (not registered)
    try:
        def fn():
            return record(_Misnamed, -w.data + 0, (w,)).sum()

        with pytest.raises(TypeError, match="misnamed.*inline_forward.*names 'y'"):
            check(fn, [w], calls=3)
    finally:
        _Misnamed.name = None


def test_the_generated_blocks_run_the_texts():
    rng = np.random.default_rng(3)
    u, w = param(rng, 3, 4), param(rng, 4, 4)
    xs = rng.standard_normal((6, 2, 3))

    def fn(xs):
        h, loss = ag.zeros((2, 4)), 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(xs[t] @ u + h @ w)
            loss = loss + (h * h).sum()
        return loss

    replay_codegen._forget()
    check(fn, [u, w], [(xs,)], calls=4, batch=False)
    sources = "".join("".join(lines) for _, _, lines, _ in
                      (replay_codegen.linecache.cache[n] for n in replay_codegen._files))
    assert "np.tanh(" in sources and ".dot(" in sources
    # tanh's rule is inline; in the loop's block its factor 1 - y^2 is computed for all the
    # steps at once and each step's gradient multiplied by its row
    assert "= one[F" in sources and "g * F" in sources and "enumerate(rows)" in sources


def test_a_declared_text_is_checked_when_the_class_is_made():
    with pytest.raises(TypeError, match="'badly'.*inline_backward.*names 'x1'"):
        class Badly(ag.Op):  # noqa: F841
            name = "badly"
            inputs = ("x",)
            saves = ()
            view = False
            rule = "g"
            hazard = None
            memory = ag.Memory()
            inline_backward = ("{g} * {x1}",)  # one input: {x1} is nothing

            @staticmethod
            def forward(out, x):
                return x

            @staticmethod
            def backward(g, out, xp):
                return (g,)
    assert "badly" not in ag.ops_registry


def _grads(ex, dtype=None):
    leaves = [ag.Tensor(a.copy() if dtype is None else a.astype(dtype), requires_grad=True)
              for a in ex.arrays]
    outs = ex.fn(*leaves)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    loss = outs[0].sum()
    for o in outs[1:]:
        loss = loss + o.sum()
    loss.backward()
    return [x.grad.numpy().copy() for x in leaves]


@pytest.mark.parametrize("case", CASES, ids=repr)
@settings(max_examples=5)
@given(data=st.data())
def test_the_sweeps_steps_give_the_rules_gradients_to_the_bit(case, data):
    """Eager mode runs an op whose rule is text through a generated step (the rule and the
    adding into each input in one function): the same bits as the rule and the general loop."""
    ex = data.draw(case.strategy, label="example")
    with_steps = _grads(ex)
    kept = {op: op.__dict__["sweep_step"] for op in ag.ops_registry.values()}
    try:
        for op in kept:
            op.sweep_step = None
        without = _grads(ex)
    finally:
        for op, step in kept.items():
            op.sweep_step = step
    for a, b in zip(with_steps, without):
        _same_bits(a, b, case)


def test_a_rule_put_in_place_of_a_texts_is_what_eager_mode_and_replay_run(monkeypatch):
    """A learner who swaps tanh's rule for their own sees their rule run, in eager mode and
    in a replay made afterwards: the text no longer describes the class's rule."""
    tanh = ag.ops_registry["tanh"]
    x = ag.Tensor(np.array([0.5, -1.0]), requires_grad=True)

    def doubled(g, out, xp):
        return (2 * (g - (g * xp.val(out)) * xp.val(out)),)

    ag.tanh(x).sum().backward()
    want = x.grad.numpy().copy()
    with monkeypatch.context() as m:
        m.setattr(tanh, "backward", staticmethod(doubled))
        assert replay_texts.for_node(tanh, "inline_backward", None) is None
        x.grad = None
        ag.tanh(x).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), 2 * want)
        step = ag.replay(lambda x: ag.tanh(x).sum())
        for _ in range(3):
            x.grad = None
            step(x).backward()
        np.testing.assert_array_equal(x.grad.numpy(), 2 * want)
    x.grad = None
    ag.tanh(x).sum().backward()  # the rule put back: the text (and its step) again
    np.testing.assert_array_equal(x.grad.numpy(), want)
    assert replay_texts.for_node(tanh, "inline_backward", None) is not None
    assert tanh.sweep_step[0] is tanh.backward and tanh.sweep_step[1] is not None


def test_a_rule_from_a_mixin_is_what_eager_mode_runs():
    """A mixin's rule ahead of tanh in the MRO replaces the rule: its text and step go."""
    mixin = type("Tripled", (), {"backward": staticmethod(lambda g, out, xp: (g * 3.0,))})
    op = type("Mixed", (mixin, ag.ops_registry["tanh"]), {"name": None})
    assert op.inline_backward is None and op.sweep_step is None
    assert op.inline_forward is not None  # the kernel is still tanh's
    x = ag.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    record(op, np.tanh(x.data), (x,)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_every_runner_of_a_text_knows_the_names_it_may_use():
    """The eager sweep's step, replay's blocks and the shape check share one namespace: a rule
    text naming `product` ran in replay but raised NameError in the eager sweep."""

    class ProductRule(ag.Op):  # a user op whose rule text names `product`, as Op allows
        name = "test_inline_texts_product_rule"
        inputs = ("x", "m")
        saves = ("x", "m")
        view = False
        rule = "d(x @ m) = (g m^T, x^T g)"
        hazard = None
        memory = ag.Memory()
        inline_backward = ("product({g}, {x1}.T)", "product({x0}.T, {g})")

        @staticmethod
        def forward(out, x, m):
            return product(x, m)

        @staticmethod
        def backward(g, out, xp):
            x, m = out._inputs
            return product(g, m._data.T), product(x._data.T, g)

    try:
        rng = np.random.default_rng(4)
        x = ag.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
        m = ag.Tensor(rng.standard_normal((3, 2)), requires_grad=True)

        def fn(x):
            return (record(ProductRule, product(x._data, m._data), (x, m)) * 2.0).sum()

        fn(x).backward()  # the eager step made from the text
        g = np.full((2, 2), 2.0)
        np.testing.assert_array_equal(x.grad.numpy(), g @ m.numpy().T)
        np.testing.assert_array_equal(m.grad.numpy(), x.numpy().T @ g)
        check(fn, [x, m], [(x,)], calls=4, batch=False)  # and replayed, bit for bit
    finally:
        ag.ops_registry.pop("test_inline_texts_product_rule")
