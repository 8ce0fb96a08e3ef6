"""The reverse-sweep explorer: one self-contained HTML page (no network, no server) that steps
through the rows of `ag.trace_backward(...)` on the drawing of the graph.

- the graph: the notes-level view of an nn RNN, GRU or LSTM (or of any graph whose tensors
  are named), else every op; inline SVG drawn by Graphviz's `dot`;
- buttons (and the arrow keys) step forward and back through the sweep: the current node is
  red, the nodes already visited grey, the edges that just received a gradient red with its
  norm, and the local rule is spelled out in words;
- beside it, a chart of ||dL/dh_t|| per step, filled in as the sweep reaches each state;
- hovering a node shows its value and its gradient.

    tr = ag.trace_backward(loss, params=model)
    tr.to_html("sweep.html", loss)      # the loss (graph still recorded): the notes view
"""
import html
import json
import math
import pathlib
import subprocess
import tempfile

from . import notes_view, step_norms, viz
from .graph import walk

MAX_NODES = 400  # the op view draws every tensor; the page must stay light
STATE_NAMES = ("h", "S")  # the per-step states whose gradient norms the chart shows


def write_page(trace, path, roots=None, params=None, title="The reverse sweep, step by step"):
    """Write the explorer page of `trace` to `path`. With `roots` (the traced loss, its
    graph still recorded) and an nn recurrent model, the graph is the notes-level view."""
    if trace.graph is None:
        raise ValueError("to_html: this trace has no graph to draw; make it with "
                         "ag.trace_backward(loss)")
    ident_of = {label: d.ident for label, d in trace.graph.items()}
    drawn = list(trace.graph.values())
    notes, tensors = _notes(drawn, roots, params)
    if notes is None and len(drawn) > MAX_NODES:
        raise viz.too_large("to_html", MAX_NODES)
    if notes is not None and notes.steps > notes_view.MAX_STEPS:
        # the page draws every step unrolled: past this it is neither quick nor readable
        raise viz.GraphTooLargeError(
            f"to_html: {notes.steps} steps are too many for the page (at most "
            f"{notes_view.MAX_STEPS}); trace a shorter unroll")
    dot = notes_view.notes_dot(notes) if notes else viz.build_dot(drawn)
    svg = _svg(dot)
    shares = _step_shares(notes, tensors, roots)
    data = _page_data(trace, ident_of, drawn, notes, shares)
    page = TEMPLATE.replace("%TITLE%", html.escape(title)).replace("%SVG%", svg).replace(
        "%DATA%", json.dumps(_finite(data), allow_nan=False).replace("</", "<\\/"))
    path = pathlib.Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def _notes(drawn, roots, params):
    """(the NotesGraph of the traced graph, the tensors of `roots`), or (None, None) for the
    op view (no roots given, or no named tensors to draw)."""
    if roots is None:
        return None, None
    roots = [roots] if hasattr(roots, "_op") else list(roots)
    tensors = walk(roots, "to_html")
    if len(tensors) != len(drawn):
        raise ValueError("to_html: `roots` are not the loss this trace was made from")
    _, ng = viz.notes_of(tensors, roots, params)
    named = any(n.kind not in ("param", "data", "root") for n in ng.nodes.values())
    return (ng, tensors) if named else (None, None)


def _step_shares(notes, tensors, roots):
    """ident -> per-step norms (step_norms.StepShares) for the tensors the notes view draws
    once per step; None for the op view."""
    if notes is None or notes.steps < 1:
        return None
    ident = {t: f"t{k}" for k, t in enumerate(tensors)}  # as viz.describe numbers them
    drawn_steps = {t: {notes.nodes[n].step for n in notes.groups.get(ident[t], ())} - {None}
                   for t in tensors}
    roots = [roots] if hasattr(roots, "_op") else list(roots)
    if len(roots) != 1 or roots[0].size != 1:
        return None  # the sweep starts from one scalar
    result = step_norms.step_shares(roots[0], tensors, drawn_steps, notes.steps)
    return {"incoming": {ident[t]: v for t, v in result.incoming.items()},
            "sent": {ident[t]: v for t, v in result.sent.items()},
            "sequences": {ident[t] for t in result.sequences}}


