"""Graphviz export (autograd_core.viz): the DOT structure of known graphs, labels, styles,
gradient norms, one cluster per time step, the size guard, and rendering through the real
`dot` program (and the error when it is missing)."""
import math
import re

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.viz import DEFAULT_MAX_NODES, GraphTooLargeError

_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s\]]+)')
_NODE = re.compile(r"^\s*(\w+) \[(.*)\]$")
_EDGE = re.compile(r"^\s*(\w+) -> (\w+)\s*$")


def parse_dot(source):
    """{node id: attrs}, [(tail, head)], {cluster name: (label, [node ids])} from DOT source
    as the graphviz package writes it (one statement per line)."""
    nodes, edges, clusters, current = {}, [], {}, None
    for line in source.splitlines():
        if m := re.match(r"^\s*subgraph (\w+) \{", line):
            current = m.group(1)
            clusters[current] = [None, []]
        elif re.match(r"^\s*\}", line):
            current = None
        elif m := _EDGE.match(line):
            edges.append(m.groups())
        elif m := _NODE.match(line):
            ident, attrs = m.group(1), dict(_ATTR.findall(m.group(2)))
            attrs = {k: v.strip('"') for k, v in attrs.items()}
            if ident == "graph" and current is not None:
                clusters[current][0] = attrs.get("label")
            elif ident not in ("graph", "node", "edge"):
                nodes[ident] = attrs
                if current is not None:
                    clusters[current][1].append(ident)
    return nodes, edges, {k: tuple(v) for k, v in clusters.items()}


def tensor_nodes(nodes):
    return {k: v for k, v in nodes.items() if v.get("shape") == "box"}


def op_nodes(nodes):
    return {k: v for k, v in nodes.items() if v.get("shape") == "ellipse"}


def label_lines(attrs):
    return attrs["label"].split("\\n")


def node_by_first_line(nodes, first):
    found = [k for k, v in tensor_nodes(nodes).items() if label_lines(v)[0] == first]
    assert len(found) == 1, (first, found)
    return found[0]


@pytest.fixture
def small():
    """y = tanh(x @ W + b).sum(): 7 tensors (x, W, b, x@W, +b, tanh, sum), 4 ops and
    10 edges (matmul 2 in + 1 out, add 2 + 1, tanh 1 + 1, sum 1 + 1)."""
    rng = np.random.default_rng(0)
    x = ag.Tensor(rng.normal(size=(2, 3)), name="x")
    W = ag.Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    b = ag.Tensor(rng.normal(size=(4,)), requires_grad=True)
    mm = x @ W
    a = mm + b
    t = ag.tanh(a)
    y = t.sum()
    return dict(x=x, W=W, b=b, mm=mm, a=a, t=t, y=y)


def test_small_graph_structure(small):
    nodes, edges, clusters = parse_dot(ag.to_dot(small["y"], params={"W": small["W"],
                                                                      "b": small["b"]}).source)
    tensors, ops = tensor_nodes(nodes), op_nodes(nodes)
    assert len(tensors) == 7 and len(ops) == 4 and len(nodes) == 11
    assert len(edges) == 10
    assert clusters == {}
    assert sorted(v["label"] for v in ops.values()) == ["add", "matmul", "sum", "tanh"]
    # Forward direction: every edge goes tensor -> op or op -> tensor; each op has exactly one
    # outgoing edge (its result) and as many incoming edges as inputs.
    for tail, head in edges:
        assert (tail in tensors and head in ops) or (tail in ops and head in tensors)
    n_in = {o: sum(h == o for _, h in edges) for o in ops}
    n_out = {o: sum(t == o for t, _ in edges) for o in ops}
    assert all(v == 1 for v in n_out.values())
    assert sorted(n_in[o] for o in ops) == [1, 1, 2, 2]
    # W and x feed matmul; the sum's result is the root with no outgoing edge.
    W_id, x_id = node_by_first_line(nodes, "W"), node_by_first_line(nodes, "x")
    matmul = next(o for o, v in ops.items() if v["label"] == "matmul")
    assert {(x_id, matmul), (W_id, matmul)} <= set(edges)
    sinks = [t for t in tensors if not any(tail == t for tail, _ in edges)]
    assert len(sinks) == 1 and label_lines(tensors[sinks[0]])[0] == "() float64"


