"""Any size a user asks for finishes within a minute, or is refused up front in one line
(exit 2, nothing written): the estimates of nn/cli/time_budget.py, the caps of graph and
check --mine, and path counts too long to print in full."""
import pytest

from nn.cli import main, time_budget
from nn.cli.graph import MAX_TENSORS, max_steps
from nn.cli.graph_view import count_text
from nn.cli.training import TrainConfig


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["train", "--steps", "1000000000"], "--steps 1000000000 x --seeds 1 of --length 50"),
    (["train", "--seeds", "100000"], "--steps 400 x --seeds 100000"),
    (["train", "--length", "100000", "--hidden", "8"], "of --length 100000 (--hidden 8"),
    (["train", "--hidden", "2000", "--batch", "512"], "(--hidden 2000, --batch 512)"),
    (["report", "--length", "200000", "--hidden", "4"], "--length 200000 (--hidden 4"),
    (["report", "--jacobian", "400"], "--length 50 and --jacobian 400"),
])
def test_a_run_longer_than_a_minute_is_refused_up_front(argv, message, in_tmp, capsys):
    assert main([*argv, "--out", "run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    (line,) = captured.err.splitlines()
    assert line.startswith(f"bptt {argv[0]}: ") and message in line
    assert "would take at least" in line and "more than the 60 s a run may take" in line
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["check", "--mine", "mine.py", "--steps", "1000000000"],
     "--steps: at most 50000, got 1000000000: a longer check takes more than a minute"),
    (["graph", "--steps", "20001"], "--steps: at most 20000"),
    (["graph", "--steps", "20000"], "--steps 20000 for --model gru: at most"),
    (["graph", "--model", "lstm", "--view", "rolled", "--steps", "9000"],
     "--steps 9000 for --model lstm: at most"),
    (["explore", "--steps", "13"], "--steps: at most 12"),
])
def test_other_sizes_past_a_minute_are_refused(argv, message, in_tmp, capsys):
    (in_tmp / "mine.py").write_text("def backward(params, xs, targets, step_weights):\n"
                                    "    return {}\n")
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line
    assert sorted(p.name for p in in_tmp.iterdir()) == ["mine.py"]


def test_the_documented_runs_are_well_within_the_limit():
    """The README's and the help's examples are not refused: their lower bounds stay far
    below the limit."""
    d = TrainConfig()
    runs = [dict(steps=d.steps, seeds=1, length=50), dict(steps=d.steps, seeds=5, length=50),
            dict(steps=1500, seeds=1, length=100)]
    for run in runs:
        seconds = time_budget.train_seconds(("rnn", "gru"), run["steps"], run["seeds"],
                                            run["length"], d.hidden, d.batch, 2)
        assert seconds < time_budget.LIMIT_SECONDS / 2, run
    for length, jacobian in ((50, None), (100, None), (2000, None), (50, 20)):
        seconds = time_budget.report_seconds(("rnn", "gru"), length, d.hidden, 8, 4, jacobian)
        assert seconds < time_budget.LIMIT_SECONDS / 2, (length, jacobian)


def test_the_estimate_grows_with_every_size():
    base = dict(cells=("gru",), steps=10, seeds=1, length=10, hidden=8, batch=4, inputs=2)
    first = time_budget.train_seconds(**base)
    for key in ("steps", "seeds", "length", "hidden", "batch"):
        assert time_budget.train_seconds(**{**base, key: base[key] * 2}) > first, key
    assert time_budget.train_seconds(**{**base, "cells": ("rnn", "gru")}) > first


@pytest.mark.parametrize("model", ["rnn", "gru", "lstm"])
def test_the_longest_graph_drawn_has_at_most_the_tensors_allowed(model, monkeypatch):
    import autograd_core as ag
    from nn.cli import graph, graph_view
    monkeypatch.setattr(graph, "MAX_TENSORS", 2000)  # the same rule, smaller
    longest = max_steps(model)
    assert len(ag.walk_graph(graph_view.build(model, longest, 0)[1])) <= 2000
    assert len(ag.walk_graph(graph_view.build(model, longest + 1, 0)[1])) > 2000


def test_huge_path_counts_print_in_scientific_notation():
    assert count_text(24) == "24"
    assert count_text(10 ** 15 - 1) == "999999999999999"
    assert count_text(10 ** 15) == "1.000e+15"
    assert count_text(7 ** 10000) == "9.559e+8450"  # 8,451 digits: str() refuses past 4,300
    assert count_text(2 ** 20000) == "3.980e+6020"
