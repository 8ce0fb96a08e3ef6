"""Replay's operand order (replay_layout.py): a weight that many products share is copied once
per call into the order the BLAS runs faster, for the kernels only. Values and gradients stay
eager mode's (float64, 1e-12); the rules read the original; batch=False is untouched."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core import replay_layout
from autograd_core.ops.linalg import AddMM, Linear, MatMul

from .replay_checks import check, param

STEPS = 6


def rnn_loop(u, w, b, xs):
    """A user's loop: `w.T` is a transposed view, read by every step's product."""
    wt = w.T
    h = ag.zeros((xs.shape[1], w.shape[0]), dtype=xs.dtype)
    loss = 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ u + h @ wt + b)
        loss = loss + (h * h).sum()
    return loss


def layer_loop(w, xs):
    """Products through `ag.linear` (a weight in torch's (out, in) order)."""
    h = ag.zeros((xs.shape[1], w.shape[0]), dtype=xs.dtype)
    for t in range(xs.shape[0]):
        h = ag.tanh(ag.linear(h, w, xs[t]))
    return h.sum()


def _params(rng, hidden=5, size=3, dtype=np.float64):
    return [param(rng, size, hidden, dtype=dtype), param(rng, hidden, hidden, dtype=dtype),
            param(rng, hidden, dtype=dtype)]


def _copies(step):
    plan = next(iter(step.plans.values()))
    return [entry for entry in plan.program if entry[0]._op is replay_layout.CopyStep]


@pytest.fixture
def always(monkeypatch):
    """Every shared operand is copied into the order it does not have (as on a BLAS where
    that is faster), whatever this machine measures."""
    def other(program, places):
        k, i = places[0]
        return "F" if program[k][2][i]._data.flags.c_contiguous else "C"
    monkeypatch.setattr(replay_layout, "_faster_order", other)


def test_products_declare_their_layout_operands():
    assert MatMul.layout == (0, 1) and AddMM.layout == (1, 2) and Linear.layout == (0, 1)


def test_a_shared_transposed_weight_is_copied_once_and_gradients_stay_eager(always):
    rng = np.random.default_rng(0)
    params = _params(rng)
    xs = [(ag.Tensor(rng.standard_normal((STEPS, 2, 3))),),
          (ag.Tensor(rng.standard_normal((STEPS, 2, 3))),)]
    step = check(lambda x: rnn_loop(*params, x), params, xs, calls=5)
    copies = _copies(step)
    assert copies, "the shared weight was not copied"
    plan = next(iter(step.plans.values()))
    for copy, _, (source,), _ in copies:
        readers = [e for e in plan.program if any(x is copy for x in e[2])]
        assert len(readers) >= replay_layout.MIN_USES
        # the rules read the original: no node of the graph has the copy as an input
        assert all(all(x is not copy for x in e[0]._inputs) for e in readers)
        assert copy._data.flags.c_contiguous != source._data.flags.c_contiguous
        np.testing.assert_array_equal(copy._data, source._data)


def test_a_copy_follows_the_weight_changed_between_calls(always):
    rng = np.random.default_rng(1)
    params = _params(rng)
    xs = ag.Tensor(rng.standard_normal((STEPS, 2, 3)))

    def sgd(k):
        with ag.no_grad():
            for p in params:
                if p.grad is not None:
                    p -= 0.1 * p.grad

    step = check(lambda: rnn_loop(*params, xs), params, calls=6, between=sgd)
    assert _copies(step)


def test_linear_weights_and_leaf_operands_are_copied_before_their_first_use(always):
    rng = np.random.default_rng(2)
    w = param(rng, 4, 4)
    xs = ag.Tensor(rng.standard_normal((STEPS, 3, 4)))
    step = check(lambda: layer_loop(w, xs), [w], calls=4)
    plan = next(iter(step.plans.values()))
    copies = _copies(step)
    assert copies
    position = {id(e[0]): k for k, e in enumerate(plan.program)}
    for copy, _, _, _ in copies:
        first_reader = min(k for k, e in enumerate(plan.program) if any(x is copy for x in e[2]))
        assert position[id(copy)] < first_reader


def test_float32_loop_agrees_with_eager_within_rounding(always):
    rng = np.random.default_rng(3)
    params = _params(rng, hidden=16, size=8, dtype=np.float32)
    xs = ag.Tensor(rng.standard_normal((STEPS, 4, 8)).astype(np.float32))
    step = ag.replay(lambda: rnn_loop(*params, xs))
    for _ in range(4):
        for p in params:
            p.grad = None
        got = step()
        got.backward()
        got_grads = [p.grad.numpy().copy() for p in params]
        for p in params:
            p.grad = None
        want = rnn_loop(*params, xs)
        want.backward()
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)
        for g, p in zip(got_grads, params):
            np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert _copies(step)


def test_batch_false_copies_nothing(always):
    rng = np.random.default_rng(4)
    params = _params(rng)
    xs = ag.Tensor(rng.standard_normal((STEPS, 2, 3)))
    step = check(lambda: rnn_loop(*params, xs), params, calls=4, batch=False)
    assert not _copies(step)


def test_too_few_uses_copy_nothing(always):
    rng = np.random.default_rng(5)
    params = _params(rng)
    xs = ag.Tensor(rng.standard_normal((replay_layout.MIN_USES - 1, 2, 3)))
    step = check(lambda: rnn_loop(*params, xs), params, calls=4)
    assert not _copies(step)


def test_the_measured_choice_keeps_an_order_that_does_not_pay():
    """Without the fixture the order is measured: a product whose operand is already in the
    faster order, or too small to pay its copy, is left alone; either way values agree."""
    rng = np.random.default_rng(6)
    params = _params(rng)
    xs = ag.Tensor(rng.standard_normal((STEPS, 2, 3)))
    step = check(lambda: rnn_loop(*params, xs), params, calls=4)
    for copy, _, (source,), _ in _copies(step):
        np.testing.assert_array_equal(copy._data, source._data)


def test_an_op_with_its_own_kernel_does_not_inherit_layout():
    class ScaledMatMul(MatMul):
        name = None  # abstract: not registered

        @staticmethod
        def forward(out, a, b):
            return 2 * np.matmul(a, b)

    assert ScaledMatMul.layout == ()


class _Shell:
    def __init__(self, data):
        self._data = data


def test_an_order_whose_product_has_other_bits_is_never_taken(monkeypatch):
    """The choice is made by timing; where the other order changes the product's bits (a BLAS
    summing in another order), taking it would make values differ from run to run. (The
    timing is replaced by a fixed cost: the contiguous order ten times faster.)"""
    rng = np.random.default_rng(7)
    a, w = _Shell(rng.standard_normal((32, 64))), _Shell(rng.standard_normal((64, 64)).T)
    monkeypatch.setattr(replay_layout, "_cost",
                        lambda kernel, s, arrays: 0.1 if arrays[1].flags.c_contiguous else 1.0)

    def other_bits(out, x, y):
        return np.matmul(x, y) + (1e-12 if y.flags.c_contiguous else 0.0)

    def same_bits(out, x, y):
        return np.matmul(x, np.ascontiguousarray(y))

    places = [(0, 1)] * 1000
    assert replay_layout._faster_order([(_Shell(None), other_bits, (a, w), 2)], places) is None
    assert replay_layout._faster_order([(_Shell(None), same_bits, (a, w), 2)], places) == "C"
