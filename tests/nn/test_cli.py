"""The `bptt` command line end to end, on tiny settings."""
import os
import shutil
import sys

import numpy as np
import pytest

from nn import checkpoint
from nn.cli import main
from nn.cli.training import TrainConfig, evaluate, train_one

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
    assert history["gru_loss"].shape == (1, 6)  # (seeds, steps)
    assert history["rnn_state_grad_norms"].shape == (1, 1, 6)  # (seeds, probes, T)
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


@pytest.mark.parametrize("command", ["train", "check", "graph", "explore", "bench", "demo"])
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
    assert main(["graph", "--steps", "4", "--grad", "--view", "ops", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    svg = (out / "gru-ops.svg").read_text()
    assert "<svg" in svg and "h~" in svg and "rnn.weight_hh_l0" in svg and "t = 3" in svg
    section = printed.split("(note 001):")[1].split("\n\n")[0]
    rows = [line.split() for line in section.splitlines() if line.strip()[:1].isdigit()]
    assert [(int(k), int(a), int(b)) for k, a, b in rows] == [(1, 4, 5), (2, 16, 25),
                                                               (3, 64, 125)]


def test_graph_prints_the_gru_and_lstm_paths_side_by_side(tmp_path, capsys):
    assert main(["graph", "--model", "lstm", "--format", "svg", "--out",
                 str(tmp_path / "g")]) in (0, 1)            # 1 only where dot is missing
    table = capsys.readouterr().out.split("state at T-k (note 001):")[1]
    rows = [line.split() for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("1", "4"), ("2", "16"), ("3", "64")]
    assert "16  <- the note's 16" in table
    assert "24 = 19 to h + 5 to C  <- the note's 24" in table
    assert "5 = 4 to h + 1 to C" in table and "115 = 91 to h + 24 to C" in table


def test_graph_of_the_notes_rnn_counts_two_and_three_paths(tmp_path, capsys):
    main(["graph", "--model", "rnn", "--steps", "3", "--out", str(tmp_path / "g")])
    printed = capsys.readouterr().out
    assert "S_1: 3 through the states" in printed and "S_2: 2 through the states" in printed


@NEED_DOT
def test_graph_draws_note_000s_picture_by_default(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["graph", "--model", "rnn", "--steps", "3", "--format", "png", "--out",
                 str(out)]) == 0
    with open(out / "rnn-notes.png", "rb") as f:
        width = int.from_bytes(f.read(24)[16:20], "big")
    assert 300 < width <= 2000
    assert (out / "rnn-notes.dot").read_text().count("label=0.8") == 1   # w_3 on L_3 -> L


@NEED_DOT
def test_graph_of_a_long_sequence_is_drawn_rolled(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["graph", "--model", "gru", "--steps", "200", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "drawn rolled" in printed and "(x T)" in (out / "gru-rolled.svg").read_text()
    assert main(["graph", "--steps", "50000", "--out", str(tmp_path / "h")]) == 2
    assert "at most 20000" in capsys.readouterr().err


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


# ---- bptt report ------------------------------------------------------------------------------
def _shown_steps(printed):
    """The step numbers of the table rows printed for each model, in order."""
    tables, rows = [], None
    for line in printed.splitlines():
        if line.startswith("  t  ||dL/dh_t||"):
            rows = []
            tables.append(rows)
        elif rows is not None and line[:3].strip().isdigit():
            rows.append(int(line[:3]))
        else:
            rows = None
    return tables


def _matplotlib_installed():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_report_prints_the_table_verdict_and_sum_check_and_writes_files(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--length", "10", "--hidden", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "== rnn: hidden 8, untrained" in printed and "== gru: hidden 8" in printed
    assert _shown_steps(printed) == [list(range(1, 11))] * 2  # short: every row
    assert printed.count("per step back: vanishing") + printed.count("per step back: stable") \
        + printed.count("per step back: exploding") == 2
    sums = [float(line.split("difference ")[1].split()[0]) for line in printed.splitlines()
            if line.startswith("sum check")]
    assert len(sums) == 2 and max(sums) < 1e-12
    for cell, gates in (("rnn", 1), ("gru", 3)):
        saved = np.load(out / f"{cell}_bptt.npz")
        assert saved["state_grad_norms"].shape == (10,)
        assert saved["contributions/rnn.weight_hh_l0"].shape == (10, 8 * gates, 8)
        assert str(saved["verdict"]) in printed
        if _matplotlib_installed():
            assert (out / f"{cell}_bptt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_long_table_shows_every_kth_step_and_the_last_ones(tmp_path, capsys):
    args = ["report", "--models", "rnn", "--length", "50", "--hidden", "4"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert _shown_steps(capsys.readouterr().out) == [[1, *range(5, 50, 5), 46, 47, 48, 49, 50]]
    assert main([*args, "--all-steps", "--out", str(tmp_path / "b")]) == 0
    assert _shown_steps(capsys.readouterr().out) == [list(range(1, 51))]
    assert np.load(tmp_path / "a" / "rnn_bptt.npz")["state_grad_norms"].shape == (50,)


def test_report_loss_on_every_step_keeps_early_gradients_large(tmp_path, capsys):
    args = ["report", "--models", "rnn", "--length", "30", "--hidden", "8"]
    assert main([*args, "--out", str(tmp_path / "last")]) == 0
    assert main([*args, "--every-step", "--out", str(tmp_path / "every")]) == 0
    assert "loss on every step" in capsys.readouterr().out
    last = np.load(tmp_path / "last" / "rnn_bptt.npz")["state_grad_norms"]
    every = np.load(tmp_path / "every" / "rnn_bptt.npz")["state_grad_norms"]
    assert last[0] / last[-1] < 1e-4 < 0.1 < every[0] / every[-1]


def test_report_jacobian_table_on_request(tmp_path, capsys):
    assert main(["report", "--models", "rnn", "--length", "8", "--hidden", "4", "--jacobian",
                 "4", "--out", str(tmp_path / "j")]) == 0
    printed = capsys.readouterr().out
    assert "Jacobians of states 1..4" in printed and "beta_W^(T-k)" in printed
    assert main(["report", "--models", "rnn", "--length", "8", "--hidden", "4", "--out",
                 str(tmp_path / "n")]) == 0
    assert "sigma_k" not in capsys.readouterr().out


def test_report_of_a_trained_run_loads_its_checkpoints(tmp_path, capsys):
    from nn.cli import build_parser
    from nn.cli.report import load_models
    run = tmp_path / "run"
    assert main(["train", "--steps", "3", "--length", "6", "--hidden", "4", "--out",
                 str(run)]) == 0
    assert main(["report", "--checkpoint", str(run), "--length", "6", "--out",
                 str(tmp_path / "trained")]) == 0
    printed = capsys.readouterr().out
    assert f"hidden 4, trained weights from {run / 'gru.npz'}" in printed
    assert main(["report", "--hidden", "4", "--length", "6", "--out",
                 str(tmp_path / "untrained")]) == 0
    for cell in ("rnn", "gru"):
        trained = np.load(tmp_path / "trained" / f"{cell}_bptt.npz")["state_grad_norms"]
        untrained = np.load(tmp_path / "untrained" / f"{cell}_bptt.npz")["state_grad_norms"]
        assert not np.allclose(trained, untrained)
    models = load_models(build_parser().parse_args(["report", "--checkpoint", str(run)]))
    for cell, (model, _, cfg) in models.items():
        saved = checkpoint.load(run / f"{cell}.npz")
        assert cfg.task == "adding" and cfg.hidden == 4
        assert np.array_equal(model.rnn.weight_hh_l0.numpy(), saved["rnn.weight_hh_l0"])


def test_report_of_a_run_takes_the_runs_length_and_task(tmp_path, capsys):
    """A remember run trains at its own length (20 by default, not the adding task's 50):
    the report reads it from the run's config.json; --length still overrides it."""
    run = tmp_path / "run"
    assert main(["train", "--task", "remember", "--models", "gru", "--steps", "2",
                 "--length", "7", "--hidden", "4", "--out", str(run)]) == 0
    assert (run / "config.json").is_file()
    capsys.readouterr()
    assert main(["report", "--checkpoint", str(run), "--out", str(tmp_path / "a")]) == 0
    assert "task: remember, length 7," in capsys.readouterr().out
    assert np.load(tmp_path / "a" / "gru_bptt.npz")["state_grad_norms"].shape == (7,)
    assert main(["report", "--checkpoint", str(run), "--length", "5", "--out",
                 str(tmp_path / "b")]) == 0
    assert "task: remember, length 5," in capsys.readouterr().out
    (run / "config.json").unlink()  # a run folder without it: the task's default length
    assert main(["report", "--checkpoint", str(run), "--out", str(tmp_path / "c")]) == 0
    default = TrainConfig(task="remember").length
    assert f"task: remember, length {default}," in capsys.readouterr().out


def test_report_without_checkpoint_takes_the_tasks_length(tmp_path, capsys):
    assert main(["report", "--task", "remember", "--models", "rnn", "--hidden", "4",
                 "--out", str(tmp_path / "r")]) == 0
    assert f"length {TrainConfig(task='remember').length}," in capsys.readouterr().out


def _gru_only_run(folder):
    from nn.cli.training import SequenceModel
    folder.mkdir()
    checkpoint.save(SequenceModel("gru", 2, 4, 1, rng=0), folder / "gru.npz")
    return str(folder)


@pytest.mark.parametrize("argv, message", [
    (["report", "--models", "rnn,lstm"], "unknown model 'lstm'"),
    (["report", "--length", "0"], "--length: must be positive"),
    (["report", "--length", "1"], "the adding task needs --length 2 or more"),
    (["report", "--jacobian", "1"], "--jacobian needs at least 2 states"),
    (["report", "--every-step", "--last-step-only"], "not allowed with"),
    (["report", "--checkpoint", "{tmp}/missing"], "does not exist"),
    (["report", "--checkpoint", "{gru_run}", "--models", "rnn"], "has no rnn.npz"),
    (["report", "--checkpoint", "{gru_run}", "--hidden", "8"], "has hidden size 4, not 8"),
    (["report", "--checkpoint", "{gru_run}", "--task", "remember"], "trained on the adding"),
    (["report", "--checkpoint", "{tmp}"], "holds neither rnn.npz nor gru.npz"),
])
def test_report_bad_arguments_exit_2_with_one_line(argv, message, tmp_path, capsys):
    fill = {"tmp": str(tmp_path)}
    if any("{gru_run}" in a for a in argv):
        fill["gru_run"] = _gru_only_run(tmp_path / "run")
    out = tmp_path / "out"
    assert main([a.format(**fill) for a in argv] + ["--out", str(out)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()  # nothing is written for a bad request


def test_report_has_help_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "examples:" in printed and "--checkpoint" in printed and "--every-step" in printed


def test_a_reader_that_leaves_early_gets_no_traceback(monkeypatch):
    # `bptt demo | head -1`: the pipe closes while we print; exit quietly with 141 as a shell
    # would (128 + SIGPIPE), not with a BrokenPipeError traceback
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", buffering=1) as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        assert main(["demo"]) == 141
