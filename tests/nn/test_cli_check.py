"""`bptt check`: the engine-vs-reference table from the command line, and its exit codes."""
import os
import subprocess
import sys

import pytest

from nn.cli import main
from tests.nn.test_compare import expected_names

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_check_prints_the_table_and_returns_0(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["model", "parameter"]
    for model in ("mlp", "rnn", "gru"):
        for name in expected_names(model):
            assert any(line.split()[:2] == [model, name] for line in out.splitlines()), name
    assert "FAIL" not in out
    assert "all 23 differences within tolerance" in out


def test_check_options(capsys):
    assert main(["check", "--seed", "2", "--models", "rnn-relu,gru-torch", "--dtype",
                 "float32"]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()[2:]
    assert [line.split()[0] for line in table] == ["rnn-relu"] * 8 + ["gru-torch"] * 8
    assert {line.split()[4] for line in table} == {"1e-04"}


def test_check_perturb_returns_1(capsys):
    assert main(["check", "--models", "rnn", "--perturb", "rnn.weight_ih_l0"]) == 1
    out = capsys.readouterr().out
    fails = [line.split()[:2] for line in out.splitlines() if line.endswith("FAIL")]
    assert fails == [["rnn", "rnn.weight_ih_l0"]]
    assert "1 of 8 differences exceed their tolerance: rnn rnn.weight_ih_l0" in out


@pytest.mark.parametrize("argv, message", [
    (["--perturb", "nope"], "bptt check: compare: --perturb 'nope' matches no parameter"),
    (["--models", "mlp,bogus"], "unknown model 'bogus'"),
    (["--seed", "x"], "--seed: not a number: 'x'"),
    (["--seed", "-3"], "--seed: must be an integer from 0"),
])
def test_check_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    assert main(["check", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.parametrize("argv,code", [([], 0), (["--perturb", "gru:rnn.bias_hh_l0"], 1)])
def test_python_dash_m_nn_check_exit_codes(argv, code):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "nn", "check", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.startswith("model")
    assert ("FAIL" in proc.stdout) == (code == 1)