def test_repeated_input_gives_parallel_edges_and_leaf_alone():
    x = ag.Tensor([1.0, 2.0], requires_grad=True, name="x")
    nodes, edges, _ = parse_dot(ag.to_dot(x * x).source)
    assert len(tensor_nodes(nodes)) == 2 and len(op_nodes(nodes)) == 1
    assert len(edges) == 3 and len(set(edges)) == 2    # x -> mul twice, mul -> result
    nodes, edges, _ = parse_dot(ag.to_dot(x).source)
    assert len(nodes) == 1 and edges == []
    # Two roots that share a graph draw each tensor once.
    y = ag.tanh(x)
    z = (y * 2.0).sum()
    nodes, edges, _ = parse_dot(ag.to_dot([y, z]).source)
    assert len(tensor_nodes(nodes)) == 4 and len(op_nodes(nodes)) == 3 and len(edges) == 6


def test_labels_name_shape_dtype(small):
    nodes, _, _ = parse_dot(ag.to_dot(small["y"], params={"W": small["W"],
                                                           "b": small["b"]}).source)
    assert label_lines(nodes[node_by_first_line(nodes, "W")]) == ["W", "(3, 4) float64"]
    assert label_lines(nodes[node_by_first_line(nodes, "b")]) == ["b", "(4,) float64"]
    assert label_lines(nodes[node_by_first_line(nodes, "x")]) == ["x", "(2, 3) float64"]
    unnamed = sorted(v["label"] for v in tensor_nodes(nodes).values() if "\\n" not in v["label"])
    assert unnamed == ["() float64", "(2, 4) float64", "(2, 4) float64", "(2, 4) float64"]
    # Without params= a tensor's own name is used, and unnamed leaves show only shape/dtype.
    nodes, _, _ = parse_dot(ag.to_dot(small["y"]).source)
    assert sum(v["label"] == "(3, 4) float64" for v in nodes.values()) == 1


def test_labels_from_module_named_parameters():
    model = nn.RecurrentClassifier(2, 3, 4, cell="gru", rng=0)
    logits, _, _ = model(np.ones((2, 1, 2), dtype=np.float32))
    nodes, _, _ = parse_dot(ag.to_dot(logits, params=model).source)
    firsts = [label_lines(v)[0] for v in tensor_nodes(nodes).values()]
    for name, p in model.named_parameters():
        assert firsts.count(name) == 1, name
        ident = node_by_first_line(nodes, name)
        assert label_lines(nodes[ident])[1] == f"{tuple(p.shape)} float32"
    # (name, tensor) pairs work too.
    linear = nn.Linear(3, 2, rng=0)
    out = linear(ag.Tensor(np.ones((1, 3), dtype=np.float32)))
    nodes, _, _ = parse_dot(ag.to_dot(out, params=list(linear.named_parameters())).source)
    assert {"weight", "bias"} <= {label_lines(v)[0] for v in nodes.values()}


def test_parameters_data_intermediates_styled_apart(small):
    nodes, _, _ = parse_dot(ag.to_dot(small["y"], params={"W": small["W"],
                                                           "b": small["b"]}).source)

    def style(ident):
        v = nodes[ident]
        return (v.get("style"), v.get("fillcolor"))

    W, b, x = (node_by_first_line(nodes, n) for n in ("W", "b", "x"))
    inter = [k for k, v in tensor_nodes(nodes).items() if v["label"] == "(2, 4) float64"]
    root = node_by_first_line(nodes, "() float64")
    assert style(W) == style(b) and "filled" in style(W)[0]
    assert "dashed" in style(x)[0]
    assert len({style(k) for k in inter}) == 1
    assert "bold" in style(root)[0]
    assert len({style(W), style(x), style(inter[0]), style(root)}) == 4


