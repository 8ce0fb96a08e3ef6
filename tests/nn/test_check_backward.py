"""nn.check_backward: a learner's hand-written backward against the engine, and where it goes
wrong. The learners are the independent numpy derivations of `backward_students`."""
import numpy as np
import pytest

import nn
from nn.backward_report import TOLERANCE

from .backward_students import mlp_student, student

T, B, I, H, C = 5, 3, 3, 4, 3
RECURRENT = {"rnn": {"cell": "rnn"}, "rnn-relu": {"cell": "rnn", "nonlinearity": "relu"},
             "gru": {"cell": "gru"}, "gru-torch": {"cell": "gru", "variant": "torch"},
             "lstm": {"cell": "lstm"}}
WEIGHTS = np.array([0.1, 0.1, 0.3, 0.7, 0.8])
PARAMS = ("out.weight", "out.bias", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
          "rnn.bias_hh_l0")


def problem(kind, seed=0):
    rng = np.random.default_rng(seed)
    model = nn.RecurrentClassifier(I, H, C, rng=seed, **RECURRENT[kind])
    return model, rng.standard_normal((T, B, I)), rng.integers(0, C, (T, B))


def mlp_problem(loss, activation="tanh", seed=0):
    rng = np.random.default_rng(seed)
    model = nn.MLP([3, 5, 4, 2], activation=activation, rng=seed)
    x = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 2)) if loss == "mse" else rng.integers(0, 2, 4)
    return model, x, y


# ---- correct derivations pass -----------------------------------------------------------------
@pytest.mark.parametrize("kind", list(RECURRENT))
@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
def test_a_correct_recurrent_derivation_passes(kind, weights):
    model, xs, ys = problem(kind)
    report = nn.check_backward(student(kind), model, xs, ys, weights)
    assert report.ok and report.first_divergence is None, report.table()
    # every step's terms of all six parameters, dL/dh_t of every step, and the six totals
    assert len(report.rows) == T * (len(PARAMS) + 1) + len(PARAMS)
    assert {(r.parameter, r.step) for r in report.rows} >= {("dh", t) for t in range(1, T + 1)}
    assert report.max_rel < 1e-12
    assert "all 41 quantities agree" in report.table()


def test_whole_gradients_alone_are_compared_per_parameter():
    model, xs, ys = problem("gru")
    report = nn.check_backward(student("gru", per_step=False, dh=False), model, xs, ys)
    assert report.ok
    assert [(r.parameter, r.step) for r in report.rows] == [(n, None) for n in PARAMS]


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_a_correct_mlp_derivation_passes_layer_by_layer(loss, activation):
    model, x, y = mlp_problem(loss, activation)
    report = nn.check_backward(mlp_student(activation=activation), model, x, y)
    assert report.ok, report.table()
    # layer 3 first (delta^(3), W^(3), b^(3)), down to layer 1
    assert [(r.parameter, r.step) for r in report.rows][:3] == [
        ("delta", 3), ("layers.2.weight", 3), ("layers.2.bias", 3)]
    assert len(report.rows) == 9


def test_the_engine_side_is_float64_and_leaves_the_model_alone():
    model, xs, ys = problem("rnn")
    seen = {}

    def spy(params, xs_, ys_, w):
        seen.update(params=params, xs=xs_, w=w)
        return student("rnn")(params, xs_, ys_, w)

    report = nn.check_backward(spy, model, xs.astype(np.float32), ys)
    assert report.ok
    assert all(v.dtype == np.float64 for v in seen["params"].values())
    assert seen["xs"].dtype == np.float64 and np.array_equal(seen["w"], np.ones(T))
    assert all(p.dtype == np.float32 and p.grad is None for p in model.parameters())
    state = model.state_dict()
    assert all(np.array_equal(seen["params"][n], state[n]) for n in state)


