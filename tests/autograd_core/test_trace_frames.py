"""BackwardTrace.frames / write_frames: one Graphviz frame per step of the reverse sweep of
note 000's 3-step RNN, with the row's node highlighted, the visited nodes shaded, the edges that
receive a contribution labelled with its norm and the leaves' gradients so far."""
import gc
import re
import weakref

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.trace import CURRENT_NODE, VISITED_NODE
from autograd_core.viz import GraphTooLargeError

_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s\]]+)')
_EDGE = re.compile(r"^\s*(\w+) -> (\w+)(?: \[(.*)\])?$")
_NODE = re.compile(r"^\s*(\w+) \[(.*)\]$")


def parse_frame(source):
    """({node id: attrs}, [(tail, head, attrs)], graph attrs) of DOT written by graphviz."""
    nodes, edges, graph = {}, [], {}
    for line in source.splitlines():
        if m := _EDGE.match(line):
            edges.append((m.group(1), m.group(2), _attrs(m.group(3) or "")))
        elif m := _NODE.match(line):
            ident, attrs = m.group(1), _attrs(m.group(2))
            if ident == "graph" and not graph:
                graph = attrs
            elif ident not in ("graph", "node", "edge"):
                nodes[ident] = attrs
    return nodes, edges, graph


def _attrs(text):
    return {k: v.strip('"') for k, v in _ATTR.findall(text)}


def first_line(attrs):
    return attrs["label"].split("\\n")[0]


def notes_rnn():
    """Note 000 written with the engine's ops: S_t = tanh(U x_t + W S_{t-1} + b_a),
    y_t = softmax(V S_t + b_y), L = L_1 + L_2 + L_3 (hidden 3, input 2, two classes)."""
    rng = np.random.default_rng(0)
    shapes = {"U": (3, 2), "W": (3, 3), "b_a": (3,), "V": (2, 3), "b_y": (2,)}
    p = {k: ag.Tensor(rng.normal(0, 0.6, s), requires_grad=True) for k, s in shapes.items()}
    xs, targets = rng.normal(size=(3, 2)), (0, 1, 1)
    S, loss = ag.Tensor(np.zeros(3)), None
    for t in range(3):
        with ag.step_scope(t):
            S = ag.tanh(p["U"] @ xs[t] + p["W"] @ S + p["b_a"])
            S.name = "S"
            L_t = -ag.log_softmax(p["V"] @ S + p["b_y"])[targets[t]]
        loss = L_t if loss is None else loss + L_t
    return loss, p