def _check_norm(text, value):
    """`text` is `value` written to 3 significant digits."""
    shown = float(text)
    half_unit = 0.5 * 10.0 ** (math.floor(math.log10(abs(value))) - 2)
    assert abs(shown - value) <= half_unit * (1 + 1e-9), (text, value)


def test_show_grad_norms_equal_numpy_gradients(small):
    x, W, b = small["x"].numpy(), small["W"].numpy(), small["b"].numpy()
    d_a = 1 - np.tanh(x @ W + b) ** 2                      # dy/da, also dy/d(x @ W)
    dot = ag.to_dot(small["y"], params={"W": small["W"], "b": small["b"]}, show_grad=True)
    nodes, _, _ = parse_dot(dot.source)
    shown = {label_lines(v)[0]: [] for v in tensor_nodes(nodes).values()}
    for v in tensor_nodes(nodes).values():
        shown[label_lines(v)[0]].append(label_lines(v)[-1])
    assert shown["x"] == ["(2, 3) float64"]                # x needs no grad: no norm shown
    true = {"W": [np.linalg.norm(x.T @ d_a)], "b": [np.linalg.norm(d_a.sum(axis=0))],
            "() float64": [1.0],
            "(2, 4) float64": sorted([np.linalg.norm(d_a)] * 2 + [np.sqrt(8.0)])}
    for first, values in true.items():
        assert all(text.startswith("|grad| ") for text in shown[first])
        texts = sorted(shown[first], key=lambda text: float(text[7:]))
        assert len(texts) == len(values)
        for text, value in zip(texts, values):
            _check_norm(text[7:], value)
    assert small["W"].grad is None and small["b"].grad is None   # drawing touched no .grad


def test_show_grad_after_retained_backward_keeps_grad(small):
    small["y"].backward(retain_graph=True)
    before = small["W"].grad.numpy().copy()
    dot = ag.to_dot(small["y"], params={"W": small["W"]}, show_grad=True)
    nodes, _, _ = parse_dot(dot.source)
    shown = label_lines(nodes[node_by_first_line(nodes, "W")])[-1]
    _check_norm(shown[7:], np.linalg.norm(before))
    np.testing.assert_array_equal(small["W"].grad.numpy(), before)


def test_gru_unroll_one_cluster_per_step():
    gru = nn.GRU(2, 3, rng=0)
    out, _ = gru(np.ones((3, 1, 2), dtype=np.float32))
    nodes, edges, clusters = parse_dot(ag.to_dot(out, params=gru).source)
    assert sorted(clusters) == ["cluster_0", "cluster_1", "cluster_2"]
    for t in range(3):
        label, members = clusters[f"cluster_{t}"]
        assert label == f"t = {t}"
        firsts = sorted(label_lines(nodes[m])[0] for m in members if m in tensor_nodes(nodes))
        for name in ("r", "z", "h~", "h"):
            assert firsts.count(name) == 1, (t, name)
    in_clusters = {m for _, members in clusters.values() for m in members}
    assert node_by_first_line(nodes, "weight_hh_l0") not in in_clusters
    # cluster_steps=False: the same nodes and edges, no clusters.
    flat_nodes, flat_edges, flat_clusters = parse_dot(
        ag.to_dot(out, params=gru, cluster_steps=False).source)
    assert flat_clusters == {}
    assert len(flat_nodes) == len(nodes) and sorted(flat_edges) == sorted(edges)


