"""A record of the reverse sweep, step by step, for teaching: which node, what gradient came in,
the derivative rule in words, and what went to each input. Watch the chain rule run on the
notes' 3-step RNN:

    tr = ag.trace_backward(loss, params=model)
    print(tr.to_markdown())
    tr.write_frames("sweep")     # sweep/frame_000.svg (the forward graph), frame_001.svg, ...
"""
import dataclasses
import json
import pathlib

import numpy as np

from . import viz
from .engine import grad
from .observers import SweepObserver
from .graph import walk
from .viz import param_names

FRAMES_MAX_NODES = 200  # every frame redraws the whole graph: frames are for small graphs
FRAME_FORMATS = ("dot",) + viz.FORMATS
CURRENT_NODE = {"style": "bold,filled", "fillcolor": "#f28b82", "penwidth": "2"}
VISITED_NODE = {"style": "filled", "fillcolor": "#e0e0e0"}
SENT_EDGE = {"color": "#c5221f", "fontcolor": "#c5221f", "penwidth": "2", "fontname": "Helvetica",
             "fontsize": "10"}


@dataclasses.dataclass
class BackwardTrace:
    rows: list  # one dict per node, in sweep order
    gradients: dict  # leaf label -> final gradient (ndarray)
    totals: dict  # leaf label -> sum of the contributions the rows sent to it
    # label -> viz.DrawnTensor for every tensor of the graph (no arrays): what the frames draw
    graph: dict = dataclasses.field(default=None, repr=False)

    def to_json(self):
        return json.dumps({"rows": self.rows,
                           "gradients": {k: v.tolist() for k, v in self.gradients.items()}},
                          indent=1)

    def to_markdown(self):
        lines = ["| # | node | step | op | incoming |grad| | rule | sent to inputs |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            sent = "; ".join(f"{s['input']} += {s['norm']:.4g}" for s in r["sent"]) or "-"
            step = "" if r["step"] is None else r["step"]
            lines.append(f"| {r['index']} | {r['node']} | {step} | {r['op']} | "
                         f"{r['grad_norm']:.4g} | {r['rule']} | {sent} |")
        return "\n".join(lines)

    def write(self, prefix):
        """Write `prefix`.md and `prefix`.json."""
        with open(f"{prefix}.md", "w") as f:
            f.write(self.to_markdown() + "\n")
        with open(f"{prefix}.json", "w") as f:
            f.write(self.to_json() + "\n")

    def to_html(self, path, roots=None, params=None):
        """Write the sweep explorer to `path`: one self-contained HTML page that steps
        through these rows on the drawing of the graph (see `autograd_core.explorer`).
        Pass the traced loss as `roots` (its graph still recorded) for the notes-level
        drawing of an nn RNN, GRU or LSTM; without it every op is drawn."""
        from .explorer import write_page
        return write_page(self, path, roots, params)

    def frames(self, max_nodes=FRAMES_MAX_NODES, cluster_steps=True, rankdir="LR"):
        """The sweep as `graphviz.Digraph`s: [0] is the forward graph, [i] the graph while
        row i runs. That row's node is red, the nodes visited before it grey, the edges to
        the inputs it sends gradients to are labelled `sent <norm>`, and each leaf shows the
        norm of the gradient it has gathered so far. (In a notebook, display them one by
        one.) A graph of more than `max_nodes` tensors raises GraphTooLargeError."""
        if self.graph is None:
            raise ValueError("frames: this trace has no graph to draw; make it with "
                             "ag.trace_backward(loss)")
        if len(self.graph) > max_nodes:
            raise viz.too_large("frames", max_nodes)
        drawn = list(self.graph.values())
        result = [viz.build_dot(drawn, cluster_steps, rankdir,
                                graph_attrs=_title(self._before_title()))]
        visited, leaf_norms = set(), {}
        for row in self.rows:
            current = self.graph[row["node"]].ident
            _update_leaf_norms(leaf_norms, row)
            shown = {self.graph[name].ident: norm for name, norm in leaf_norms.items()}
            result.append(viz.build_dot(
                drawn, cluster_steps, rankdir, graph_attrs=_title(_row_title(row, self.rows)),
                node_attrs=_node_marker(current, row["grad_norm"], visited, shown),
                edge_attrs=_edge_marker(current, row)))
            visited.add(current)
        return result

    def write_frames(self, folder, format="svg", max_nodes=FRAMES_MAX_NODES):
        """Write the `frames()` into `folder` (made if missing) as frame_000.dot,
        frame_001.dot, ... and, unless `format="dot"`, draw each with Graphviz's `dot` into
        frame_000.svg (or png, pdf), ... Returns the paths of the drawings (or of the .dot
        files). Frames already there with the same names are overwritten."""
        if format not in FRAME_FORMATS:
            raise ValueError(f"write_frames: format must be one of {FRAME_FORMATS}, got "
                             f"{format!r}")
        frames = self.frames(max_nodes=max_nodes)
        exe = None if format == "dot" else viz.find_dot(
            "write_frames: the Graphviz 'dot' program was not found on PATH, so the frames "
            "cannot be drawn.", otherwise='or pass format="dot" to write only the DOT sources')
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        width = max(3, len(str(len(frames) - 1)))
        paths = []
        for k, frame in enumerate(frames):
            source = folder / f"frame_{k:0{width}d}.dot"
            source.write_text(frame.source)
            if exe is None:
                paths.append(source)
            else:
                paths.append(source.with_suffix(f".{format}"))
                viz.run_dot(exe, source, paths[-1], format, "write_frames")
        return paths

    def _before_title(self):
        start = self.rows[0] if self.rows else None
        return ("before the sweep: the forward graph" if start is None else
                f"before the sweep: the forward graph; the sweep starts at {start['node']} "
                f"with a gradient of norm {start['grad_norm']:.4g}")


def _title(text):
    return {"label": text, "labelloc": "t", "fontname": "Helvetica"}


def _row_title(row, rows):
    step = "" if row["step"] is None else f", t = {row['step']}"
    rule = f"; rule: {row['rule']}" if row["rule"] else ""
    return (f"step {row['index']}/{len(rows)}: {row['node']} ({row['op']}{step}) receives "
            f"|grad| {row['grad_norm']:.4g}{rule}")


def _update_leaf_norms(leaf_norms, row):
    for s in row["sent"]:
        if "total_norm" in s:
            leaf_norms[s["input"]] = s["total_norm"]


def _node_marker(current, grad_norm, visited, leaf_norms):
    """The `node_attrs` hook of a frame: the current node, the visited ones, and the leaves'
    gradients so far (`leaf_norms`: DOT id -> norm)."""
    def attrs(d):
        if d.ident == current:
            return {**CURRENT_NODE, "label": f"{d.label}\\n|grad| {grad_norm:.4g}"}
        if d.ident in visited:
            return VISITED_NODE
        if d.ident in leaf_norms:
            return {"label": f"{d.label}\\n|grad| so far {leaf_norms[d.ident]:.4g}"}
        return {}
    return attrs


def _edge_marker(current, row):
    """The `edge_attrs` hook of a frame: label the edges into the current node's op whose
    inputs receive a contribution in this row."""
    sent = {s["index"]: s["norm"] for s in row["sent"]}

    def attrs(d, k):
        if d.ident == current and k in sent:
            return {**SENT_EDGE, "label": f"sent {sent[k]:.4g}"}
        return {}
    return attrs


def _labeller(tensors, names):
    labels, counts = {}, {}
    for t in reversed(tensors):  # oldest first, so labels number in forward order
        base = names.get(t) or t.name or (t.op.name if t.op else "input")
        counts[base] = counts.get(base, 0) + 1
        labels[t] = base if t in names else f"{base}#{counts[base]}"
    return labels


def trace_backward(loss, params=None):
    """Run a backward of the scalar `loss` that records every step; `.grad` is not touched
    and the graph is kept. `params` (a Module, dict or pairs) names the leaves."""
    _check_loss(loss)
    tensors = walk((loss,), "trace_backward")
    names = param_names(params)
    label = _labeller(tensors, names)
    leaves = [t for t in tensors if t.op is None and t.requires_grad]
    recorder = _RowRecorder(label)
    found = grad(loss, leaves, retain_graph=True, allow_unused=True, observer=recorder)
    gradients = {label[t]: np.asarray(g.data) for t, g in zip(leaves, found) if g is not None}
    return BackwardTrace(recorder.rows, gradients, recorder.totals,
                         _drawn_graph(tensors, label, names, loss))


def _check_loss(loss):
    from .tensor import Tensor
    if not isinstance(loss, Tensor):
        raise TypeError(f"trace_backward: the loss must be a Tensor, got "
                        f"{type(loss).__name__}")
    if loss.size != 1:
        raise ValueError(f"trace_backward: the loss must have one element (the sweep starts "
                         f"from it), got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError("trace_backward: the loss does not require grad, so there is no "
                         "sweep to trace (was it made under no_grad, or only from tensors "
                         "with requires_grad=False?)")


class _RowRecorder(SweepObserver):
    """One row per node the sweep visits: what came in, the rule, what went to each input."""

    def __init__(self, label):
        self.label, self.rows, self.totals = label, [], {}

    def node(self, tensor, grad, sent):
        label, totals = self.label, self.totals
        row = {"index": len(self.rows) + 1, "node": label[tensor], "op": tensor.op.name,
               "step": tensor.step, "grad_shape": list(np.shape(grad)),
               "grad_norm": float(np.linalg.norm(grad)), "rule": tensor.op.rule,
               "sent": []}
        for k, inp, gi in sent:
            entry = {"input": label[inp], "index": k, "norm": float(np.linalg.norm(gi))}
            if inp.is_leaf:
                totals[label[inp]] = totals.get(label[inp], 0) + np.asarray(gi)
                entry["total_norm"] = float(np.linalg.norm(totals[label[inp]]))
            row["sent"].append(entry)
        self.rows.append(row)


def _drawn_graph(tensors, label, names, loss):
    """label -> viz.DrawnTensor: the graph as the frames draw it, first line the label the
    rows use (so a frame and its row in the table match)."""
    def text(t):
        return f"{label[t]}\\n{tuple(t.shape)} {t.dtype}"
    drawn = viz.describe(tensors, text, lambda t: viz.node_style(t, names, {loss}))
    return {label[t]: d for t, d in zip(tensors, drawn)}