def module_rnn():
    """The same unroll through nn: RecurrentClassifier's RNN (as in test_trace.py)."""
    model = nn.RecurrentClassifier(2, 3, 2, cell="rnn", rng=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    return model.loss(rng.standard_normal((3, 1, 2)), rng.integers(0, 2, (3, 1))), model


@pytest.fixture(params=["ops", "module"])
def traced(request):
    loss, params = notes_rnn() if request.param == "ops" else module_rnn()
    return ag.trace_backward(loss, params=params)


def test_one_frame_per_row_plus_the_forward_graph(traced, tmp_path):
    paths = traced.write_frames(tmp_path, format="dot")
    assert len(paths) == len(traced.rows) + 1
    assert [p.name for p in paths] == [f"frame_{k:03d}.dot" for k in range(len(paths))]
    assert sorted(tmp_path.iterdir()) == paths
    nodes, edges, graph = parse_frame(paths[0].read_text())
    assert len(nodes) == len(traced.graph) + sum(d.op is not None for d in traced.graph.values())
    assert "before the sweep" in graph["label"]
    assert not any("label" in attrs for _, _, attrs in edges)
    assert not any(a.get("fillcolor") in (CURRENT_NODE["fillcolor"], VISITED_NODE["fillcolor"])
                   for a in nodes.values())


def test_each_frame_highlights_its_row_and_shades_the_visited(traced, tmp_path):
    paths = traced.write_frames(tmp_path, format="dot")
    for k, (row, path) in enumerate(zip(traced.rows, paths[1:])):
        nodes, _, graph = parse_frame(path.read_text())
        current = [first_line(a) for a in nodes.values()
                   if a.get("fillcolor") == CURRENT_NODE["fillcolor"]]
        assert current == [row["node"]], k
        shaded = {first_line(a) for a in nodes.values()
                  if a.get("fillcolor") == VISITED_NODE["fillcolor"]}
        assert shaded == {r["node"] for r in traced.rows[:k]}
        assert graph["label"].startswith(f"step {k + 1}/{len(traced.rows)}: {row['node']}")


def test_edge_labels_are_the_norms_the_row_sent(traced, tmp_path):
    paths = traced.write_frames(tmp_path, format="dot")
    for row, path in zip(traced.rows, paths[1:]):
        nodes, edges, _ = parse_frame(path.read_text())
        ident = {first_line(a): k for k, a in nodes.items() if "_op" not in k}
        labelled = sorted((tail, head, float(attrs["label"].split()[1]))
                          for tail, head, attrs in edges if "label" in attrs)
        expected = sorted((ident[s["input"]], ident[row["node"]] + "_op", s["norm"])
                          for s in row["sent"])
        assert len(labelled) == len(expected) > 0
        for (tail, head, shown), (e_tail, e_head, norm) in zip(labelled, expected):
            assert (tail, head) == (e_tail, e_head)
            assert shown == pytest.approx(norm, rel=5e-4, abs=1e-12)   # written as %.4g


def test_leaves_show_the_gradient_gathered_so_far(tmp_path):
    loss, params = notes_rnn()
    trace = ag.trace_backward(loss, params=params)
    last = parse_frame(trace.write_frames(tmp_path, format="dot")[-1].read_text())[0]
    shown = {first_line(a): a["label"].split("\\n")[-1] for a in last.values()
             if first_line(a) in params}
    assert set(shown) == set(params)
    for name, text in shown.items():
        assert text.startswith("|grad| so far ")
        final = np.linalg.norm(trace.gradients[name])
        assert float(text.split()[-1]) == pytest.approx(final, rel=5e-4)
    # W first receives a gradient from S_3's step, so it has no total before that row.
    first_w = next(r["index"] for r in trace.rows if any(s["input"] == "W" for s in r["sent"]))
    before = parse_frame(trace.frames()[first_w - 1].source)[0]
    assert "so far" not in next(a["label"] for a in before.values() if first_line(a) == "W")


def test_frames_outlive_the_graph(tmp_path):
    loss, params = notes_rnn()
    trace = ag.trace_backward(loss, params=params)
    loss.backward()                     # frees the graph; the trace holds no tensor
    graph_end = weakref.ref(loss)
    del loss
    gc.collect()
    assert graph_end() is None
    assert len(trace.write_frames(tmp_path, format="dot")) == len(trace.rows) + 1


def test_size_guard(tmp_path):
    loss, params = notes_rnn()
    trace = ag.trace_backward(loss, params=params)
    with pytest.raises(GraphTooLargeError, match="max_nodes="):
        trace.write_frames(tmp_path / "frames", format="dot", max_nodes=len(trace.graph) - 1)
    assert not (tmp_path / "frames").exists()
    assert len(trace.write_frames(tmp_path / "frames", format="dot",
                                  max_nodes=len(trace.graph))) == len(trace.rows) + 1
    x = ag.Tensor(np.zeros(1), requires_grad=True)
    y = x
    for _ in range(300):
        y = ag.tanh(y)
    with pytest.raises(GraphTooLargeError):
        ag.trace_backward(y.sum()).frames()


def test_bad_format_and_hand_made_trace(tmp_path):
    loss, params = notes_rnn()
    with pytest.raises(ValueError, match=r"format.*'jpg'"):
        ag.trace_backward(loss, params=params).write_frames(tmp_path, format="jpg")
    with pytest.raises(ValueError, match="no graph"):
        ag.BackwardTrace([], {}, {}).frames()


def test_missing_dot_says_install_or_use_dot_format(tmp_path, monkeypatch):
    loss, params = notes_rnn()
    trace = ag.trace_backward(loss, params=params)
    monkeypatch.setenv("PATH", "")
    for fmt in ("svg", "png"):
        with pytest.raises(RuntimeError, match=r'install graphviz.*format="dot"'):
            trace.write_frames(tmp_path / fmt, format=fmt)
        assert not (tmp_path / fmt).exists()
    assert len(trace.write_frames(tmp_path / "dot", format="dot")) == len(trace.rows) + 1


# ----------------------------------------------------------------------------- the real `dot`
# (the dot_program fixture is in tests/conftest.py)


def test_svg_frames_render(dot_program, tmp_path):
    loss, params = notes_rnn()
    trace = ag.trace_backward(loss, params=params)
    paths = trace.write_frames(tmp_path)
    assert [p.suffix for p in paths] == [".svg"] * (len(trace.rows) + 1)
    for row, path in zip([None, *trace.rows], paths):
        text = path.read_text()
        assert text.lstrip().startswith("<?xml") and text.rstrip().endswith("</svg>")
        assert (path.with_suffix(".dot")).is_file()
        if row is not None:
            assert f"step {row['index']}/" in text and CURRENT_NODE["fillcolor"] in text
    assert "sent " in paths[1].read_text() and "t = 2" in paths[0].read_text()
