"""What replay compares each call with its recorded copy (an index or targets an op saved from
outside the function): bytes first, values where the bytes differ."""
import warnings

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.replay_compare import Recorded as _Recorded
from autograd_core.replayer import ReplayWarning


def test_same_values_with_other_bits_still_hold():
    r = _Recorded(np.array([0.0, np.nan, 1.5]))
    other_nan = np.array([-0.0, -np.nan, 1.5])  # -0.0 and a NaN with the sign bit set
    assert other_nan.tobytes() != r.raw and r.holds(other_nan)
    assert r.holds(np.array([0.0, np.nan, 1.5]))
    assert not r.holds(np.array([0.0, np.nan, 1.25]))
    assert not r.holds(np.array([0.0, np.nan, 1.5], np.float32))  # another dtype
    assert not r.holds(np.array([[0.0, np.nan, 1.5]]))  # another shape
    assert r.nbytes == 24


def test_strided_and_object_arrays():
    base = np.arange(12).reshape(3, 4)
    r = _Recorded(base[:, ::2])
    assert r.holds(np.ascontiguousarray(base[:, ::2])) and r.holds(base[:, ::2])
    assert not r.holds(base[:, 1::2])
    objects = np.array([1, "a", None], dtype=object)
    r = _Recorded(objects)
    assert r.holds(np.array([1, "a", None], dtype=object))
    assert not r.holds(np.array([1, "b", None], dtype=object))


def _indexed_sum(x, idx):
    return lambda: (x[idx] * 2.0).sum()


def test_an_index_changed_in_place_is_recorded_again():
    x = ag.Tensor(np.arange(6.0), requires_grad=True)
    idx = np.array([0, 2, 4])
    fn = ag.replay(_indexed_sum(x, idx))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):  # recorded, confirmed, replayed
            x.grad = None
            fn().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 0, 2, 0, 2, 0])
    idx[1] = 3
    x.grad = None
    with pytest.warns(ReplayWarning, match="changed since it was recorded"):
        out = fn()
    out.backward()
    assert float(out.item()) == 2.0 * (0 + 3 + 4)
    np.testing.assert_array_equal(x.grad.numpy(), [2, 0, 0, 2, 2, 0])
