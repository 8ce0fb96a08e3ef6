"""The cheaper paths a training step's loss takes: the class range check in one pass over an
unsigned view of signed targets (where the dtype's range allows), and a reduction's one-value
gradient (a mean or sum over everything) filled in at once and scaled by 1/count as an array
of g's dtype. Each gives what the general path gives: the same errors, the same bits."""
import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.backmath import ArrayMath
from autograd_core.ops import cross_entropy, reductions
from autograd_core.ops._checks import kept_shape


def _two_pass_rejects(target, classes):
    return bool(target.size) and (target.min() < 0 or target.max() >= classes)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64,
                                   ">i8", "<i2", np.intp])
def test_the_class_check_rejects_exactly_what_two_passes_reject(dtype):
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    values = sorted({0, 1, 2, 3, 9, 10, 126, 127, 128, 199, 200, 255, -1, -2, -100, -127,
                     -128, info.min, info.max, info.min + 1, info.max - 1})
    values = [v for v in values if info.min <= v <= info.max]
    for classes in (1, 2, 3, 10, 127, 128, 129, 200, 256, 2 ** 15, 2 ** 31, 2 ** 62):
        for v in values:
            for target in (np.array([v], dtype), np.array([[0, v], [v, 0]], dtype)[:, ::-1]):
                want = _two_pass_rejects(target.astype(np.float64), classes)
                try:
                    cross_entropy._check_classes(target, classes)
                    got = False
                except IndexError as e:
                    assert "out of range" in str(e)
                    got = True
                assert got == want, (dtype, classes, v)
    cross_entropy._check_classes(np.zeros((0,), dtype), 3)  # empty: nothing to check


def test_cross_entropy_names_an_out_of_range_or_negative_class():
    logits = ag.Tensor(np.zeros((3, 4), np.float32), requires_grad=True)
    for bad in ([0, 4, 1], [0, -1, 1], np.array([0, -128, 1], np.int8), [0, 2 ** 40, 1]):
        with pytest.raises(IndexError, match=r"cross_entropy.*\[0, 4\)"):
            nn.cross_entropy(logits, np.asarray(bad))
    nn.cross_entropy(logits, np.array([0, 3, 1], np.int8)).backward()  # in range: fine


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("count", [1, 2, 3, 7, 10, 64, 100, 1000])
def test_a_means_gradient_has_the_bits_of_g_times_one_over_count(dtype, count):
    rng = np.random.default_rng(count)
    x = ag.Tensor((rng.standard_normal(count) * 3).astype(dtype), requires_grad=True)
    for g in (np.array(1, dtype), np.array(0.37, dtype), np.array(-3e3, dtype)):
        m = x.mean()
        (got,) = reductions.Mean.backward(g, m, ArrayMath)
        want = np.broadcast_to((g * (1.0 / count)).reshape(kept_shape((count,), (0,))),
                               (count,))
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == np.ascontiguousarray(want).tobytes()
        assert got.flags.writeable  # a new array, which the sweep may add into


@pytest.mark.parametrize("make", [lambda x: x.sum(), lambda x: x.mean(), lambda x: x.max(),
                                  lambda x: x.sum(keepdims=True), lambda x: x.mean(axis=(0, 1)),
                                  lambda x: ag.logsumexp(x, axis=(0, 1)),
                                  lambda x: x[:1, :1].sum(axis=0)])
def test_reductions_to_one_value_spread_as_the_general_path_does(make):
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((3, 4))
    x = ag.Tensor(x0, requires_grad=True)
    make(x).backward()
    got = x.grad.numpy()
    y = ag.Tensor(x0, requires_grad=True)  # the same through create_graph (the general path)
    (want,) = ag.grad(make(y), [y], create_graph=True)
    np.testing.assert_array_equal(got, want.numpy())
