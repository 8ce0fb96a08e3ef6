"""The sweep explorer page (trace_backward(...).to_html, bptt explore), loaded and stepped
through in a real headless browser: what is highlighted at each step must be the row's node,
the edges that receive its gradients, and the chart must fill in as the sweep reaches h_t."""
import json
import re

import numpy as np
import pytest

import autograd_core as ag
import nn
from nn.cli import main


def rnn_loss(T=3, cell="rnn"):
    model = nn.RecurrentClassifier(2, 3, 2, cell=cell, rng=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    logits, _, _ = model(rng.standard_normal((T, 1, 2)))
    weights = (0.1, 0.1, 0.8) if T == 3 else None
    return model, nn.sequence_cross_entropy(logits, rng.integers(0, 2, (T, 1)), weights)


def page_data(path):
    text = path.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    return json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>',
                                text, re.S).group(1).replace("<\\/", "</"))


def test_page_data_follows_the_trace(dot_program, tmp_path):
    model, loss = rnn_loss()
    tr = ag.trace_backward(loss, params=model)
    data = page_data(tr.to_html(tmp_path / "p.html", loss, model))
    assert data["view"] == "notes" and len(data["rows"]) == len(tr.rows)
    assert [r["grad_norm"] for r in data["rows"]] == [r["grad_norm"] for r in tr.rows]
    labels = {k: v["label"] for k, v in data["nodes"].items()}
    # chart: ||dL/dS_t|| for t = 3, 2, 1 in sweep order, equal to the engine's gradients
    states = sorted((t for t in ag.walk_graph(loss) if t.name == "h"), key=lambda t: t.step)
    grads = ag.grad(loss, states, retain_graph=True)
    assert [p["step"] for p in data["chart"]] == [3, 2, 1]
    np.testing.assert_allclose([p["norm"] for p in data["chart"]],
                               [np.linalg.norm(g.numpy()) for g in grads[::-1]], rtol=1e-12)
    first = data["rows"][0]
    assert [labels[t] for t in first["current"]] == ["L"]
    mul = data["rows"][1]                        # L = sum_t w_t L_t: the weighted edges
    assert sorted(labels[e.split("->")[0]] for s in mul["sent"] for e in s["edges"]) == \
        ["L_1", "L_2", "L_3"]
    ops = page_data(tr.to_html(tmp_path / "ops.html"))
    assert ops["view"] == "ops" and len(ops["rows"]) == len(tr.rows)


def edge_norms(data, row, labels):
    """{(tail label, head label): norm} of the edges a row marks."""
    return {tuple(labels[x] for x in e.split("->")): n for s in row["sent"]
            for e, n in zip(s["edges"], s["edge_norms"])}


def test_edges_into_per_step_copies_carry_that_steps_gradient(dot_program, tmp_path):
    # y_t, L_t and the input projection are one tensor for all steps, drawn once per step:
    # the edge into copy t carries step t's share, as nn.manual derives it per step
    from nn.manual import rnn_forward_backward
    model, loss = rnn_loss()
    rng = np.random.default_rng(0)
    xs, targets = rng.standard_normal((3, 1, 2)), rng.integers(0, 2, (3, 1))
    ref = rnn_forward_backward(model.state_dict(), xs, targets, step_weights=(0.1, 0.1, 0.8))
    tr = ag.trace_backward(loss, params=model)
    data = page_data(tr.to_html(tmp_path / "p.html", loss, model))
    labels = {k: v["label"] for k, v in data["nodes"].items()}
    marked = {}
    for row in data["rows"]:
        marked.update(edge_norms(data, row, labels))
    logits = next(t for t in ag.walk_graph(loss) if t.name == "y")
    (g_y,) = ag.grad(loss, [logits], retain_graph=True)
    step = ref.step_grads
    for t in range(3):
        n = t + 1
        assert marked[(f"L_{n}", "L")] == pytest.approx((0.1, 0.1, 0.8)[t], rel=1e-6)
        for edge, expected in [((f"y_{n}", f"L_{n}"), g_y.numpy()[t]),
                               (("V", f"y_{n}"), step["out.weight"][t]),
                               (("b_y", f"y_{n}"), step["out.bias"][t]),
                               (("U", f"S_{n}"), step["rnn.weight_ih_l0"][t]),
                               (("b_a", f"S_{n}"), step["rnn.bias_ih_l0"][t])]:
            assert marked[edge] == pytest.approx(np.linalg.norm(expected), rel=1e-9), edge
        hover = next(v for v in data["nodes"].values() if v["label"] == f"y_{n}")
        assert hover["grad"] == pytest.approx(np.linalg.norm(g_y.numpy()[t]), rel=1e-9)
    # a state's slice of the input projection is no edge from another step's state
    assert all(not (a.startswith("S_") and b.startswith("S_")) or
               int(b[2:]) == int(a[2:]) + 1 for a, b in marked)