def _svg(dot):
    exe = viz.find_dot("to_html: the Graphviz 'dot' program was not found on PATH, so the "
                       "graph cannot be drawn.")
    with tempfile.TemporaryDirectory() as folder:
        source = pathlib.Path(folder) / "graph.dot"
        source.write_text(dot.source)
        result = subprocess.run([exe, "-Tsvg", str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"to_html: dot failed: {result.stderr.strip()}")
    svg = result.stdout
    return svg[svg.index("<svg"):]  # drop the XML prologue and doctype: inline in HTML


def _page_data(trace, ident_of, drawn, notes, shares=None):
    """What the page's script needs: per row the SVG titles to highlight and the edges that
    receive a gradient with the norm each carries; per node its hover text; the chart's
    points. `shares` (from _step_shares) gives the per-step norms of the tensors drawn once
    per step, so the edge into y_t carries step t's gradient."""
    shares = shares or {"incoming": {}, "sent": {}, "sequences": set()}
    by_ident = {d.ident: d for d in drawn}
    label_of = {ident: label for label, ident in ident_of.items()}

    def shown(ident):
        """The titles of the SVG nodes tensor `ident` is drawn as."""
        if notes is None:
            return [ident]
        return list(notes.groups.get(ident, ()))

    edges_into = {}
    if notes is not None:
        for tail, head, _ in notes.edges:
            edges_into.setdefault(head, []).append(tail)
    def step_of(title):
        return notes.nodes[title].step

    rows, grads, chart = [], {}, []
    for r in trace.rows:
        ident = ident_of[r["node"]]
        current = shown(ident)
        own_steps = {step_of(c) for c in current} if notes is not None else set()
        sent = []
        for s in r["sent"]:
            inp = ident_of[s["input"]]
            if notes is None:
                titles = [f"{inp}->{ident}_op"]
            else:
                sources = set(shown(inp))
                titles = [f"{t}->{h}" for h in current for t in edges_into.get(h, ())
                          if t in sources and t not in current]
                if inp in shares["sequences"] and len(own_steps) == 1 and None not in own_steps:
                    # a node of one step reads its slice of a sequence (the input projection
                    # p[t]): only edges from that step carry it
                    titles = [e for e in titles if step_of(e.split("->")[0]) in own_steps | {None}]
            per_step = shares["sent"].get(ident, {}).get(s["index"])
            norms = [_edge_norm(e, s["norm"], per_step, ident in shares["incoming"], step_of)
                     for e in titles]
            sent.append({"input": s["input"], "norm": s["norm"], "edges": titles,
                         "edge_norms": norms})
        for title in current:
            incoming = shares["incoming"].get(ident)
            grads.setdefault(title, r["grad_norm"] if incoming is None or step_of(title) is None
                             else incoming[step_of(title)])
        d = by_ident[ident]
        rows.append({"index": r["index"], "node": r["node"], "op": r["op"],
                     "step": None if r["step"] is None else r["step"] + 1,
                     "grad_norm": r["grad_norm"], "rule": r["rule"],
                     "words": _words(r, d), "current": current, "sent": sent})
        if d.name in STATE_NAMES and d.step is not None:
            chart.append({"step": d.step + 1, "norm": r["grad_norm"], "row": r["index"]})
    for label, total in trace.gradients.items():
        ident = ident_of.get(label)
        for title in shown(ident) if ident else ():
            grads[title] = float(_norm(total))
    nodes = {}
    for d in drawn:
        for title in shown(d.ident):
            if notes is not None and title not in notes.nodes:
                continue
            if notes is not None:
                node = notes.nodes[title]
                name, value = node.label.replace(notes_view.NEWLINE, " "), node.value
            else:
                name, value = label_of[d.ident], d.value
            if title not in nodes or title == d.ident:
                nodes[title] = {"label": name, "value": value, "grad": grads.get(title)}
    return {"rows": rows, "nodes": nodes, "chart": chart,
            "view": "notes" if notes is not None else "ops"}


def _edge_norm(edge, whole, per_step, own_split, step_of):
    """The norm an edge tail->head carries: step t's share where the node (own_split, at the
    head) or its input (at the tail) is drawn once per step, else the whole contribution."""
    if per_step is None:
        return whole
    tail, head = edge.split("->")
    step = step_of(head) if own_split else step_of(tail)
    return whole if step is None else per_step[step]


def _finite(value):
    """`value` with every nan or infinite float as the string "nan", "inf" or "-inf": JSON
    has no such numbers, and one would stop the page's script from reading its data."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _norm(array):
    import numpy as np
    return np.linalg.norm(np.asarray(array))


def _words(row, d):
    """The local step of the chain rule, in a sentence."""
    where = "" if row["step"] is None else f" at step t = {row['step'] + 1}"
    text = (f"{row['node']}{where} was made by {row['op']}; the gradient of the loss with "
            f"respect to it has norm {row['grad_norm']:.4g}.")
    if row["rule"]:
        text += f" The {row['op']} rule, with g that gradient: {row['rule']}."
    if row["sent"]:
        parts = [f"{s['input']} (norm {s['norm']:.4g})" for s in row["sent"]]
        text += " It passes a share to " + ", ".join(parts) + "."
    return text


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 12px; color: #222; }
#layout { display: flex; gap: 16px; align-items: flex-start; }
#graph { flex: 3; overflow: auto; border: 1px solid #ddd; max-height: 80vh; }
#graph svg { max-width: 100%; height: auto; }
#side { flex: 1; min-width: 300px; }
#controls button { font-size: 14px; margin-right: 4px; }
#rule { margin: 10px 0; padding: 8px; background: #f6f6f6; min-height: 4em; }
#hover { margin-top: 10px; padding: 8px; border: 1px dashed #aaa; min-height: 3em;
  font-family: monospace; font-size: 12px; white-space: pre-wrap; }
g.node.current ellipse, g.node.current polygon, g.node.current path {
  fill: #f28b82 !important; stroke: #c5221f; stroke-width: 2.5; }
g.node.visited ellipse, g.node.visited polygon, g.node.visited path { fill: #e0e0e0; }
g.edge.sent path { stroke: #c5221f; stroke-width: 2.5; }
g.edge.sent polygon { fill: #c5221f; stroke: #c5221f; }
text.gradlabel { fill: #c5221f; font-size: 11px; font-weight: bold; }
#chart rect { fill: #9ab; } #chart rect.now { fill: #c5221f; }
#chart rect.nonfinite { fill: #f4b400; }
</style></head><body>
<h2>%TITLE%</h2>
<div id="layout">
<div id="graph">%SVG%</div>
<div id="side">
<div id="controls"><button id="first">|&lt;</button><button id="prev">&lt; back</button>
<button id="next">forward &gt;</button><button id="last">&gt;|</button>
<span id="position"></span></div>
<div id="rule"></div>
<div><b>||dL/dh<sub>t</sub>|| per step</b><svg id="chart" width="300" height="150"></svg></div>
<div id="hover">hover a node for its value and gradient</div>
</div></div>
<script id="data" type="application/json">%DATA%</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const svg = document.querySelector("#graph svg");
const NS = "http://www.w3.org/2000/svg";
const byTitle = {};
for (const g of svg.querySelectorAll("g.node, g.edge")) {
  const t = g.querySelector("title");
  if (t) byTitle[t.textContent] = g;
}
let position = 0;

function fmt(x) {
  if (x === null || x === undefined) return "-";
  return typeof x === "string" ? x : Number(x).toPrecision(4);  // "nan", "inf" as they are
}

function render() {
  for (const g of svg.querySelectorAll(".current, .visited, .sent"))
    g.classList.remove("current", "visited", "sent");
  for (const t of svg.querySelectorAll("text.gradlabel")) t.remove();
  for (let i = 0; i < position - 1; i++)
    for (const title of DATA.rows[i].current)
      if (byTitle[title]) byTitle[title].classList.add("visited");
  const row = position > 0 ? DATA.rows[position - 1] : null;
  const current = [];
  if (row) {
    for (const title of row.current)
      if (byTitle[title]) { byTitle[title].classList.remove("visited");
                            byTitle[title].classList.add("current"); current.push(title); }
    for (const s of row.sent) s.edges.forEach((title, i) => {
      const g = byTitle[title];
      if (!g) return;
      g.classList.add("sent");
      const path = g.querySelector("path");
      const p = path.getPointAtLength(path.getTotalLength() / 2);
      const label = document.createElementNS(NS, "text");
      label.setAttribute("class", "gradlabel");
      label.setAttribute("x", p.x + 3); label.setAttribute("y", p.y - 3);
      label.textContent = fmt(s.edge_norms[i]);
      g.appendChild(label);
    });
  }
  document.body.dataset.position = position;
  document.body.dataset.current = current.join(" ");
  document.getElementById("position").textContent = position + " / " + DATA.rows.length;
  document.getElementById("rule").textContent = row ? row.words :
    "Before the sweep: the forward graph. Step forward to run the chain rule backwards, " +
    "one node at a time, from the loss.";
  drawChart();
}

function drawChart() {
  const chart = document.getElementById("chart");
  chart.innerHTML = "";
  const points = DATA.chart;
  if (!points.length) {
    const none = document.createElementNS(NS, "text");
    none.setAttribute("x", 10); none.setAttribute("y", 80);
    none.textContent = "no per-step states h_t in this graph";
    chart.appendChild(none);
    return;
  }
  const finite = points.filter(p => typeof p.norm === "number");
  const maxNorm = Math.max(0, ...finite.map(p => p.norm)) || 1;
  const steps = Math.max(...points.map(p => p.step));
  const w = 280 / steps;
  for (const p of points) {
    if (p.row > position) continue;
    const h = typeof p.norm === "number" ? 120 * p.norm / maxNorm : 120;  // nan, inf: full
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("x", 10 + (p.step - 1) * w); r.setAttribute("width", Math.max(w - 2, 1));
    r.setAttribute("y", 130 - h); r.setAttribute("height", h);
    r.setAttribute("data-step", p.step);
    if (p.row === position) r.setAttribute("class", "now");
    else if (typeof p.norm !== "number") r.setAttribute("class", "nonfinite");
    const tip = document.createElementNS(NS, "title");
    tip.textContent = "t = " + p.step + ": " + fmt(p.norm);
    r.appendChild(tip);
    chart.appendChild(r);
  }
  const axis = document.createElementNS(NS, "text");
  axis.setAttribute("x", 10); axis.setAttribute("y", 146);
  axis.textContent = "t = 1 .. " + steps;
  chart.appendChild(axis);
}

function go(k) { position = Math.max(0, Math.min(DATA.rows.length, k)); render(); }
document.getElementById("first").onclick = () => go(0);
document.getElementById("prev").onclick = () => go(position - 1);
document.getElementById("next").onclick = () => go(position + 1);
document.getElementById("last").onclick = () => go(DATA.rows.length);
document.addEventListener("keydown", e => {
  if (e.key === "ArrowRight") go(position + 1);
  if (e.key === "ArrowLeft") go(position - 1);
});
for (const [title, info] of Object.entries(DATA.nodes)) {
  const g = byTitle[title];
  if (!g) continue;
  g.addEventListener("mouseenter", () => {
    document.getElementById("hover").textContent =
      info.label + "\\nvalue " + info.value + "\\n|grad| " + fmt(info.grad);
  });
}
render();
</script></body></html>
"""
