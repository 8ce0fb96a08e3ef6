"""Anomaly messages name the parameters the failing op read: named leaves that require grad,
views of them, or tensors named by detect_anomaly(params=...)."""
import os

import numpy as np
import pytest

import autograd_core as ag
import nn

THIS_FILE = os.path.basename(__file__)


def _raise_anomaly(fn):
    with np.errstate(all="ignore"), pytest.raises(ag.AnomalyError) as info:
        fn()
    return str(info.value)


def test_backward_message_names_the_parameter_and_the_step():
    w = ag.Tensor(np.array([0.0, 2.0]), requires_grad=True, name="w")

    def run():
        with ag.detect_anomaly():
            with ag.step_scope(7):
                y = ag.log(w)  # anomaly names: log of the parameter
            y.sum().backward()

    msg = _raise_anomaly(run)
    assert "the backward of log produced inf" in msg
    assert "in time step 7, reading parameter 'w'" in msg
    assert THIS_FILE in msg and "y = ag.log(w)  # anomaly names: log of the parameter" in msg


def test_views_of_a_parameter_are_followed_back_to_it():
    w = ag.Tensor(np.array([[0.0, 1.0], [2.0, 3.0]]), requires_grad=True, name="enc.w")
    x = ag.Tensor(np.ones((1, 2)))

    def run():
        with ag.detect_anomaly():
            with ag.step_scope(2):
                y = ag.log(x @ w.T)  # finite: the view is not the failing op
                z = ag.log(w.T.reshape(4)[:3])  # log(0): inf in the backward
            (y.sum() + z.sum()).backward()

    msg = _raise_anomaly(run)
    assert "the backward of log produced inf" in msg
    assert "'enc.w' (through getitem of reshape of transpose)" in msg


def test_two_parameters_are_listed_and_data_is_not():
    a = ag.Tensor(np.array([1.0, 0.0]), requires_grad=True, name="a")
    b = ag.Tensor(np.array([0.0, 1.0]), requires_grad=True, name="b")
    data = ag.Tensor(np.array([1.0, 1.0]), name="data")  # named, but not a parameter

    def run():
        with ag.detect_anomaly(check_forward=True):
            (a * data) / b  # anomaly names: 1/0 in the forward

    msg = _raise_anomaly(run)
    assert "the forward of div produced inf" in msg
    assert "reading parameter 'b'" in msg  # the div reads (a * data) and b
    assert "'data'" not in msg and "'a'" not in msg

    def run_pair():
        with ag.detect_anomaly(check_forward=True):
            a / b

    assert "reading parameters 'a', 'b'" in _raise_anomaly(run_pair)


def test_forward_check_reports_the_first_op_that_computes_with_a_nan_parameter():
    w = ag.Tensor(np.array([[np.nan, 1.0], [2.0, 3.0]]), requires_grad=True, name="w")
    x = ag.Tensor(np.ones((3, 2)))

    def run():
        with ag.detect_anomaly(check_forward=True):
            w_t = w.T  # a view: passes the nan on, reported at the matmul
            with ag.step_scope(4):
                x @ w_t  # anomaly names: matmul with the nan parameter

    msg = _raise_anomaly(run)
    assert "the forward of matmul produced nan" in msg and "time step 4" in msg
    assert "reading parameter 'w' (through transpose; which already holds nan)" in msg
    assert "x @ w_t  # anomaly names: matmul with the nan parameter" in msg


def test_explicit_params_win_and_nested_blocks_keep_them():
    w = ag.Tensor(np.array([0.0, 1.0]), requires_grad=True, name="w")
    v = ag.Tensor(np.array([0.0, 1.0]), requires_grad=True)  # no name of its own

    def run(params, nested):
        with ag.detect_anomaly(params=params):
            with ag.detect_anomaly() if nested else ag.detect_anomaly(params=params):
                (ag.log(w) + ag.log(v)).sum().backward()

    for params in ({"model.w": w, "model.v": v}, [("model.w", w), ("model.v", v)]):
        for nested in (False, True):
            msg = _raise_anomaly(lambda: run(params, nested))
            assert "reading parameter 'model.v'" in msg or "reading parameter 'model.w'" in msg
            assert "'w'" not in msg
    # without params, v has no name to give
    with np.errstate(all="ignore"), pytest.raises(ag.AnomalyError) as info:
        with ag.detect_anomaly():
            ag.log(v).sum().backward()
    assert "reading parameter" not in str(info.value)


def test_params_accepts_a_module():
    lin = nn.Linear(2, 2, rng=0, dtype=np.float64)
    lin.weight.name = "W"  # the user's name; params=model gives the key instead
    lin.weight.data[0, 0] = np.nan

    def run(params):
        with ag.detect_anomaly(check_forward=True, params=params):
            lin(np.ones((1, 2)))

    assert "'W'" in _raise_anomaly(lambda: run(None))
    msg = _raise_anomaly(lambda: run(lin))
    assert "'weight' (" in msg and "already holds nan" in msg and "'W'" not in msg


@pytest.mark.parametrize("make, key", [
    (lambda: nn.RNN(2, 4, rng=0, dtype=np.float64), "weight_hh_l0"),
    (lambda: nn.GRU(2, 4, rng=0, dtype=np.float64), "weight_hh_l0"),
    (lambda: nn.RecurrentClassifier(2, 4, 3, rng=0, dtype=np.float64), "rnn.weight_hh_l0"),
])
def test_recurrent_weight_forced_to_nan_names_the_weight_and_the_step(make, key):
    model = make()
    dict(model.named_parameters())[key].data[:] = np.nan
    xs = np.ones((5, 1, 2))

    def run():
        with ag.detect_anomaly(check_forward=True):
            model(xs)  # anomaly names: the recurrent call

    msg = _raise_anomaly(run)
    assert f"'{key}'" in msg and "already holds nan" in msg
    assert "in time step 0" in msg  # the first product with h_0, in the first step
    assert "model(xs)  # anomaly names: the recurrent call" in msg


def test_backward_check_in_a_recurrent_layer_names_the_weight_and_hints_at_forward():
    # An inf in W_hh: tanh saturates to a finite 1 in the forward, but the backward of the
    # product with W_hh makes 0 * inf = nan.
    rnn = nn.RNN(2, 4, rng=0, dtype=np.float64)
    rnn.weight_hh_l0.data[0, 0] = np.inf

    def run():
        with ag.detect_anomaly():
            out, _ = rnn(np.ones((5, 1, 2)), np.ones((1, 1, 4)))
            out.sum().backward()

    msg = _raise_anomaly(run)
    assert "'weight_hh_l0'" in msg and "in time step 4" in msg
    assert "check_forward=True" in msg


def test_decorator_with_params_given_as_an_iterator_names_on_every_call():
    w = ag.Tensor(np.array([0.0]), requires_grad=True)

    @ag.detect_anomaly(params=iter([("model.w", w)]))
    def step():
        ag.log(w).sum().backward()

    for _ in range(2):
        assert "reading parameter 'model.w'" in _raise_anomaly(step)
