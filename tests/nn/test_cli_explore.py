"""`bptt explore --checkpoint`: the sweep of a model `bptt train` saved, on one batch of its
task, with its own read-out and loss; a bad or mismatched checkpoint is one line, no page."""
import json
import re

import numpy as np
import pytest

import autograd_core as ag
import nn
from nn import checkpoint
from nn.cli import main
from nn.cli.training import SequenceModel


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny bptt train run (both models, adding task, hidden 4)."""
    folder = tmp_path_factory.mktemp("explore") / "run"
    assert main(["train", "--steps", "3", "--length", "6", "--hidden", "4", "--out",
                 str(folder)]) == 0
    return folder


def page_data(path):
    text = path.read_text()
    return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>',
                                text, re.S).group(1).replace("<\\/", "</"))


def expected_state_norms(path, cell, steps, batch, seed):
    """||dL/dh_t|| of the saved model on the batch explore draws, computed here directly."""
    model = SequenceModel(cell, 2, 4, 1, rng=0)
    checkpoint.load(path, module=model)
    model = model.double()
    xs, target = nn.tasks.adding_problem(batch, steps, np.random.default_rng(seed))
    pred, hidden = model(xs.astype(np.float64))
    loss = nn.mse_loss(pred[:, 0], target)
    grads = ag.grad(loss, nn.diagnostics.step_states(hidden))
    return [float(np.linalg.norm(g.numpy())) for g in grads], float(loss.numpy())


@pytest.mark.parametrize("which", ["folder", "file"])
def test_explore_a_trained_gru(which, run, dot_program, tmp_path, capsys):
    out = tmp_path / "trained.html"
    source = ["--checkpoint", str(run), "--model", "gru"] if which == "folder" else \
        ["--checkpoint", str(run / "gru.npz")]
    assert main(["explore", *source, "--steps", "5", "--batch", "3", "--seed", "7",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"trained GRU of {run / 'gru.npz'}" in printed and "adding-task batch of 3" in printed
    data = page_data(out)
    assert data["view"] == "notes"
    norms, loss = expected_state_norms(run / "gru.npz", "gru", 5, 3, 7)
    assert [p["step"] for p in data["chart"]] == [5, 4, 3, 2, 1]
    np.testing.assert_allclose([p["norm"] for p in data["chart"]], norms[::-1], rtol=1e-12)
    labels = {v["label"] for v in data["nodes"].values()}
    assert {"h_1", "h_5", "z_5", "h~_1", "y", "target", "L"} <= labels
    root = next(v for v in data["nodes"].values() if v["label"] == "L")
    assert root["value"].startswith(f"[{loss:.3g}]")


def test_the_trained_page_steps_through_in_a_browser(run, dot_program, browser, tmp_path):
    out = tmp_path / "rnn.html"
    assert main(["explore", "--checkpoint", str(run / "rnn.npz"), "--steps", "4",
                 "--out", str(out)]) == 0
    data = page_data(out)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.resolve().as_uri())
    page.click("#last")
    assert page.get_attribute("body", "data-position") == str(len(data["rows"]))
    assert page.locator("#chart rect").count() == 4
    page.click("#first")
    page.click("#next")
    current = page.get_attribute("body", "data-current").split()
    assert [data["nodes"][c]["label"] for c in current] == ["L"]
    assert errors == []
    page.close()


def _lstm_checkpoint(folder):
    path = folder / "lstm.npz"
    checkpoint.save(nn.RecurrentClassifier(2, 4, 1, cell="lstm", rng=0), path)
    return path


def _classifier_checkpoint(folder):
    path = folder / "classifier.npz"
    checkpoint.save(nn.RecurrentClassifier(2, 4, 3, cell="rnn", rng=0), path)
    return path


def _corrupt(folder):
    folder = folder / "bad"
    folder.mkdir()
    path = folder / "gru.npz"
    path.write_bytes(b"not a zip file")
    return path


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "{tmp}/missing"], "does not exist"),
    (["--checkpoint", "{tmp}"], "holds neither rnn.npz nor gru.npz"),
    (["--checkpoint", "{run}/history.npz"], "is not a bptt train checkpoint"),
    (["--checkpoint", "{run}/gru.npz", "--model", "rnn"], "holds a GRU, not an RNN"),
    (["--checkpoint", "{run}", "--model", "lstm"], "saves an RNN or a GRU, not an LSTM"),
    (["--checkpoint", "{lstm}"], "with 4 gates"),
    (["--checkpoint", "{classifier}"], "fits neither the adding nor the remember task"),
    (["--checkpoint", "{corrupt}"], "cannot be read"),
    (["--checkpoint", "{run}", "--steps", "1"], "the adding task needs --steps 2 or more"),
    (["--batch", "2"], "--batch is for --checkpoint"),
])
def test_a_bad_checkpoint_is_one_line_and_no_page(argv, message, run, tmp_path, capsys):
    fill = {"tmp": tmp_path, "run": run, "lstm": _lstm_checkpoint(tmp_path),
            "classifier": _classifier_checkpoint(tmp_path), "corrupt": _corrupt(tmp_path)}
    out = tmp_path / "page.html"
    capsys.readouterr()
    assert main(["explore", *[a.format(**fill) for a in argv], "--out", str(out)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()
