"""Anomaly mode: the first NaN/Inf gradient (or forward value, when asked) raises AnomalyError
naming the op that produced it and the line of user code that recorded that op."""
import os
import threading

import re

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.anomaly import _origin
import nn
from autograd_core.function import record

THIS_FILE = os.path.basename(__file__)


class _NanRule(ag.Op):
    """Identity forward, a backward that returns nan (a broken custom rule)."""
    name = None  # set below: a named class would be registered in ag.ops_registry

    @staticmethod
    def backward(g, out, xp):
        return (g * np.nan,)


_NanRule.name = "nan_rule"


def _nan_rule(x):
    return record(_NanRule, x.data.copy(), (x,))


def _raise_anomaly(fn):
    with np.errstate(all="ignore"), pytest.raises(ag.AnomalyError) as info:
        fn()
    return str(info.value)


def _assert_shows(msg, line):
    assert THIS_FILE in msg, msg
    assert line in msg, msg


# ---- the backward check ---------------------------------------------------------------------
def test_log_at_zero_names_log_and_the_recording_line():
    x = ag.Tensor(np.array([0.0, 2.0]), requires_grad=True)

    def run():
        with ag.detect_anomaly():
            y = ag.log(x)  # anomaly: recorded log here
            (y * 3.0).sum().backward()

    msg = _raise_anomaly(run)
    assert "the backward of log produced inf" in msg
    assert "input 0" in msg and "(2,)" in msg
    _assert_shows(msg, "y = ag.log(x)  # anomaly: recorded log here")
    assert x.grad is None  # the sweep stopped before writing any leaf


def test_custom_rule_returning_nan_is_named():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True, name="x")

    def run():
        with ag.detect_anomaly():
            y = _nan_rule(x)  # anomaly: the broken custom op
            y.sum().backward()

    msg = _raise_anomaly(run)
    assert "the backward of nan_rule produced nan in the gradient of its input 0 'x'" in msg
    _assert_shows(msg, "y = _nan_rule(x)  # anomaly: the broken custom op")


def test_zero_times_inf_in_a_backward_names_exp():
    # exp(800) overflows to inf; multiplying by 0 makes the loss finite, but exp's rule then
    # computes 0 * inf = nan.
    x = ag.Tensor(np.array([800.0, 1.0]), requires_grad=True)

    def run():
        with ag.detect_anomaly():
            e = ag.exp(x)  # anomaly: exp overflows
            (e * np.array([0.0, 1.0])).sum().backward()

    msg = _raise_anomaly(run)
    assert "the backward of exp produced nan" in msg
    _assert_shows(msg, "e = ag.exp(x)  # anomaly: exp overflows")


def test_the_first_bad_gradient_of_the_sweep_is_reported():
    # Both log (inf at 0) and nan_rule are bad; the sweep reaches nan_rule first.
    x = ag.Tensor(np.array([0.0, 1.0]), requires_grad=True)

    def run():
        with ag.detect_anomaly():
            a = ag.log(x)
            b = _nan_rule(a)  # anomaly: first bad rule in the sweep
            b.sum().backward()

    msg = _raise_anomaly(run)
    assert "the backward of nan_rule produced nan" in msg and "backward of log" not in msg
    _assert_shows(msg, "b = _nan_rule(a)  # anomaly: first bad rule in the sweep")


def test_inf_made_by_summing_a_broadcast_gradient_is_caught():
    # Each element of mul's gradient for x is finite (3e38) but summing them back to x's
    # shape (1,) overflows float32: the gradient that reaches x is inf.
    x = ag.Tensor(np.array([1.0], dtype=np.float32), requires_grad=True)
    c = np.full(4, 3e38, dtype=np.float32)

    def run():
        with ag.detect_anomaly():
            y = x * c  # anomaly: broadcast mul
            y.sum().backward()

    msg = _raise_anomaly(run)
    assert "the backward of mul produced inf" in msg
    _assert_shows(msg, "y = x * c  # anomaly: broadcast mul")