def test_stepping_through_the_sweep_in_a_browser(dot_program, browser, tmp_path):
    model, loss = rnn_loss()
    tr = ag.trace_backward(loss, params=model)
    path = tr.to_html(tmp_path / "p.html", loss, model)
    data = page_data(path)
    labels = {k: v["label"] for k, v in data["nodes"].items()}
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.resolve().as_uri())
    assert page.get_attribute("body", "data-position") == "0"
    assert page.locator("g.node.current").count() == 0
    seen_states = []
    for k, row in enumerate(data["rows"], start=1):
        page.click("#next")
        assert page.get_attribute("body", "data-position") == str(k)
        current = page.get_attribute("body", "data-current").split()
        assert sorted(current) == sorted(row["current"])
        highlighted = [g.text_content().strip() for g in page.locator(
            "g.node.current > title").all()]
        assert sorted(highlighted) == sorted(row["current"])
        sent = [t.text_content() for t in page.locator("g.edge.sent > title").all()]
        assert sorted(sent) == sorted({e for s in row["sent"] for e in s["edges"]})
        assert len(page.locator("text.gradlabel").all()) == sum(len(s["edges"])
                                                                for s in row["sent"])
        assert row["node"] in page.inner_text("#rule")
        if row["rule"]:
            assert row["rule"] in page.inner_text("#rule")
        if [labels[c] for c in current] in (["S_3"], ["S_2"], ["S_1"]) and \
                row["node"].startswith("h#"):
            seen_states.append(labels[current[0]])
            bars = page.locator("#chart rect").count()
            assert bars == len(seen_states)
            assert page.locator("#chart rect.now").count() == 1
    assert seen_states == ["S_3", "S_2", "S_1"]
    # the edge from L_3 into L carries the gradient 0.8 * 1 when row 2 (the weighting) runs
    page.click("#first")
    page.click("#next")
    page.click("#next")
    texts = sorted(t.text_content() for t in page.locator("text.gradlabel").all())
    assert texts == ["0.1000", "0.1000", "0.8000"]     # w_t: each step's own gradient
    page.click("#prev")
    assert page.get_attribute("body", "data-position") == "1"
    assert page.locator("text.gradlabel").count() == 0
    # hover shows a value and a gradient
    w = next(k for k, v in labels.items() if v == "W")
    page.hover(f"g.node:has(> title:text-is('{w}'))")
    hover = page.inner_text("#hover")
    (w_grad,) = ag.grad(loss, [model.rnn.weight_hh_l0], retain_graph=True)
    assert hover.startswith("W\nvalue ") and f"{np.linalg.norm(w_grad.numpy()):.4g}" in hover
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("body", "data-position") == "2"
    assert errors == []
    page.close()


def test_bptt_explore_writes_a_page_a_browser_steps_through(dot_program, browser, tmp_path,
                                                            capsys):
    out = tmp_path / "gru.html"
    assert main(["explore", "--model", "gru", "--steps", "2", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    data = page_data(out)
    page = browser.new_page()
    page.goto(out.resolve().as_uri())
    page.click("#last")
    assert page.get_attribute("body", "data-position") == str(len(data["rows"]))
    assert page.locator("#chart rect").count() == 2
    titles = {v["label"] for v in data["nodes"].values()}
    assert {"h_1", "h_2", "h~_1", "z_2", "r_2", "x_1", "L"} <= titles
    page.close()
    assert main(["explore", "--steps", "40", "--out", str(out)]) == 2
    assert "at most 12" in capsys.readouterr().err


def test_to_html_without_a_graph_is_a_clear_error(tmp_path):
    tr = ag.BackwardTrace(rows=[], gradients={}, totals={})
    with pytest.raises(ValueError, match="no graph to draw"):
        tr.to_html(tmp_path / "p.html")