# ---- an error at step k is pinned to step k ---------------------------------------------------
@pytest.mark.parametrize("kind", ["rnn", "gru", "gru-torch", "lstm"])
@pytest.mark.parametrize("k", range(1, T + 1))
def test_a_forgotten_local_derivative_at_step_k_is_pinned_to_step_k(kind, k):
    model, xs, ys = problem(kind)
    report = nn.check_backward(student(kind, local_slip_at=k), model, xs, ys, WEIGHTS)
    d = report.first_divergence
    assert not report.ok
    assert d.step == k and d.parameter.startswith("rnn."), report.table()
    assert d.max_rel > 1e-4
    assert f"dL/dh_{k} agrees" in d.where and f"local derivative at step {k}" in d.where
    # everything the sweep meets before it agrees: all of steps T..k+1, and dL/dh_k
    first = next(r for r in report.rows if not r.ok)
    before = report.rows[:report.rows.index(first)]
    assert {r.step for r in before} >= set(range(k + 1, T + 1)) and ("dh", k) in {
        (r.parameter, r.step) for r in before}
    if kind.startswith("gru"):  # the candidate's rows hold the slip (and r's, which feeds it)
        assert "n" in first.gates and "z" not in first.gates and "rows of gate" in d.where


@pytest.mark.parametrize("kind", ["rnn", "gru", "gru-torch", "lstm"])
@pytest.mark.parametrize("k", range(1, T))
def test_a_wrong_recursion_into_step_k_is_pinned_to_dh_k(kind, k):
    model, xs, ys = problem(kind)
    report = nn.check_backward(student(kind, recursion_slip_at=k), model, xs, ys)
    d = report.first_divergence
    assert (d.parameter, d.step) == ("dh", k), report.table()
    assert f"dL/dh_{k} itself differs" in d.where
    assert f"recursion from step {k + 1}" in d.where
    assert "local derivative" not in d.where


def test_the_last_step_has_no_recursion_only_the_output_term():
    model, xs, ys = problem("rnn")
    report = nn.check_backward(student("rnn", direct_slip_at=T), model, xs, ys)
    d = report.first_divergence
    assert (d.parameter, d.step) == ("dh", T)
    assert "last step" in d.where and "V^T g_T" in d.where


@pytest.mark.parametrize("k", [1, 3, T])
def test_a_forgotten_step_weight_is_the_output_layers_term_at_that_step(k):
    model, xs, ys = problem("gru")
    report = nn.check_backward(student("gru", weight_slip_at=k), model, xs, ys, WEIGHTS)
    d = report.first_divergence
    assert (d.parameter, d.step) == ("out.weight", k), report.table()
    assert "output layer" in d.where and "step weight" in d.where


@pytest.mark.parametrize("k", range(1, T + 1))
def test_without_dh_the_step_is_still_found_and_dh_is_asked_for(k):
    model, xs, ys = problem("rnn")
    report = nn.check_backward(student("rnn", local_slip_at=k, dh=False), model, xs, ys)
    d = report.first_divergence
    assert d.step == k and d.parameter.startswith("rnn.")
    assert "Return 'dh'" in d.where


# ---- a slip in one parameter's whole gradient names that parameter ----------------------------
def _scaled(kind, name, factor=1.001, rows=None, **options):
    def backward(params, xs, ys, w):
        result = student(kind, **options)(params, xs, ys, w)
        grad = result[name].copy()
        grad[rows if rows is not None else slice(None)] *= factor
        result[name] = grad
        return result
    return backward


@pytest.mark.parametrize("name", PARAMS)
def test_a_slip_in_one_whole_gradient_names_that_parameter(name):
    model, xs, ys = problem("rnn")
    report = nn.check_backward(_scaled("rnn", name, per_step=False, dh=False), model, xs, ys)
    d = report.first_divergence
    assert (d.parameter, d.step) == (name, None)
    assert d.max_rel == pytest.approx(1e-3 / (1 + 1e-3), rel=1e-6)
    assert [r.parameter for r in report.rows if not r.ok] == [name]
    assert "Return 'per_step' and 'dh'" in d.where


def test_steps_that_agree_but_a_total_that_does_not_blame_the_sum():
    model, xs, ys = problem("rnn")
    report = nn.check_backward(_scaled("rnn", "rnn.weight_hh_l0"), model, xs, ys)
    d = report.first_divergence
    assert (d.parameter, d.step) == ("rnn.weight_hh_l0", None)
    assert "sum over the steps" in d.where


@pytest.mark.parametrize("kind, rows, gate", [("gru", slice(H, 2 * H), "z"),
                                              ("lstm", slice(3 * H, 4 * H), "o")])
