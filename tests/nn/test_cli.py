"""The `bptt` command line end to end, on tiny settings."""
import os
import shutil

import numpy as np
import pytest

from nn import checkpoint
from nn.cli import main
from nn.train import TrainConfig, evaluate, train_one

NEED_DOT = pytest.mark.skipif(shutil.which("dot") is None and not os.environ.get("REQUIRE_DOT"),
                              reason="Graphviz 'dot' is not installed")


def test_train_writes_checkpoints_history_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "6", "--length", "6", "--hidden", "4", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rnn step 6/6" in printed and "gru step 6/6" in printed  # plain lines, not a tty
    assert "test accuracy" in printed
    names = {p.name for p in out.iterdir()}
    assert {"rnn.npz", "gru.npz", "history.npz"} <= names
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no plots" in printed
    else:
        assert {"loss.png", "grad_flow.png"} <= names
        assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = np.load(out / "history.npz")
    assert history["gru_loss"].shape == (6,) and history["rnn_grad_flow"].shape == (6,)
    state = checkpoint.load(out / "gru.npz")
    assert state["rnn.weight_hh_l0"].shape == (12, 4)


def test_train_refuses_to_write_over_an_earlier_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "gru.npz").write_bytes(b"earlier")
    assert main(["train", "--steps", "2", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "gru.npz").read_bytes() == b"earlier"


def test_unwritable_output_folder_is_one_clear_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", "--steps", "2", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to output folder" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--length", "-5"], "--length: must be positive"),
    (["train", "--models", "lstm"], "unknown model 'lstm'"),
    (["train", "--task", "copy"], "invalid choice: 'copy'"),
    (["train", "--lr", "abc"], "--lr: not a number"),
    (["graph", "--format", "gif"], "invalid choice: 'gif'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["train", "check", "graph", "bench", "demo"])
def test_every_subcommand_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_check_passes_and_fails_when_a_gradient_is_perturbed(capsys):
    assert main(["check", "--models", "rnn"]) == 0
    assert "within tolerance" in capsys.readouterr().out
    assert main(["check", "--models", "rnn", "--perturb", "rnn.weight_hh_l0"]) == 1
    assert "exceed their tolerance: rnn rnn.weight_hh_l0" in capsys.readouterr().out


@NEED_DOT
def test_graph_renders_and_reports_the_notes_path_counts(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["graph", "--steps", "4", "--grad", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    svg = (out / "gru-unrolled.svg").read_text()
    assert "<svg" in svg and "h~" in svg and "rnn.weight_hh_l0" in svg and "t = 3" in svg
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert [(int(k), int(a), int(b)) for k, a, b in rows] == [(1, 4, 5), (2, 16, 25),
                                                               (3, 64, 125)]


def test_graph_of_the_notes_rnn_counts_two_and_three_paths(tmp_path, capsys):
    main(["graph", "--model", "rnn", "--steps", "3", "--out", str(tmp_path / "g")])
    printed = capsys.readouterr().out
    assert "S_1: 3 through the states" in printed and "S_2: 2 through the states" in printed


def test_bench_runs_the_benchmarks(capsys):
    assert main(["bench", "--quick", "--only", "per_op"]) == 0


def test_demo_prints_gradients(capsys):
    assert main(["demo"]) == 0
    assert "dL/dW" in capsys.readouterr().out


def test_default_training_shows_the_gru_beating_the_rnn():
    """The README's main job, reduced (length 30, 300 steps) but still meaningful: the GRU
    solves the adding problem, the vanilla RNN stays at the baseline (MSE ~0.17)."""
    cfg = TrainConfig(length=30, steps=300)
    results = {}
    for cell in ("rnn", "gru"):
        model, _, _ = train_one(cell, cfg)
        results[cell] = evaluate(model, cfg)
    (rnn_loss, rnn_acc), (gru_loss, gru_acc) = results["rnn"], results["gru"]
    assert gru_loss < 0.01 and gru_acc > 0.5
    assert rnn_loss > 0.1 and rnn_acc < 0.2
