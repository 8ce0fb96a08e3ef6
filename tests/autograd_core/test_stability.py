"""Numerical stability: huge logits, saturated sigmoids, the subgradients documented at 0 and
ties in max/min give finite values and finite gradients equal to their closed forms."""
import math
import warnings

import numpy as np
import pytest

import autograd_core as ag
import nn

# Overflow, division by zero and invalid operations raise; underflow to 0 is the expected
# (and harmless) result of exp of a very negative number.
STRICT = dict(over="raise", divide="raise", invalid="raise", under="ignore")

E1 = math.exp(-1.0)
LOG1PE = math.log1p(E1)  # log(1 + e^-1)
# Logits of magnitude 1e4 (exactly representable in float32, as is 1e4 - 1).
LOGITS = np.array([[1e4, 1e4 - 1, -1e4],
                   [-1e4, 0.0, 1e4]], dtype=np.float32)
# Their softmax along the last axis, in closed form (e^-1e4 and e^-2e4 are 0 in float64).
PROBS = np.array([[1 / (1 + E1), E1 / (1 + E1), 0.0],
                  [0.0, 0.0, 1.0]])
LOG_PROBS = np.array([[-LOG1PE, -1 - LOG1PE, -2e4 - LOG1PE],
                      [-2e4, -1e4, 0.0]])
W = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=np.float32)


def _leaf(a):
    return ag.Tensor(np.array(a), requires_grad=True)


def _op_names(root):
    """Names of every op in the graph behind `root` (walked iteratively via _inputs)."""
    names, seen, stack = [], {id(root)}, [root]
    while stack:
        t = stack.pop()
        if t._op is None:
            continue
        names.append(t._op.name)
        for i in t._inputs:
            if id(i) not in seen:
                seen.add(id(i))
                stack.append(i)
    return names


def _finite(*arrays):
    for a in arrays:
        assert np.isfinite(np.asarray(a)).all(), a


# ---- softmax family with logits of 1e4 in float32 --------------------------------------------
def test_softmax_of_huge_logits():
    x = _leaf(LOGITS)
    with np.errstate(**STRICT):
        y = ag.softmax(x, axis=-1)
        (y * W).sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    _finite(y.data, x.grad.data)
    np.testing.assert_allclose(y.data, PROBS, rtol=1e-6, atol=1e-7)
    expected = PROBS * (W - (W * PROBS).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-5, atol=1e-7)


def test_log_softmax_of_huge_logits():
    x = _leaf(LOGITS)
    with np.errstate(**STRICT):
        y = ag.log_softmax(x, axis=-1)
        (y * W).sum().backward()
    _finite(y.data, x.grad.data)
    np.testing.assert_allclose(y.data, LOG_PROBS, rtol=1e-6, atol=1e-6)
    expected = W - PROBS * W.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-5, atol=1e-6)


def test_logsumexp_of_huge_logits_per_row_and_overall():
    x = _leaf(LOGITS)
    v = np.array([2.0, -3.0], dtype=np.float32)
    with np.errstate(**STRICT):
        rows = ag.logsumexp(x, axis=1)
        (rows * v).sum().backward()
    _finite(rows.data, x.grad.data)
    np.testing.assert_allclose(rows.data, [1e4 + LOG1PE, 1e4], rtol=1e-7)
    np.testing.assert_allclose(x.grad.data, v[:, None] * PROBS, rtol=1e-5, atol=1e-7)

    x = _leaf(LOGITS)
    with np.errstate(**STRICT):
        total = ag.logsumexp(x)
        total.backward()
    # Two entries equal 1e4 and one 1e4 - 1; the rest contribute e^-1e4 = 0.
    np.testing.assert_allclose(total.item(), 1e4 + math.log(2 + E1), rtol=1e-7)
    top = 1 / (2 + E1)
    expected = np.array([[top, E1 * top, 0.0], [0.0, 0.0, top]])
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-5, atol=1e-7)


def test_cross_entropy_of_huge_logits_with_class_and_probability_targets():
    x = _leaf(LOGITS)
    target = np.array([2, 0])  # the classes with probability ~e^-2e4
    with np.errstate(**STRICT):
        loss = nn.cross_entropy(x, target)
        loss.backward()
    _finite(loss.data, x.grad.data)
    np.testing.assert_allclose(loss.item(), (2e4 + LOG1PE + 2e4) / 2, rtol=1e-6)
    onehot = np.eye(3)[target]
    np.testing.assert_allclose(x.grad.data, (PROBS - onehot) / 2, rtol=1e-5, atol=1e-7)

    x = _leaf(LOGITS)
    soft = np.array([[0.25, 0.25, 0.5], [0.5, 0.0, 0.5]], dtype=np.float32)
    with np.errstate(**STRICT):
        loss = nn.cross_entropy(x, soft, reduction="sum")
        loss.backward()
    _finite(loss.data, x.grad.data)
    np.testing.assert_allclose(loss.item(), -(soft * LOG_PROBS).sum(), rtol=1e-6)
    np.testing.assert_allclose(x.grad.data, PROBS - soft, rtol=1e-5, atol=1e-7)


