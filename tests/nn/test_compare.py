"""nn.compare: the engine-vs-reference rows and their table (`bptt check` in test_cli_check)."""
import numpy as np
import pytest

import nn
from nn.compare import MODELS, PERTURBATION, Row, compare, format_table

def expected_names(model):
    if model.startswith("mlp"):
        params = [n for n, _ in nn.MLP([4, 6, 5, 3]).named_parameters()]
        return ["(loss)"] + params
    cell = model.split("-")[0]
    params = [n for n, _ in nn.RecurrentClassifier(4, 5, 3, cell=cell).named_parameters()]
    return ["(loss)"] + params + ["(dL/dh)"]


def test_default_rows_cover_every_parameter_and_agree():
    rows = compare()
    assert all(isinstance(r, Row) for r in rows)
    assert [r.model for r in rows] == (["mlp"] * 7 + ["rnn"] * 8 + ["gru"] * 8)
    for model in ("mlp", "rnn", "gru"):
        assert [r.parameter for r in rows if r.model == model] == expected_names(model)
    for r in rows:
        assert r.tolerance == 1e-10
        assert np.isfinite(r.max_abs) and np.isfinite(r.max_rel)
        assert 0 <= r.max_rel < 1e-10, r
        assert r.ok is True


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_agrees(model):
    rows = compare(seed=3, models=(model,))
    assert [r.parameter for r in rows] == expected_names(model)
    assert all(r.ok and r.max_rel < 1e-10 for r in rows), format_table(rows)


def test_float32_uses_its_own_tolerance():
    rows = compare(models=("rnn", "gru-torch"), dtype=np.float32)
    assert {r.tolerance for r in rows} == {1e-4}
    assert all(r.ok for r in rows), format_table(rows)
    # float32 roundoff is visible, far above float64's and far below the tolerance
    assert max(r.max_rel for r in rows) > 1e-9
    assert max(r.max_rel for r in rows) < 1e-5


def test_rows_are_reproducible_and_depend_on_the_seed():
    a, b, c = compare(seed=5), compare(seed=5), compare(seed=6)
    assert a == b
    assert [r.max_abs for r in a] != [r.max_abs for r in c]


def test_perturb_fails_exactly_the_named_parameter():
    clean = {(r.model, r.parameter): r for r in compare()}
    rows = compare(perturb="rnn.weight_hh_l0")
    bad = [(r.model, r.parameter) for r in rows if not r.ok]
    assert bad == [("rnn", "rnn.weight_hh_l0"), ("gru", "rnn.weight_hh_l0")]
    for r in rows:
        if not r.ok:
            # what is measured is the added error: 1e-6 of the gradient's scale max|g| (at
            # least 1e-6); max|g| = max_abs / max_rel, the reference's scale
            scale = r.max_abs / r.max_rel
            assert r.max_abs == pytest.approx(PERTURBATION * max(scale, 1.0), rel=1e-6)
            assert r.max_rel > 1e-7
        else:
            assert r == clean[(r.model, r.parameter)]


def test_perturb_restricted_to_one_model():
    rows = compare(perturb="gru:out.bias")
    assert [(r.model, r.parameter) for r in rows if not r.ok] == [("gru", "out.bias")]


@pytest.mark.parametrize("kwargs,match", [
    ({"perturb": "nope"}, "matches no parameter"),
    ({"perturb": "lstm:out.bias"}, "not compared"),
    ({"perturb": "mlp:rnn.weight_hh_l0"}, "matches no parameter"),
    ({"models": ("mlp", "transformer")}, "unknown model"),
    ({"dtype": np.int64}, "float32 or float64"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare(**kwargs)


def test_format_table():
    rows = [Row("rnn", "rnn.weight_hh_l0", 1.5e-17, 2.25e-16, 1e-10, True),
            Row("gru", "out.bias", 3e-7, 4e-6, 1e-10, False)]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["model", "parameter", "max", "abs", "diff", "max", "rel", "diff",
                                "tolerance", "ok"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["rnn", "rnn.weight_hh_l0", "1.500e-17", "2.250e-16", "1e-10", "ok"]
    assert lines[3].split() == ["gru", "out.bias", "3.000e-07", "4.000e-06", "1e-10", "FAIL"]
    assert len(lines) == 4
    # columns line up: every cell of a column starts at the header's offset
    assert lines[2].index("rnn.weight_hh_l0") == lines[3].index("out.bias") == \
        lines[0].index("parameter")
