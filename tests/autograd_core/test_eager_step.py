"""Op.eager_step: what the eager sweep runs for a node, kept in line with `sweep_step` and
`backward` by the op classes' class (function._OpClass) whenever either is set or deleted on
an op class or a parent of it. A rule put in place must run, and the text's step must come
back when the rule it was made for is put back."""
from unittest import mock

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.ops.unary import Tanh


def _tanh_grad(x0):
    x = ag.Tensor(np.array(x0, dtype=np.float64), requires_grad=True)
    ag.tanh(x).sum().backward()
    return x.grad.numpy()


X0 = [-1.5, 0.0, 0.25, 2.0]
EXACT = 1 - np.tanh(np.array(X0)) ** 2


def _doubled(g, out, xp):
    return (2 * g * (1 - xp.val(out) ** 2),)


def test_the_step_is_kept_after_the_first_backward():
    np.testing.assert_allclose(_tanh_grad(X0), EXACT, rtol=1e-15)
    assert Tanh.eager_step is Tanh.sweep_step[1]
    assert Tanh.eager_step.__name__ == "step"  # made, no longer the stand-in
    assert Tanh.sweep_step[0] is Tanh.backward


def test_a_rule_put_in_place_runs_and_the_step_comes_back():
    _tanh_grad(X0)
    original = Tanh.__dict__["backward"]
    step = Tanh.eager_step
    Tanh.backward = staticmethod(_doubled)
    try:
        assert Tanh.eager_step is None
        np.testing.assert_allclose(_tanh_grad(X0), 2 * EXACT, rtol=1e-15)
    finally:
        Tanh.backward = original
    assert Tanh.eager_step is step
    np.testing.assert_array_equal(_tanh_grad(X0), EXACT)


def test_mock_patch_sets_and_restores():
    _tanh_grad(X0)
    step = Tanh.eager_step
    with mock.patch.object(Tanh, "backward", staticmethod(_doubled)):
        assert Tanh.eager_step is None
        np.testing.assert_allclose(_tanh_grad(X0), 2 * EXACT, rtol=1e-15)
    assert Tanh.eager_step is step
    np.testing.assert_array_equal(_tanh_grad(X0), EXACT)




def test_a_parents_rule_replaced_reaches_a_subclass_that_inherits_it(unregister):
    class ScaledTanh(Tanh):  # inherits Tanh's rule and text
        name = "test_eager_step_inherits"

    unregister(ScaledTanh.name)

    def scaled(x):
        return ag.function.record(ScaledTanh, np.tanh(x._data), (x,))

    def grad_of(fn):
        x = ag.Tensor(np.array(X0), requires_grad=True)
        fn(x).sum().backward()
        return x.grad.numpy()

    np.testing.assert_array_equal(grad_of(scaled), EXACT)
    assert ScaledTanh.eager_step is ScaledTanh.sweep_step[1]
    original = Tanh.__dict__["backward"]
    Tanh.backward = staticmethod(_doubled)
    try:
        assert ScaledTanh.eager_step is None and Tanh.eager_step is None
        np.testing.assert_allclose(grad_of(scaled), 2 * EXACT, rtol=1e-15)
    finally:
        Tanh.backward = original
    assert ScaledTanh.eager_step is not None
    np.testing.assert_array_equal(grad_of(scaled), EXACT)


def test_a_subclass_rule_put_in_and_deleted(unregister):
    class OwnRule(Tanh):
        name = "test_eager_step_own_rule"

    unregister(OwnRule.name)

    OwnRule.backward = staticmethod(_doubled)  # its own rule: no step
    assert OwnRule.eager_step is None and Tanh.eager_step is not None
    del OwnRule.backward  # Tanh's rule again: the inherited step serves
    assert OwnRule.eager_step is OwnRule.sweep_step[1]


def test_no_step_where_sweep_step_is_taken_away():
    _tanh_grad(X0)
    kept = Tanh.__dict__["sweep_step"]
    Tanh.sweep_step = None
    try:
        assert Tanh.eager_step is None
        np.testing.assert_array_equal(_tanh_grad(X0), EXACT)  # the general path, same bits
    finally:
        Tanh.sweep_step = kept
    assert Tanh.eager_step is kept[1]


@pytest.mark.parametrize("name", ["mul", "add", "tanh", "sigmoid", "exp", "linear"])
def test_every_registered_op_agrees(name):
    op = ag.ops_registry[name]
    made = op.sweep_step
    expected = made[1] if made is not None and made[0] is op.backward else None
    assert op.eager_step is expected
