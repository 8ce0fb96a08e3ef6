"""A learner's op that gives its rule as text: the eager sweep runs the text in place of the
rule, so the first time it does, the text is held to the rule on that node; one that says
something else is refused, naming the op, before any .grad is written."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core import Memory, Op, record, sweep_steps
from tests.finite_differences import central_differences


def _square(text, rule_factor=2.0, calls=None):
    class Square(Op):
        name = None
        inputs = ("x",)
        saves = ("x",)
        view = False
        rule = "d x^2 = 2 x g"
        hazard = None
        memory = Memory()
        inline_backward = text

        @staticmethod
        def forward(out, x):
            return x * x

        @staticmethod
        def backward(g, out, xp):
            if calls is not None:
                calls.append(1)
            return (g * (rule_factor * xp.val(out._inputs[0])),)

    return Square


X0 = np.array([1.5, -2.0, 0.25])


def _grad(op, x0=X0, w=None):
    x = ag.Tensor(x0.copy(), requires_grad=True)
    y = record(op, x._data * x._data, (x,))
    (y if w is None else y * w).sum().backward()
    return x


def test_a_text_that_says_what_its_rule_does_runs_with_the_rules_bits():
    calls = []
    Square = _square(("{g} * (2.0 * {x0})",), calls=calls)
    first = _grad(Square).grad.numpy()
    assert calls == [1]  # held to the rule on the first node, once
    again = _grad(Square).grad.numpy()
    assert calls == [1]  # then the text runs alone
    want = central_differences(lambda x: (x * x).sum(), [X0], 0)
    np.testing.assert_allclose(first, want, rtol=1e-8, atol=1e-8)
    assert first.tobytes() == again.tobytes() == (2.0 * X0).tobytes()


@pytest.mark.parametrize("text", [("{g} * (3.0 * {x0})",), ("{g} * 2.0 * {x0} * {x0}",), (None,),
                                  ("{g}",)])
def test_a_text_that_says_something_else_is_refused_before_any_grad_is_written(text):
    Square = _square(text)
    w = ag.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="inline_backward text of op 'Square' for input 0.*"
                                           "gives other values than its backward"):
        _grad(Square, w=w)
    assert w.grad is None  # nothing written: the sweep stopped before its end


def test_a_text_refused_on_one_call_is_asked_again_on_the_next():
    """The step is kept only once its text agreed (a node whose input needs no gradient
    asks nothing of it)."""
    Square = _square(("{g} * (3.0 * {x0})",))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="gives other values"):
            _grad(Square)


def test_a_text_that_differs_in_bits_only_is_refused_too():
    """(g * 3) * x and g * (3 * x) round differently: the text must make the rule's calls in
    the rule's order (README), so that eager mode's gradients keep their bits."""
    Square = _square(("{g} * 3.0 * {x0}",), rule_factor=3.0)
    rng = np.random.default_rng(5)
    x0, g = rng.standard_normal(64), rng.standard_normal(64)
    assert ((g * 3.0) * x0).tobytes() != (g * (3.0 * x0)).tobytes()
    x = ag.Tensor(x0.copy(), requires_grad=True)
    with pytest.raises(RuntimeError, match="gives other values"):
        (record(Square, x0 * x0, (x,)) * ag.Tensor(g)).sum().backward()


def test_this_packages_texts_are_not_asked_again(monkeypatch):
    """A subclass of tanh keeps tanh's text, held to its rule by the tests: the sweep asks
    nothing of it (the rule is not run beside the step)."""
    class T(ag.ops_registry["tanh"]):
        name = None

    ran = []
    monkeypatch.setattr(sweep_steps.ArrayMath, "val", lambda t: ran.append(1) or t._data)
    x = ag.Tensor(X0.copy(), requires_grad=True)
    record(T, np.tanh(x._data), (x,)).sum().backward()
    assert ran == [] and T.eager_step is T.sweep_step[1]
    np.testing.assert_array_equal(x.grad.numpy(), 1 - np.tanh(X0) * np.tanh(X0))
