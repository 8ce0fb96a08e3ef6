"""detect_anomaly(warn_hazards=True): HazardWarning before a NaN/Inf appears (exp / pow
overflow, log of tiny values, division by tiny values) or when tanh / sigmoid saturate, once
per (op, line) per block, naming the op, the time step, the parameters and the user's line."""
import os
import threading
import warnings

import numpy as np
import pytest

import autograd_core as ag
import nn

THIS_FILE = os.path.basename(__file__)


def _hazards(fn, **kwargs):
    """Run fn() inside detect_anomaly(warn_hazards=True) and return the hazard messages."""
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        with ag.detect_anomaly(warn_hazards=True, **kwargs):
            fn()
    return [str(w.message) for w in caught if issubclass(w.category, ag.HazardWarning)]


def _one_hazard(fn, op):
    messages = _hazards(fn)
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"hazard at {op}"), messages[0]
    return messages[0]


def param(values, dtype=np.float64, name="w"):
    return ag.Tensor(np.asarray(values, dtype=dtype), requires_grad=True, name=name)


def saturated_share(share, size=100, magnitude=5.0):
    """Inputs with `share` of the units at +-magnitude and the rest at 0."""
    x = np.zeros(size)
    k = int(round(share * size))
    x[:k] = magnitude * np.where(np.arange(k) % 2, -1.0, 1.0)
    return param(x)


# ---- each hazard, with values that trigger it and values that do not ------------------------
def test_exp_overflow_threshold_depends_on_the_dtype():
    msg = _one_hazard(lambda: ag.exp(param([100.0, 1.0], np.float32)), "exp")
    assert "88.72" in msg and "float32" in msg and "reaches 100" in msg
    assert _hazards(lambda: ag.exp(param([80.0], np.float64))) == []
    assert _hazards(lambda: ag.exp(param([80.0], np.float32))) == []
    assert "709.8" in _one_hazard(lambda: ag.exp(param([710.0])), "exp")


def test_power_overflow():
    assert "2.0 ** x" in _one_hazard(lambda: 2.0 ** param([200.0], np.float32), "rpow_scalar")
    assert _hazards(lambda: 2.0 ** param([100.0], np.float32)) == []
    assert _hazards(lambda: 0.5 ** param([100.0], np.float32)) == []
    assert "x ** 3" in _one_hazard(lambda: param([1e13], np.float32) ** 3, "pow_scalar")
    assert _hazards(lambda: param([1e12], np.float32) ** 3) == []
    _one_hazard(lambda: param([0.0, 1.0]) ** -1.0, "pow_scalar")  # 1 / 0
    exponent = ag.Tensor(np.array([200.0], dtype=np.float32))
    _one_hazard(lambda: param([2.0], np.float32) ** exponent, "pow")
    assert _hazards(lambda: param([2.0], np.float32) ** (exponent / 4)) == []


def test_log_of_tiny_values():
    msg = _one_hazard(lambda: ag.log(param([1e-31, 1.0])), "log")
    assert "1 of 2 values at or below 1e-30" in msg and "smallest 1e-31" in msg
    _one_hazard(lambda: ag.log(param([0.0])), "log")
    _one_hazard(lambda: ag.log(param([-1.0])), "log")
    assert _hazards(lambda: ag.log(param([1e-29, 1.0]))) == []


def test_division_by_tiny_values():
    tiny = ag.Tensor(np.array([1e-31, 1.0]))
    msg = _one_hazard(lambda: param([1.0, 1.0]) / tiny, "div")
    assert "1 of 2 divisors" in msg and "1e-31" in msg
    _one_hazard(lambda: 1.0 / param([1e-31]), "rdiv_scalar")
    _one_hazard(lambda: param([1.0]) / 1e-31, "div_scalar")
    assert _hazards(lambda: param([1.0, 1.0]) / ag.Tensor(np.array([1e-29, 2.0]))) == []
    assert _hazards(lambda: 1.0 / param([1e-29])) == []
    assert _hazards(lambda: param([1.0]) / 1e-29) == []


@pytest.mark.parametrize("act", [ag.tanh, ag.sigmoid], ids=["tanh", "sigmoid"])
def test_saturation_over_99_percent_of_units(act):
    name = act.__name__
    msg = _one_hazard(lambda: act(saturated_share(1.0)), name)
    assert "100.0% of its 100 units saturated" in msg
    assert _hazards(lambda: act(saturated_share(0.5))) == []
    assert _hazards(lambda: act(saturated_share(0.99))) == []  # not *more* than 99%
    assert _hazards(lambda: act(saturated_share(1.0, magnitude=2.0))) == []


def test_safe_values_give_no_warning():
    def run():
        w = param([0.5, -1.5, 2.0])
        y = ag.exp(w) + ag.log(ag.exp(w)) + 1.0 / w + w / 3.0 + w ** 2 + 2.0 ** w
        (ag.tanh(w) + ag.sigmoid(w) + ag.softmax(w * 1000.0, axis=0)).sum().backward()
        y.sum().backward()

    assert _hazards(run) == []


# ---- only in anomaly mode with warn_hazards, only for recorded ops --------------------------
def _all_hazards():
    w = param([100.0, 1e-31], np.float32)
    ag.exp(w)
    ag.log(w)
    1.0 / w
    ag.tanh(w * 0.0 + 10.0)