def test_no_step_scope_no_cluster_and_manual_scope(small):
    assert "subgraph" not in ag.to_dot(small["y"]).source
    x = ag.Tensor([1.0], requires_grad=True)
    with ag.step_scope(5):
        with ag.step_scope(7):
            inner = x * 2.0
        outer = inner + 1.0
    assert ag.current_step() is None
    _, _, clusters = parse_dot(ag.to_dot(outer + 0.0).source)
    assert {k: v[0] for k, v in clusters.items()} == {"cluster_5": "t = 5", "cluster_7": "t = 7"}
    assert all(len(v[1]) == 2 for v in clusters.values())   # one tensor + its op node each


def test_size_guard(small):
    with pytest.raises(GraphTooLargeError, match=r"max_nodes=") as info:
        ag.to_dot(small["y"], max_nodes=6)
    assert isinstance(info.value, ValueError) and "6" in str(info.value)
    assert len(tensor_nodes(parse_dot(ag.to_dot(small["y"], max_nodes=7).source)[0])) == 7
    x = ag.Tensor(np.zeros(1), requires_grad=True)
    y = x
    for _ in range(DEFAULT_MAX_NODES + 10):
        y = ag.tanh(y)
    with pytest.raises(GraphTooLargeError, match="max_nodes="):
        ag.to_dot(y)
    nodes, edges, _ = parse_dot(ag.to_dot(y, max_nodes=10_000).source)
    assert len(tensor_nodes(nodes)) == DEFAULT_MAX_NODES + 11
    assert len(edges) == 2 * (DEFAULT_MAX_NODES + 10)


def test_freed_graph_is_a_clear_error(small, tmp_path):
    small["y"].backward()
    for draw in (lambda: ag.to_dot(small["y"]), lambda: ag.render(small["y"], tmp_path / "g.svg")):
        with pytest.raises(RuntimeError, match=r"freed.*retain_graph=True"):
            draw()


def test_bad_format(small, tmp_path):
    with pytest.raises(ValueError, match=r"format.*'jpg'"):
        ag.render(small["y"], tmp_path / "g.jpg", format="jpg")


# ----------------------------------------------------------------------------- the real `dot`
# (the dot_program fixture is in tests/conftest.py)


def gru_loss(T=3):
    model = nn.RecurrentClassifier(2, 3, 2, cell="gru", rng=0)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(T, 1, 2)).astype(np.float32)
    return model, model.loss(xs, rng.integers(0, 2, (T, 1)))


def test_render_gru_svg(dot_program, tmp_path):
    model, loss = gru_loss()
    out = ag.render(loss, tmp_path / "gru.svg", params=model, show_grad=True)
    assert out == tmp_path / "gru.svg" and out.is_file()
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith(
        "</svg>")
    for expected in ("rnn.weight_hh_l0", "rnn.weight_ih_l0", "out.weight", "h~", "t = 0",
                     "t = 1", "t = 2", "sigmoid", "|grad|"):
        assert expected in text, expected
    assert "t = 3" not in text
    assert (tmp_path / "gru.dot").read_text() == ag.to_dot(loss, params=model,
                                                          show_grad=True).source


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("pdf", b"%PDF")])
def test_render_png_pdf(dot_program, tmp_path, fmt, magic):
    model, loss = gru_loss()
    out = ag.render(loss, tmp_path / f"gru.{fmt}", format=fmt, params=model)
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 1000


@pytest.mark.parametrize("empty", ["", "dir"])
def test_missing_dot_says_how_to_install(small, tmp_path, monkeypatch, empty):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin") if empty == "dir" else "")
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        ag.render(small["y"], tmp_path / "g.svg", params={"W": small["W"]})
    assert not (tmp_path / "g.svg").exists()
    source = (tmp_path / "g.dot").read_text()
    assert source == ag.to_dot(small["y"], params={"W": small["W"]}).source
    nodes, edges, _ = parse_dot(source)
    assert len(nodes) == 11 and len(edges) == 10 and node_by_first_line(nodes, "W")


def test_failing_dot_reports_stderr(small, tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(RuntimeError, match="dot failed.*syntax error in line 1"):
        ag.render(small["y"], tmp_path / "g.svg")
