"""Review 30: nn.cross_entropy's early checks (the empty-batch mean refused before anything is
recorded, targets checked before log_softmax) against the parent 8d5cac2's behaviour.

What is checked:
- logits whose batch is empty and whose targets have the right shape: reduction="mean" is
  refused with the named empty-batch error on every path (the one-node loss, weight=, axis=0,
  probability targets; the parent returned NaN with warnings on the weighted path), while
  "sum" and "none" still work (0.0 and an empty loss, in the logits' dtype);
- logits with zero classes ((3, 0), (2, 4, 0), 1-D (0,)) and an empty target of the wrong
  shape get the shape error, not the empty-batch one (they hold 3, 8 and 1 rows); an empty
  target of the wrong shape ((0, 3) for logits (0, 3)) gets the shape error; an empty bool
  target gets the TypeError every other bool target gets;
- ag.mean_softmax_cross_entropy's errors: 1-D logits are told they need a row and a class
  axis; 2-D logits with a wrong target get the target's shape error alone;
- an `axis` out of range is refused (it was taken modulo the logits' rank: axis=5 on 2-D
  logits silently meant axis=1), as numpy and torch refuse it.
"""
import numpy as np
import pytest

import autograd_core as ag
import nn

EMPTY_MEAN = "the mean over an empty batch is undefined"


def _logits(shape, dtype=np.float32):
    return ag.Tensor(np.zeros(shape, dtype), requires_grad=True)


# ---- what works: an empty batch with well-formed targets --------------------------------

@pytest.mark.parametrize("shape", [(0, 3), (0, 4, 3), (2, 0, 3)])
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 3.0]])
def test_the_mean_of_an_empty_batch_is_refused_by_name(shape, weight):
    with pytest.raises(ValueError, match=EMPTY_MEAN):
        nn.cross_entropy(_logits(shape), np.zeros(shape[:-1], np.int64), weight=weight)


def test_the_mean_of_an_empty_batch_is_refused_for_probability_targets_and_axis_0():
    with pytest.raises(ValueError, match=EMPTY_MEAN):
        nn.cross_entropy(_logits((0, 3)), np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match=EMPTY_MEAN):  # classes on axis 0, no rows
        nn.cross_entropy(_logits((3, 0)), np.zeros((0,), np.int64), axis=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 3.0]])
def test_sum_and_none_of_an_empty_batch_still_work(dtype, weight):
    target = np.zeros((0,), np.int64)
    total = nn.cross_entropy(_logits((0, 3), dtype), target, reduction="sum", weight=weight)
    assert total.shape == () and total.dtype == dtype and total.item() == 0.0
    each = nn.cross_entropy(_logits((0, 3), dtype), target, reduction="none", weight=weight)
    assert each.shape == (0,) and each.dtype == dtype


# ---- the bugs ----------------------------------------------------------------------------

ZERO_CLASS_CASES = [
    ((3, 0), (0,), r"target shape \(0,\) does not match input shape \(3, 0\)"),
    ((2, 4, 0), (0,), r"target shape \(0,\) does not match input shape \(2, 4, 0\)"),
    ((0,), (0,), r"target shape \(0,\) does not match input shape \(0,\)"),
]


@pytest.mark.parametrize("shape, target_shape, message", ZERO_CLASS_CASES)
def test_zero_classes_with_a_wrong_target_get_the_shape_error_with_sum(shape, target_shape,
                                                                        message):
    # the reference: the same call with reduction="sum" (and the parent with "mean")
    with pytest.raises(ValueError, match=message):
        nn.cross_entropy(_logits(shape), np.zeros(target_shape, np.int64), reduction="sum")


@pytest.mark.parametrize("shape, target_shape, message", ZERO_CLASS_CASES)
def test_zero_classes_with_a_wrong_target_get_the_shape_error_with_mean(shape, target_shape,
                                                                         message):
    with pytest.raises(ValueError, match=message):
        nn.cross_entropy(_logits(shape), np.zeros(target_shape, np.int64))


def test_an_empty_target_of_the_wrong_shape_gets_the_shape_error():
    with pytest.raises(ValueError, match=r"target shape \(0, 3\) does not match"):
        nn.cross_entropy(_logits((0, 3)), np.zeros((0, 3), np.int64))


def test_a_bool_target_is_a_type_error_with_sum():
    for shape in [(4, 3), (0, 3)]:
        with pytest.raises(TypeError, match="class targets must be integers, got dtype bool"):
            nn.cross_entropy(_logits(shape), np.zeros(shape[:-1], bool), reduction="sum")
    with pytest.raises(TypeError, match="class targets must be integers, got dtype bool"):
        nn.cross_entropy(_logits((4, 3)), np.zeros((4,), bool))


def test_an_empty_bool_target_is_a_type_error_with_mean():
    with pytest.raises(TypeError, match="class targets must be integers, got dtype bool"):
        nn.cross_entropy(_logits((0, 3)), np.zeros((0,), bool))


@pytest.mark.parametrize("axis", [2, 5, -3])
def test_an_axis_out_of_range_is_refused(axis):
    rng = np.random.default_rng(0)
    # square logits: whichever axis the wrapped-around one is, the targets fit it
    logits = ag.Tensor(rng.standard_normal((3, 3)).astype(np.float32))
    with pytest.raises((ValueError, IndexError)):
        nn.cross_entropy(logits, np.array([0, 2, 1]), axis=axis)


def test_the_one_node_loss_names_1d_logits_as_the_problem():
    with pytest.raises(ValueError, match="logits need a row and a class axis"):
        ag.mean_softmax_cross_entropy(np.zeros(5, np.float32), np.int64(1))


def test_the_one_node_loss_does_not_blame_2d_logits_for_a_wrong_target():
    with pytest.raises(ValueError, match=r"target shape \(4,\)") as caught:
        ag.mean_softmax_cross_entropy(np.zeros((3, 5), np.float32), np.zeros(4, np.int64))
    assert "logits need a row and a class axis" not in str(caught.value)