def test_binary_cross_entropy_with_huge_logits():
    x = _leaf(np.array([1e4, -1e4, 1e4, -1e4], dtype=np.float32))
    y = np.array([0.0, 1.0, 1.0, 0.0], dtype=np.float32)
    with np.errstate(**STRICT):
        loss = nn.binary_cross_entropy_with_logits(x, y, reduction="sum")
        loss.backward()
    _finite(loss.data, x.grad.data)
    np.testing.assert_allclose(loss.item(), 2e4, rtol=1e-7)
    np.testing.assert_allclose(x.grad.data, [1.0, -1.0, 0.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("y", [0.0, 0.25, 1.0])
def test_binary_cross_entropy_gradient_at_logit_zero_is_sigmoid_minus_target(y):
    # The loss is smooth at x = 0 (it is softplus(x) - x y); its derivative there is 1/2 - y.
    x = _leaf([0.0, 0.0])
    target = np.full(2, y)
    nn.binary_cross_entropy_with_logits(x, target, reduction="sum").backward()
    np.testing.assert_allclose(x.grad.data, [0.5 - y, 0.5 - y], rtol=1e-12)
    assert ag.gradcheck(lambda t: nn.binary_cross_entropy_with_logits(t, target), [np.zeros(2)])


# ---- sigmoid saturates without overflow warnings -----------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_at_plus_minus_1000_without_warnings(dtype):
    x = ag.Tensor(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0], dtype=dtype), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            s = ag.sigmoid(x)
            s.sum().backward()
    _finite(s.data, x.grad.data)
    e30 = math.exp(-30)
    expected = np.array([0.0, e30 / (1 + e30), 0.5, 1 / (1 + e30), 1.0])
    slope = np.array([0.0, e30 / (1 + e30) ** 2, 0.25, e30 / (1 + e30) ** 2, 0.0])
    # Absolute precision of the dtype near 1 (the derivative is computed from the output).
    atol = 2 * np.finfo(dtype).eps
    np.testing.assert_allclose(s.data, expected, rtol=1e-6, atol=atol)
    assert s.data[0] == 0.0 and s.data[-1] == 1.0
    np.testing.assert_allclose(x.grad.data, slope, rtol=1e-5, atol=atol)
    assert x.grad.data[0] == 0.0 and x.grad.data[-1] == 0.0 and x.grad.data[2] == 0.25


# ---- the library's losses go through log_softmax ------------------------------------------------
def _assert_log_softmax_not_log_of_softmax(loss):
    # log-probabilities come from log_softmax, or from the fused softmax_cross_entropy ops
    # (which take log-sum-exp of the shifted logits), never from log(softmax(x))
    names = _op_names(loss)
    assert {"log_softmax", "softmax_cross_entropy", "mean_softmax_cross_entropy"} & set(names), \
        names
    assert "log" not in names and "softmax" not in names, names


def test_cross_entropy_graph_has_log_softmax_and_no_log():
    logits = _leaf(np.random.default_rng(0).standard_normal((4, 3)))
    _assert_log_softmax_not_log_of_softmax(nn.cross_entropy(logits, np.array([0, 2, 1, 1])))
    soft = np.full((4, 3), 1 / 3)
    _assert_log_softmax_not_log_of_softmax(nn.cross_entropy(logits, soft))
    _assert_log_softmax_not_log_of_softmax(
        nn.cross_entropy(logits, np.array([0, 2, 1, 1]), weight=np.array([1.0, 2.0, 0.5])))


def test_sequence_losses_and_the_classifier_go_through_log_softmax():
    rng = np.random.default_rng(1)
    logits = _leaf(rng.standard_normal((3, 2, 4)))
    targets = rng.integers(0, 4, (3, 2))
    _assert_log_softmax_not_log_of_softmax(
        nn.sequence_cross_entropy(logits, targets, step_weights=[0.1, 0.1, 0.8]))
    model = nn.RecurrentClassifier(2, 3, 4, cell="gru", rng=0, dtype=np.float64)
    loss = model.loss(rng.standard_normal((3, 2, 2)), targets)
    _assert_log_softmax_not_log_of_softmax(loss)


def test_binary_cross_entropy_never_takes_log_of_a_sigmoid():
    logits = _leaf(np.array([-3.0, 0.5, 4.0]))
    names = _op_names(nn.binary_cross_entropy_with_logits(logits, np.array([0.0, 1.0, 1.0])))
    assert "sigmoid" not in names and "softmax" not in names, names


# ---- subgradients at 0 ----------------------------------------------------------------------
def test_sqrt_abs_relu_at_zero_use_the_documented_subgradient_0():
    x = _leaf([0.0, 4.0])
    with np.errstate(**STRICT):
        ag.sqrt(x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.25])
    x = _leaf([-2.0, 0.0, 3.0])
    ag.abs(x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [-1.0, 0.0, 1.0])
    x = _leaf([-2.0, 0.0, 3.0])
    ag.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 1.0])


