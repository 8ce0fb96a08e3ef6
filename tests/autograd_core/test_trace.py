"""trace_backward: the reverse sweep of note 000's 3-step RNN, row by row."""
import json

import numpy as np
import pytest

import autograd_core as ag
import nn


def _notes_rnn_loss():
    model = nn.RecurrentClassifier(2, 3, 2, cell="rnn", rng=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    return model, model.loss(rng.standard_normal((3, 1, 2)), rng.integers(0, 2, (3, 1)))


def test_rows_accumulate_to_the_final_gradients_and_grad_is_untouched():
    model, loss = _notes_rnn_loss()
    trace = ag.trace_backward(loss, params=model)
    assert all(p.grad is None for p in model.parameters())
    loss.backward()  # the graph was kept: the real backward still runs
    for name, p in model.named_parameters():
        np.testing.assert_allclose(trace.totals[name], p.grad.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(trace.gradients[name], p.grad.numpy(), rtol=1e-12)


def test_rows_follow_the_sweep_with_steps_rules_and_norms():
    model, loss = _notes_rnn_loss()
    rows = ag.trace_backward(loss, params=model).rows
    assert rows[0]["op"] == "sum" and rows[0]["grad_norm"] == 1.0
    tanh_rows = [r for r in rows if r["op"] == "tanh"]
    assert [r["step"] for r in tanh_rows] == [2, 1, 0]  # back in time
    assert all(r["rule"] == "d tanh(x) = (1 - y^2) g" for r in tanh_rows)
    # what a node receives is the sum of what was sent to it
    received = {}
    for r in rows:
        for s in r["sent"]:
            received.setdefault(s["input"], []).append(s["norm"])
    for r in rows[1:]:
        if len(received[r["node"]]) == 1:
            assert r["grad_norm"] == pytest.approx(received[r["node"]][0])


def test_markdown_and_json(tmp_path):
    model, loss = _notes_rnn_loss()
    trace = ag.trace_backward(loss, params=model)
    trace.write(tmp_path / "sweep")
    md = (tmp_path / "sweep.md").read_text()
    assert md.startswith("| # | node |") and "rnn.weight_hh_l0 +=" in md
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert len(data["rows"]) == len(trace.rows) and "out.weight" in data["gradients"]


def test_freed_graph_is_a_clear_error():
    x = ag.Tensor([1.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="trace_backward: the graph .* was freed"):
        ag.trace_backward(loss)
