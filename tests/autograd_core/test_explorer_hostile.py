"""The explorer page against what a hostile user tries: one step, too many steps, a freed
graph, a graph with no steps, NaN and infinite values, a loss with nothing to sweep, and a
browser without network."""
import json
import re

import numpy as np
import pytest

import autograd_core as ag
import nn
from nn.cli import main


def rnn_loss(T, cell="rnn", scale=1.0):
    model = nn.RecurrentClassifier(2, 3, 2, cell=cell, rng=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    with np.errstate(all="ignore"):  # a nan or inf input: the forward warns
        logits, _, _ = model(scale * rng.standard_normal((T, 1, 2)))
    return model, nn.sequence_cross_entropy(logits, rng.integers(0, 2, (T, 1)))


def strict_page_data(path):
    """The page's data, read as strictly as a browser's JSON.parse (no NaN, no Infinity)."""
    text = path.read_text()
    raw = re.search(r'<script id="data" type="application/json">(.*?)</script>', text,
                    re.S).group(1).replace("<\\/", "</")

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(raw, parse_constant=refuse)


def open_and_step_through(browser, path):
    """Load the page offline, click forward to the end; returns (page, errors, requests)."""
    page = browser.new_page()
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri())
    page.click("#last")
    return page, errors, requests


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_and_inf_values_keep_the_page_working(value, dot_program, browser, tmp_path):
    model, loss = rnn_loss(3, scale=value)
    with np.errstate(all="ignore"):
        tr = ag.trace_backward(loss, params=model)
        path = tr.to_html(tmp_path / "p.html", loss, model)
    data = strict_page_data(path)
    assert data["rows"][0]["grad_norm"] == 1.0
    assert "nan" in {p["norm"] for p in data["chart"]}
    page, errors, _ = open_and_step_through(browser, path)
    assert errors == []
    assert page.get_attribute("body", "data-position") == str(len(data["rows"]))
    assert "nan" in page.inner_text("#rule")
    assert page.locator("#chart rect").count() == 3
    page.close()


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_one_step(cell, dot_program, browser, tmp_path, capsys):
    out = tmp_path / f"{cell}.html"
    assert main(["explore", "--model", cell, "--steps", "1", "--out", str(out)]) == 0
    data = strict_page_data(out)
    assert [p["step"] for p in data["chart"]] == [1]
    page, errors, requests = open_and_step_through(browser, out)
    assert errors == [] and page.locator("#chart rect").count() == 1
    assert all(url.startswith("file://") for url in requests)   # nothing from the network
    page.close()


def test_too_many_steps_are_refused_at_once(tmp_path):
    model, loss = rnn_loss(40)
    tr = ag.trace_backward(loss, params=model)
    with pytest.raises(ag.GraphTooLargeError, match="40 steps are too many for the page"):
        tr.to_html(tmp_path / "p.html", loss, model)
    assert not (tmp_path / "p.html").exists()
    assert main(["explore", "--steps", "13"]) == 2


def test_a_freed_graph_is_a_clear_error(dot_program, tmp_path):
    model, loss = rnn_loss(3)
    tr = ag.trace_backward(loss, params=model)
    loss.backward()
    with pytest.raises(RuntimeError, match="to_html: the graph .* was freed"):
        tr.to_html(tmp_path / "p.html", loss, model)
    with pytest.raises(RuntimeError, match="trace_backward: the graph .* was freed"):
        ag.trace_backward(loss, params=model)
    # the trace keeps what it drew: without the loss, its op view still works
    assert strict_page_data(tr.to_html(tmp_path / "ops.html"))["view"] == "ops"


def test_a_graph_without_steps(dot_program, browser, tmp_path):
    mlp = nn.MLP([3, 4, 2], rng=0, dtype=np.float64)
    out = mlp(ag.Tensor(np.ones((2, 3)), name="x"))
    out.name = "a"                                   # named: drawn in the notes view
    loss = (out * out).sum()
    tr = ag.trace_backward(loss, params=mlp)
    path = tr.to_html(tmp_path / "mlp.html", loss, mlp)
    data = strict_page_data(path)
    assert data["view"] == "notes" and data["chart"] == []
    page, errors, _ = open_and_step_through(browser, path)
    assert errors == [] and "no per-step states" in page.text_content("#chart")
    page.close()


def test_a_loss_with_nothing_to_sweep(dot_program, browser, tmp_path):
    leaf = ag.Tensor(2.0, requires_grad=True)
    tr = ag.trace_backward(leaf)
    assert tr.rows == []
    path = tr.to_html(tmp_path / "leaf.html", leaf)
    page, errors, _ = open_and_step_through(browser, path)
    assert errors == [] and page.get_attribute("body", "data-position") == "0"
    page.close()


@pytest.mark.parametrize("loss, error, message", [
    (3.0, TypeError, "must be a Tensor"),
    (ag.Tensor([1.0, 2.0], requires_grad=True) * 2, ValueError, "one element"),
    (ag.Tensor(1.0), ValueError, "does not require grad"),
])
def test_trace_backward_refuses_what_it_cannot_sweep(loss, error, message):
    with pytest.raises(error, match=f"trace_backward: .*{message}"):
        ag.trace_backward(loss)