def test_no_warning_outside_anomaly_mode_or_without_warn_hazards():
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        _all_hazards()
        with ag.detect_anomaly():
            _all_hazards()
        with ag.detect_anomaly(check_forward=False, warn_hazards=False):
            _all_hazards()
    assert not [w for w in caught if issubclass(w.category, ag.HazardWarning)]
    assert len(_hazards(_all_hazards)) == 4


def test_ops_that_are_not_recorded_are_not_checked():
    def run():
        ag.exp(ag.Tensor(np.array([100.0], dtype=np.float32)))  # no grad required
        with ag.no_grad():
            ag.exp(param([100.0], np.float32))

    assert _hazards(run) == []


def test_warn_hazards_does_not_check_forward_values_and_both_can_be_on():
    x = param([-1.0])
    msgs = _hazards(lambda: ag.log(x))  # a nan, but no AnomalyError without check_forward
    assert len(msgs) == 1
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        with pytest.raises(ag.AnomalyError, match="forward of log produced nan"):
            with ag.detect_anomaly(check_forward=True, warn_hazards=True):
                ag.log(x)
    assert [w.category for w in caught] == [ag.HazardWarning]  # the warning came first


# ---- the message ------------------------------------------------------------------------------
def test_message_names_op_step_parameter_and_the_users_line():
    w = param([100.0, 1.0], np.float32, name="enc.w")

    def run():
        with ag.step_scope(3):
            ag.exp(w.T)  # hazard: exp of the parameter

    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        with ag.detect_anomaly(warn_hazards=True):
            run()
    (warning,) = caught
    msg = str(warning.message)
    assert msg.startswith("hazard at exp, in time step 3, reading parameter 'enc.w' "
                          "(through transpose):")
    assert THIS_FILE in msg and "ag.exp(w.T)  # hazard: exp of the parameter" in msg
    # the warning is attributed to the user's line, not to the engine
    assert os.path.basename(warning.filename) == THIS_FILE
    assert "ag.exp(w.T)" in open(warning.filename).read().splitlines()[warning.lineno - 1]


def test_explicit_params_name_the_parameter():
    w = ag.Tensor(np.array([0.0]), requires_grad=True)
    msgs = _hazards(lambda: ag.log(w), params={"model.w": w})
    assert "reading parameter 'model.w'" in msgs[0]


# ---- aggregation: once per (op, line) per detect_anomaly block -----------------------------
def test_a_loop_warns_once_per_op_and_line_with_the_first_step():
    w = param([100.0], np.float32)

    def run():
        for t in range(50):
            with ag.step_scope(t + 10):
                ag.exp(w)
                ag.exp(w)  # a second line: its own warning
            ag.log(w - 100.0)

    msgs = _hazards(run)
    assert len(msgs) == 3
    assert [m.split(":")[0].split(",")[0] for m in msgs] == [
        "hazard at exp", "hazard at exp", "hazard at log"]
    assert "time step 10" in msgs[0] and "time step 10" in msgs[1]
    assert "not reported again in this detect_anomaly block" in msgs[0]


def test_each_block_and_each_decorated_call_warns_again():
    w = param([100.0], np.float32)

    def overflow():
        return ag.exp(w)

    @ag.detect_anomaly(warn_hazards=True)
    def step():
        return overflow()

    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        for _ in range(3):
            with ag.detect_anomaly(warn_hazards=True):
                overflow()
        step()
        step()
        with ag.detect_anomaly(warn_hazards=True):
            with ag.detect_anomaly():  # an inner block without hazards turns them off
                overflow()
            overflow()
            with ag.detect_anomaly(warn_hazards=True):  # an inner block warns afresh
                overflow()
            overflow()  # the outer block's record is back: no further warning
    assert len([w for w in caught if issubclass(w.category, ag.HazardWarning)]) == 7
    assert not ag.is_anomaly_enabled()


def test_a_recurrent_layer_over_many_steps_gives_one_warning_per_op():
    rnn = nn.RNN(3, 8, rng=0, dtype=np.float64)
    rnn.weight_ih_l0.data[:] = 10.0  # every pre-activation is 30: tanh saturates everywhere
    xs = np.ones((40, 2, 3))

    def run():
        out, _ = rnn(xs)  # hazard: the RNN call
        out.sum().backward()

    msgs = _hazards(run)
    assert len(msgs) == 1
    assert msgs[0].startswith("hazard at tanh, in time step 0")
    assert "out, _ = rnn(xs)  # hazard: the RNN call" in msgs[0]


def test_gru_gates_saturating_warn_with_their_step():
    gru = nn.GRU(2, 4, rng=0, dtype=np.float64)
    gru.weight_ih_l0.data[:] = 20.0
    msgs = _hazards(lambda: gru(np.ones((6, 1, 2))))
    assert msgs and all("time step 0" in m for m in msgs)
    assert {m.split(",")[0] for m in msgs} <= {"hazard at tanh", "hazard at sigmoid"}


def test_hazard_checks_are_per_thread():
    barrier = threading.Barrier(2, timeout=10)

    def checked():
        with ag.detect_anomaly(warn_hazards=True):
            barrier.wait()  # 1: the other thread runs the same op while this block is open
            ag.exp(param([100.0], np.float32))
            barrier.wait()  # 2

    def unchecked():
        barrier.wait()  # 1
        assert not ag.is_anomaly_enabled()
        ag.exp(param([100.0], np.float32))
        barrier.wait()  # 2

    # one recorder for both threads (catch_warnings itself is process-wide)
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        threads = [threading.Thread(target=checked), threading.Thread(target=unchecked)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len([w for w in caught if issubclass(w.category, ag.HazardWarning)]) == 1
