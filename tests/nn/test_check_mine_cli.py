"""`bptt check --mine FILE.py`: a learner's file, checked from the command line."""
import numpy as np
import pytest

import nn
from nn.learner_file import MODELS, example_problem
from nn.cli import main

# A learner's file: BPTT of the notes' RNN, written out by hand.
LEARNER = '''
import numpy as np


def backward(params, xs, targets, step_weights):
    U, W = params["rnn.weight_ih_l0"], params["rnn.weight_hh_l0"]
    b = params["rnn.bias_ih_l0"] + params["rnn.bias_hh_l0"]
    V, c = params["out.weight"], params["out.bias"]
    T, B, _ = xs.shape
    hs = [np.zeros((B, W.shape[0]))]
    for t in range(T):
        hs.append(np.tanh(xs[t] @ U.T + hs[-1] @ W.T + b))
    grads = {name: np.zeros_like(p) for name, p in params.items()}
    per_step = {name: [None] * T for name in params}
    dh_all, from_later = [None] * T, np.zeros_like(hs[0])
    for t in reversed(range(T)):
        h, h_prev = hs[t + 1], hs[t]
        p = np.exp(h @ V.T + c)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(B), targets[t]] -= 1
        g = step_weights[t] * p / B
        dh_all[t] = dh = g @ V + from_later
        delta = dh * (1 - h ** 2)
        terms = {"out.weight": g.T @ h, "out.bias": g.sum(0), "rnn.weight_ih_l0": delta.T @ xs[t],
                 "rnn.weight_hh_l0": delta.T @ h_prev, "rnn.bias_ih_l0": delta.sum(0),
                 "rnn.bias_hh_l0": delta.sum(0)}
        for name, term in terms.items():
            per_step[name][t] = term
            grads[name] += term
        from_later = delta @ W
    return {**grads, "per_step": per_step, "dh": dh_all}
'''
CORRECT = "delta = dh * (1 - h ** 2)"
WRONG = "delta = dh if t == 1 else dh * (1 - h ** 2)"  # tanh' forgotten at step 2


def learner_file(tmp_path, text=LEARNER, name="mine.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_correct_file_exits_0(tmp_path, capsys):
    assert main(["check", "--mine", learner_file(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "for model rnn: T = 4 steps" in out and "rnn.weight_hh_l0 (4, 4)" in out
    assert "all 34 quantities agree within a relative 1e-08" in out


@pytest.mark.parametrize("steps, seed", [(4, 0), (7, 3)])
def test_a_wrong_file_exits_1_and_names_the_step(tmp_path, capsys, steps, seed):
    path = learner_file(tmp_path, LEARNER.replace(CORRECT, WRONG))
    assert main(["check", "--mine", path, "--steps", str(steps), "--seed", str(seed)]) == 1
    out = capsys.readouterr().out
    assert "first divergence: rnn.weight_ih_l0 at step 2" in out
    assert "where to look: dL/dh_2 agrees but step 2's term" in out
    assert "local derivative at step 2" in out


def test_a_file_for_another_model_is_reported_not_thrown(tmp_path, capsys):
    # the RNN derivation on a GRU's stacked (3H, .) weights fails inside the learner's code
    assert main(["check", "--mine", learner_file(tmp_path), "--model", "gru"]) == 1
    out = capsys.readouterr().out
    assert "backward raised ValueError" in out and "mine.py:" in out


@pytest.mark.parametrize("model", list(MODELS))
def test_every_model_can_be_checked_from_a_file(tmp_path, model):
    make = "mlp_student()" if model.startswith("mlp") else f"student({model!r})"
    path = learner_file(tmp_path, "from tests.nn.backward_students import mlp_student, "
                                  f"student\nbackward = {make}\n")
    report = nn.check_backward_file(path, model=model, steps=3, seed=1)
    assert report.ok, report.table()
    assert report.kind == ("mlp" if model.startswith("mlp") else MODELS[model]["cell"])


def test_example_problems_have_the_documented_shapes():
    net, xs, ys = example_problem("lstm", steps=6, seed=2)
    assert xs.shape == (6, 2, 3) and ys.shape == (6, 2)
    assert net.state_dict()["rnn.weight_hh_l0"].shape == (16, 4)
    net, x, y = example_problem("mlp")
    assert x.shape == (2, 3) and y.dtype == np.float64 and y.shape == (2, 2)
    assert example_problem("mlp-ce")[2].dtype.kind == "i"
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        example_problem("cnn")


@pytest.mark.parametrize("text, message", [
    ("import numpy as np\n\ndef forward(x):\n    return x\n",
     "does not define a function backward(params, xs, targets, step_weights)"),
    ("def backward(params, xs, targets, step_weights)\n    return {}\n", ":1: syntax error"),
    ("import numpy as np\n\nnp.load('no-such-file.npy')\n",
     ":3: importing it raised FileNotFoundError"),
    ("backward = 3\n", "does not define a function backward"),
])
def test_an_unusable_file_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    assert main(["check", "--mine", learner_file(tmp_path, text)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and captured.err.count("\n") == 1
    assert captured.err.startswith("bptt check --mine: ")


def test_a_missing_file_and_stray_options_exit_2(tmp_path, capsys):
    assert main(["check", "--mine", str(tmp_path / "absent.py")]) == 2
    assert "absent.py: no such file" in capsys.readouterr().err
    assert main(["check", "--model", "gru"]) == 2
    assert "--model and --steps go with --mine FILE.py" in capsys.readouterr().err
    assert main(["check", "--mine", "x.py", "--steps", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