@pytest.mark.parametrize("square", [lambda x: x ** 2, lambda x: x * x, lambda x: ag.abs(x) ** 2])
def test_euclidean_norm_at_zero_has_gradient_zero_not_nan(square):
    x = _leaf(np.zeros(3))
    with np.errstate(**STRICT):
        norm = ag.sqrt(square(x).sum())
        norm.backward()
    assert norm.item() == 0.0
    np.testing.assert_array_equal(x.grad.data, np.zeros(3))
    x = _leaf([3.0, 4.0, 0.0])
    ag.sqrt(square(x).sum()).backward()
    np.testing.assert_allclose(x.grad.data, [0.6, 0.8, 0.0], rtol=1e-12)


# ---- pow with a zero base and a fractional exponent -----------------------------------------------
@pytest.mark.parametrize("make_exponent", [lambda e: e, lambda e: ag.Tensor(np.array(e))],
                         ids=["number", "tensor"])
@pytest.mark.parametrize("e", [0.5, 0.25, 1.5, 2.0])
def test_pow_of_zero_base_is_finite(make_exponent, e):
    x = _leaf([0.0, 4.0])
    with np.errstate(**STRICT):
        y = x ** make_exponent(e)
        y.sum().backward()
    _finite(y.data, x.grad.data)
    np.testing.assert_allclose(y.data, [0.0, 4.0 ** e], rtol=1e-12)
    # d/dx x^e = e x^(e-1): 0 at x = 0 for e > 1 exactly, and by convention (as sqrt) for e < 1.
    np.testing.assert_allclose(x.grad.data, [0.0, e * 4.0 ** (e - 1)], rtol=1e-12)


def test_pow_with_a_trainable_exponent_at_zero_base():
    x = _leaf([0.0, 4.0])
    e = ag.Tensor(np.array(0.5), requires_grad=True)
    with np.errstate(**STRICT):
        (x ** e).sum().backward()
    np.testing.assert_allclose(x.grad.data, [0.0, 0.25], rtol=1e-12)
    # d/de sum x^e = sum x^e log x, the x = 0 term taken as its limit 0.
    np.testing.assert_allclose(e.grad.item(), 2.0 * math.log(4.0), rtol=1e-12)


# ---- max / min with ties ----------------------------------------------------------------------------
def test_max_and_min_split_the_gradient_among_ties():
    x = _leaf([1.0, 3.0, 3.0, 2.0])
    ag.max(x).backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.5, 0.5, 0.0])
    x = _leaf([[5.0, 5.0, 5.0], [1.0, 2.0, 0.0]])
    (ag.max(x, axis=1) * np.array([3.0, 2.0])).sum().backward()
    np.testing.assert_allclose(x.grad.data, [[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]], rtol=1e-15)
    x = _leaf([[0.0, 4.0], [0.0, -1.0]])
    ag.min(x, axis=0).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [[0.5, 0.0], [0.5, 1.0]])


def test_maximum_and_minimum_halve_ties():
    a, b = _leaf([1.0, 2.0, 3.0]), _leaf([1.0, 5.0, 0.0])
    ag.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(b.grad.data, [0.5, 1.0, 0.0])
    a, b = _leaf([1.0, 2.0, 3.0]), _leaf([1.0, 5.0, 0.0])
    ag.minimum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(b.grad.data, [0.5, 0.0, 1.0])


def test_max_and_min_match_finite_differences_away_from_ties():
    rng = np.random.default_rng(3)
    x = rng.permutation(24).reshape(2, 3, 4) * 0.37 - 4.0  # distinct values, gaps >> eps
    for fn in (lambda t: ag.max(t), lambda t: ag.max(t, axis=1), lambda t: ag.min(t, axis=(0, 2)),
               lambda t: ag.max(t, axis=-1, keepdims=True)):
        assert ag.gradcheck(fn, [x])
    a, b = rng.standard_normal(5), rng.standard_normal(5)
    assert ag.gradcheck(lambda p, q: ag.maximum(p, q), [a, b])
    assert ag.gradcheck(lambda p, q: ag.minimum(p, q), [a, b])


def test_a_two_way_tie_split_equals_the_central_difference():
    # At a tie of two elements the central difference of max is exactly 1/2 for each.
    assert ag.gradcheck(lambda t: ag.max(t), [np.array([1.0, 3.0, 3.0, 2.0])])
    assert ag.gradcheck(lambda p, q: ag.maximum(p, q), [np.array([1.0, 2.0]), np.array([1.0, 2.0])])