def test_time_step_is_in_the_message():
    x = ag.Tensor(np.array([0.0, 1.0]), requires_grad=True)

    def run():
        with ag.detect_anomaly():
            with ag.step_scope(2):
                y = ag.log(x)  # anomaly: inside step 2
            y.sum().backward()

    msg = _raise_anomaly(run)
    assert "time step 2" in msg
    _assert_shows(msg, "y = ag.log(x)  # anomaly: inside step 2")


def test_nan_inside_a_gru_names_the_op_the_step_and_the_callers_line():
    gru = nn.GRU(2, 3, rng=0, dtype=np.float64)
    xs = np.zeros((3, 1, 2))
    xs[0, 0, 0] = np.nan  # every hidden state is nan from step 0 on

    def run():
        with ag.detect_anomaly():
            out, h = gru(xs)  # anomaly: the GRU call
            out.sum().backward()

    msg = _raise_anomaly(run)
    # The sweep starts at the last step: h_2 = (1 - z) * h_1 + z * h~, with h~ nan.
    assert "the backward of mul produced nan" in msg
    assert "time step 2" in msg
    _assert_shows(msg, "out, h = gru(xs)  # anomaly: the GRU call")


def test_node_recorded_before_anomaly_mode_says_there_is_no_trace():
    x = ag.Tensor(np.array([0.0]), requires_grad=True)
    with np.errstate(all="ignore"):
        y = ag.log(x)

    def run():
        with ag.detect_anomaly():
            y.sum().backward()

    msg = _raise_anomaly(run)
    assert "the backward of log produced inf" in msg
    assert "recorded before anomaly mode was on" in msg


# ---- off by default: nothing checked, nothing recorded --------------------------------------
def test_without_anomaly_mode_nan_propagates_and_no_trace_is_kept():
    assert not ag.is_anomaly_enabled()
    x = ag.Tensor(np.array([0.0, 2.0]), requires_grad=True)
    with np.errstate(all="ignore"):
        y = ag.log(x)
    z = _nan_rule(y)
    assert _origin(y) is None and _origin(z) is None
    with np.errstate(all="ignore"):
        z.sum().backward()
    assert np.isnan(x.grad.data).all()
    with np.errstate(all="ignore"):
        w = ag.log(ag.Tensor(np.array([-1.0]), requires_grad=True))  # forward nan: no error
    assert np.isnan(w.data).all() and _origin(w) is None


def test_anomaly_mode_keeps_the_trace_only_while_on():
    x = ag.Tensor(np.array([1.0]), requires_grad=True)
    with ag.detect_anomaly():
        inside = ag.exp(x)
    outside = ag.exp(x)
    assert (_origin(inside) is not None) and _origin(outside) is None


def test_finite_gradients_pass_and_match_ordinary_mode():
    x = ag.Tensor(np.array([0.5, 1.5]), requires_grad=True)
    with ag.detect_anomaly(check_forward=True):
        (ag.log(x) * ag.exp(x)).sum().backward()
    expected = np.exp([0.5, 1.5]) * (1 / np.array([0.5, 1.5]) + np.log([0.5, 1.5]))
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-12)


# ---- the forward check ----------------------------------------------------------------------
def test_check_forward_raises_at_the_op_that_made_nan():
    x = ag.Tensor(np.array([-1.0, 2.0]), requires_grad=True)

    def run():
        with ag.detect_anomaly(check_forward=True):
            y = ag.log(x)  # anomaly: log of a negative
            y.sum().backward()

    msg = _raise_anomaly(run)
    assert "the forward of log produced nan" in msg and "(2,)" in msg
    _assert_shows(msg, "y = ag.log(x)  # anomaly: log of a negative")


def test_check_forward_names_the_op_that_made_inf_and_only_that_op():
    x = ag.Tensor(np.array([1.0, 1000.0]), requires_grad=True)

    def run():
        with ag.detect_anomaly(check_forward=True):
            a = x * 2.0
            b = ag.exp(a)  # anomaly: exp overflows in the forward
            b.sum()

    msg = _raise_anomaly(run)
    assert "the forward of exp produced inf" in msg
    _assert_shows(msg, "b = ag.exp(a)  # anomaly: exp overflows in the forward")