def test_the_gate_of_a_slip_is_named(kind, rows, gate):
    model, xs, ys = problem(kind)
    backward = _scaled(kind, "rnn.weight_ih_l0", rows=rows, per_step=False, dh=False)
    d = nn.check_backward(backward, model, xs, ys).first_divergence
    assert d.parameter == "rnn.weight_ih_l0"
    assert f"rows of gate {gate}." in d.where


# ---- the MLP: per layer -----------------------------------------------------------------------
@pytest.mark.parametrize("layer", [1, 2])
def test_a_forgotten_f_prime_in_the_mlp_recursion_is_pinned_to_its_layer(layer):
    model, x, y = mlp_problem("mse")
    report = nn.check_backward(mlp_student(recursion_slip_at=layer), model, x, y)
    d = report.first_divergence
    assert (d.parameter, d.step) == ("delta", layer), report.table()
    assert f"recursion from layer {layer + 1}" in d.where


@pytest.mark.parametrize("layer", [2, 3])
def test_a_wrong_outer_product_in_the_mlp_names_its_weight(layer):
    model, x, y = mlp_problem("cross_entropy")
    report = nn.check_backward(mlp_student(outer_slip_at=layer), model, x, y)
    d = report.first_divergence
    assert (d.parameter, d.step) == (f"layers.{layer - 1}.weight", layer), report.table()
    assert f"delta^({layer}) agrees" in d.where and "outer product" in d.where


def test_a_wrong_output_error_in_the_mlp_is_pinned_to_the_last_layer():
    model, x, y = mlp_problem("mse")
    d = nn.check_backward(mlp_student(output_slip=True), model, x, y).first_divergence
    assert (d.parameter, d.step) == ("delta", 3)
    assert "output error" in d.where and "-(y - a^(L)) / B" in d.where


def test_an_mlp_slip_without_delta_names_the_parameter():
    model, x, y = mlp_problem("mse")
    report = nn.check_backward(mlp_student(recursion_slip_at=1, delta=False), model, x, y)
    d = report.first_divergence
    assert (d.parameter, d.step) == ("layers.0.weight", 1)
    assert "Return 'delta'" in d.where


# ---- missing, misshapen, raising: reported, not thrown ----------------------------------------
def _edited(edit, kind="rnn"):
    def backward(params, xs, ys, w):
        result = student(kind)(params, xs, ys, w)
        edit(result)
        return result
    return backward


def test_a_missing_gradient_is_reported():
    model, xs, ys = problem("rnn")
    report = nn.check_backward(_edited(lambda r: r.pop("out.bias")), model, xs, ys)
    d = report.first_divergence
    assert not report.ok and (d.parameter, d.step, d.max_rel) == ("out.bias", None, np.inf)
    assert "has no 'out.bias'" in d.where
    row = next(r for r in report.rows if r.problem)
    assert (row.parameter, row.problem) == ("out.bias", "missing")
    assert "missing" in report.table()


def test_a_transposed_gradient_is_reported_with_its_shape():
    model, xs, ys = problem("rnn")

    def transpose(result):
        result["rnn.weight_ih_l0"] = result["rnn.weight_ih_l0"].T

    report = nn.check_backward(_edited(transpose), model, xs, ys)
    d = report.first_divergence
    assert d.parameter == "rnn.weight_ih_l0"
    assert f"shape {(I, H)}, expected {(H, I)} (transposed?)" in report.table()


def test_misshapen_steps_and_errors_are_reported():
    model, xs, ys = problem("gru")

    def edit(result):
        result["dh"] = result["dh"][:-1]
        result["per_step"]["rnn.weight_hh_l0"][1] = np.zeros((2, 2))

    report = nn.check_backward(_edited(edit, "gru"), model, xs, ys)
    table = report.table()
    assert not report.ok
    assert f"has {T - 1} entries, expected {T}" in table
    assert "shape (2, 2), expected (12, 4)" in table
    assert report.first_divergence.parameter == "dh"
    bad = {(r.parameter, r.step) for r in report.rows if not r.ok}
    assert bad == {("dh", None), ("rnn.weight_hh_l0", 2)}


