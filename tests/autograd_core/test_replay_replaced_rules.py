"""ag.replay while an op's rule or kernel is replaced (a learner's own, a test's mock): the
replayed calls give eager mode's gradients bit for bit, batched or not, through every rewrite
replay makes (grouped copies, summed chains, fused products, states written into a buffer),
and once the rule is put back they give the plain rule's again. (A kernel, `forward`, is
replay's alone: eager mode computes in the op's function.)"""
from unittest import mock

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.ops.arithmetic import Add, AddScalar
from autograd_core.ops.indexing import GetItem
from autograd_core.ops.joining import Stack
from autograd_core.ops.linalg import AddMM, MatMul
from autograd_core.ops.reductions import Sum
from autograd_core.ops.unary import Tanh
from tests.finite_differences import central_differences
from tests.autograd_core.replaced_rules import loop_sum, scaled_rule as _scaled

RNG = np.random.default_rng(35)
XS = RNG.standard_normal((6, 2, 3))
U, W, V = (RNG.standard_normal((3, 3)) for _ in range(3))


def loop_stacked(xs, u, w, v):
    """The states stacked for an output layer (replay writes them into one buffer)."""
    h, states = ag.zeros((2, 3), dtype=np.float64), []
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ u + h @ w)
        states.append(h)
    return (ag.tanh(ag.stack(states) @ v) ** 2).sum()


USED = {loop_sum: {MatMul, Tanh, GetItem, Add, Sum, AddScalar},  # (0.0 + the first term)
        loop_stacked: {MatMul, Tanh, GetItem, Add, Sum, Stack}}


def _grads(fn):
    leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in (XS, U, W, V)]
    fn(*leaves).backward()
    return [None if t.grad is None else t.grad.numpy() for t in leaves]


def _assert_bits(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fn", [loop_sum, loop_stacked])
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("op", [MatMul, Tanh, GetItem, Add, Sum, Stack, AddScalar])
def test_replay_under_a_replaced_rule_gives_eager_modes_bits(op, batch, fn):
    plain = _grads(fn)
    with mock.patch.object(op, "backward", _scaled(op, 3.0)):
        eager = _grads(fn)
        step = ag.replay(fn, batch=batch)
        replayed = [_grads(step) for _ in range(4)]  # recorded, confirmed, replayed twice
    for got in replayed:
        _assert_bits(got, eager)
    if op in USED[fn]:  # the replaced rule mattered
        assert not all(np.allclose(a, b) for a, b in zip(eager, plain))
    if op in USED[fn]:  # the rule put back: recorded again, and the plain bits again
        with pytest.warns(ag.ReplayWarning, match="was replaced since it was recorded"):
            again = [_grads(step) for _ in range(3)]
    else:  # a plan that runs no node of the op is still the function's
        again = [_grads(step) for _ in range(3)]
    for got in again:
        _assert_bits(got, plain)


@pytest.mark.parametrize("batch", [True, False])
def test_a_replaced_addmm_rule_is_not_brought_in_by_fusing(batch):
    """eager mode runs no addmm here (h @ w and the sum are two nodes); replay fuses them
    into one only while addmm's rule is the declared one."""
    plain = _grads(loop_sum)
    with mock.patch.object(AddMM, "backward", _scaled(AddMM, 3.0)), \
            mock.patch.object(AddMM, "backward_split", None):
        assert AddMM.fast_backward is None
        step = ag.replay(loop_sum, batch=batch)
        for got in [_grads(step) for _ in range(4)]:
            _assert_bits(got, plain)


def test_the_replaced_rule_is_the_one_finite_differences_see_scaled():
    """The gradients replay gives under a tripled tanh rule are 3^k times finite differences
    along each path: checked on one step, where every path crosses tanh once."""
    def one_step(xs, u, w, v):
        return (ag.tanh(xs[0] @ u) @ v).sum()

    with mock.patch.object(Tanh, "backward", _scaled(Tanh, 3.0)):
        step = ag.replay(one_step)
        got = [_grads(step) for _ in range(3)][-1]
    fd = central_differences(lambda x, u: (np.tanh(x[0] @ u) @ V).sum(), [XS, U], 1)
    np.testing.assert_allclose(got[1], 3 * fd, rtol=1e-6, atol=1e-8)