def test_check_forward_through_nn_shows_the_callers_line():
    gru = nn.GRU(2, 3, rng=0, dtype=np.float64)
    xs = np.zeros((3, 1, 2))
    xs[1, 0, 0] = np.inf

    def run():
        with ag.detect_anomaly(check_forward=True):
            gru(xs)  # anomaly: forward check through the GRU

    msg = _raise_anomaly(run)
    assert re.search(r"the forward of (matmul|addmm|linear) produced inf", msg)
    _assert_shows(msg, "gru(xs)  # anomaly: forward check through the GRU")


def test_forward_is_not_checked_unless_asked():
    x = ag.Tensor(np.array([-1.0]), requires_grad=True)
    with ag.detect_anomaly(), np.errstate(all="ignore"):
        y = ag.log(x)
    assert np.isnan(y.data).all()


# ---- as a decorator, nested, restored, per thread ---------------------------------------------
def test_decorator_form():
    @ag.detect_anomaly()
    def bad_step(x):
        assert ag.is_anomaly_enabled()
        ag.log(x).sum().backward()

    @ag.detect_anomaly(check_forward=True)
    def bad_forward(x):
        return ag.log(x)

    x = ag.Tensor(np.array([0.0]), requires_grad=True)
    with np.errstate(all="ignore"):
        with pytest.raises(ag.AnomalyError, match="backward of log"):
            bad_step(x)
        assert not ag.is_anomaly_enabled()
        with pytest.raises(ag.AnomalyError, match="forward of log"):
            bad_forward(ag.Tensor(np.array([-1.0]), requires_grad=True))
    assert not ag.is_anomaly_enabled()


def test_nesting_restores_the_outer_settings_also_after_an_error():
    neg = ag.Tensor(np.array([-1.0]), requires_grad=True)
    with np.errstate(all="ignore"):
        with ag.detect_anomaly():
            with pytest.raises(ag.AnomalyError, match="forward of log"):
                with ag.detect_anomaly(check_forward=True):
                    ag.log(neg)
            assert ag.is_anomaly_enabled()
            y = ag.log(neg)  # the outer level does not check forward values
            assert np.isnan(y.data).all()
            with pytest.raises(ag.AnomalyError, match="backward of log"):
                ag.log(ag.Tensor(np.array([0.0]), requires_grad=True)).sum().backward()
        assert not ag.is_anomaly_enabled()
        ag.log(neg).sum().backward()  # off again: no error
    assert not ag.is_anomaly_enabled()


def test_anomaly_mode_is_per_thread():
    barrier = threading.Barrier(2, timeout=10)
    results = {}

    def checked():
        try:
            with ag.detect_anomaly(check_forward=True):
                barrier.wait()  # 1: on here while the other thread runs its ops
                barrier.wait()  # 2
                x = ag.Tensor(np.array([-1.0]), requires_grad=True)
                with np.errstate(all="ignore"):
                    ag.log(x)
        except ag.AnomalyError as e:
            results["checked"] = str(e)

    def unchecked():
        barrier.wait()  # 1
        results["enabled_here"] = ag.is_anomaly_enabled()
        x = ag.Tensor(np.array([-1.0, 0.0]), requires_grad=True)
        with np.errstate(all="ignore"):
            y = ag.log(x)  # nan and -inf in the forward, inf in the backward: no error here
            y.sum().backward()
        results["unchecked"] = (x.grad.data.copy(), (_origin(y) is not None))
        barrier.wait()  # 2

    threads = [threading.Thread(target=checked), threading.Thread(target=unchecked)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["enabled_here"] is False
    grad, has_origin = results["unchecked"]
    assert grad[0] == -1.0 and np.isinf(grad[1]) and not has_origin
    assert "the forward of log produced nan" in results["checked"]
    assert not ag.is_anomaly_enabled()
