"""`python -m nn.compare`: the engine-vs-reference table, its rows and its exit codes."""
import os
import subprocess
import sys

import numpy as np
import pytest

import nn
from nn.compare import MODELS, PERTURBATION, Row, compare, format_table, main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def test_main_prints_the_table_and_returns_0(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["model", "parameter"]
    for model in ("mlp", "rnn", "gru"):
        for name in expected_names(model):
            assert any(line.split()[:2] == [model, name] for line in out.splitlines()), name
    assert "FAIL" not in out
    assert "all 23 differences within tolerance" in out


def test_main_options(capsys):
    assert main(["--seed", "2", "--models", "rnn-relu,gru-torch", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()[2:]
    assert [line.split()[0] for line in table] == ["rnn-relu"] * 8 + ["gru-torch"] * 8
    assert {line.split()[4] for line in table} == {"1e-04"}


def test_main_perturb_returns_1(capsys):
    assert main(["--models", "rnn", "--perturb", "rnn.weight_ih_l0"]) == 1
    out = capsys.readouterr().out
    fails = [line.split()[:2] for line in out.splitlines() if line.endswith("FAIL")]
    assert fails == [["rnn", "rnn.weight_ih_l0"]]
    assert "1 of 8 differences exceed their tolerance: rnn rnn.weight_ih_l0" in out


@pytest.mark.parametrize("argv", [["--perturb", "nope"], ["--models", "mlp,bogus"],
                                  ["--seed", "x"]])
def test_main_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("argv,code", [([], 0), (["--perturb", "gru:rnn.bias_hh_l0"], 1)])
def test_python_dash_m_exit_codes(argv, code):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "nn.compare", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.startswith("model")
    assert ("FAIL" in proc.stdout) == (code == 1)