def test_nan_and_non_numbers_are_reported():
    model, xs, ys = problem("rnn")

    def edit(result):
        result["out.weight"] = result["out.weight"] * np.nan
        result["out.bias"] = "zero"

    report = nn.check_backward(_edited(edit), model, xs, ys)
    problems = {r.parameter: r.problem for r in report.rows if r.problem}
    assert problems == {"out.weight": "contains nan or inf",
                        "out.bias": "not a numeric array (str)"}


def test_a_student_that_raises_is_reported_with_where_it_raised():
    model, xs, ys = problem("rnn")

    def broken(params, xs, ys, w):
        return {"out.weight": params["out.weight"] @ xs[0]}  # (C, H) @ (B, I)

    report = nn.check_backward(broken, model, xs, ys)
    assert not report.ok
    d = report.first_divergence
    assert d.parameter is None and d.max_rel == np.inf
    table = report.table()
    assert table.startswith("backward raised ValueError: matmul")
    assert "test_check_backward.py" in table and "in broken" in table


def test_a_missing_mlp_gradient_is_reported():
    model, x, y = mlp_problem("cross_entropy")

    def backward(params, x_, y_, w):
        result = mlp_student()(params, x_, y_, w)
        del result["layers.1.bias"]
        return result

    d = nn.check_backward(backward, model, x, y).first_divergence
    assert (d.parameter, d.step, d.max_rel) == ("layers.1.bias", 2, np.inf)
    assert d.where.startswith("the result has no 'layers.1.bias': return one gradient")


def test_a_student_that_returns_no_dict_is_reported():
    model, x, y = mlp_problem("mse")
    report = nn.check_backward(lambda p, x, y, w: [1, 2], model, x, y)
    assert not report.ok
    assert "backward returned list, expected a dict" in report.table()


def test_unknown_keys_are_noted_but_do_not_fail():
    model, xs, ys = problem("rnn")

    def edit(result):
        result["V"] = result["out.weight"]
        result["per_step"]["W"] = []

    report = nn.check_backward(_edited(edit), model, xs, ys)
    assert report.ok
    table = report.table()
    assert "unknown key 'V' ignored" in table and "unknown parameter 'W'" in table


# ---- the caller's mistakes are errors --------------------------------------------------------
def test_bad_calls_raise_one_clear_error():
    model, xs, ys = problem("rnn")
    with pytest.raises(ValueError, match=r"step_weights must have shape \(5,\)"):
        nn.check_backward(student("rnn"), model, xs, ys, [1.0, 2.0])
    with pytest.raises(TypeError, match="RecurrentClassifier or an nn.MLP"):
        nn.check_backward(student("rnn"), nn.Linear(2, 2), xs, ys)
    with pytest.raises(TypeError, match="student must be a function"):
        nn.check_backward("backward.py", model, xs, ys)
    mlp, x, y = mlp_problem("mse")
    with pytest.raises(ValueError, match="an MLP has no time steps"):
        nn.check_backward(mlp_student(), mlp, x, y, [1.0])
    with pytest.raises(ValueError, match=r"float targets .* must be \(B, n_L\)"):
        nn.check_backward(mlp_student(), mlp, x, y[:, :1])


# ---- for teachers: nn.testing -----------------------------------------------------------------
def test_assert_backward_matches_passes_and_fails_with_the_table():
    model, xs, ys = problem("gru-torch")
    report = nn.testing.assert_backward_matches(student("gru-torch"), model, xs, ys)
    assert report.ok
    with pytest.raises(AssertionError) as info:
        nn.testing.assert_backward_matches(student("gru-torch", local_slip_at=2), model, xs, ys)
    message = str(info.value)
    assert "first divergence: rnn." in message and "at step 2" in message
    assert "where to look: dL/dh_2 agrees" in message


def test_tolerance_is_normwise_relative_1e_8():
    assert TOLERANCE == 1e-8
    model, xs, ys = problem("rnn")
    small = nn.check_backward(_scaled("rnn", "out.bias", 1 + 5e-9), model, xs, ys)
    large = nn.check_backward(_scaled("rnn", "out.bias", 1 + 5e-8), model, xs, ys)
    assert small.ok and not large.ok
