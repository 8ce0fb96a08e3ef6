"""The notes-level view of a recorded graph: the picture source notes 000 and 001 draw.

Only named tensors, leaves and the root are drawn; every route of unnamed ops between two of
them becomes one edge (as `count_paths(..., through=...)` counts them). Then, to match the
notes' figure of an unrolled RNN:
- tensors recorded in `ag.step_scope(t)` are drawn per step, numbered from 1 as the notes do;
- a named tensor that holds the whole sequence (time on the first axis, outside any step:
  the logits y and the per-step losses L of `nn`), and a data leaf read by several steps
  (the input x), are drawn once per step: y_t, L_t, x_t;
- a parameter is drawn once and fans into every step that reads it, even where the engine
  computed one product for all steps; its label is the notes' symbol (U, W, V, b_a; W_xz,
  W_hr, b_z, ... one per gate), and the two torch-style biases of a gate are one node b;
- the weights of `sequence_cross_entropy(..., step_weights=)` label the L_t -> L edges.
The rolled view draws one step with "x T".
"""
import dataclasses
import re

import graphviz

MAX_STEPS = 12
# Subgraph prefix of a step in the unrolled notes view: "cluster_" would box each step, but dot
# then loses the steps' order. (Longer sequences are drawn rolled, in one cluster.)
CLUSTER = "step_"
WEIGHTS_NAME = "step_weights"

# cell -> the names its steps carry (set by nn.recurrent), the symbol of each, and the notes'
# symbol of each parameter role ("{g}" is the gate's letter)
CELLS = {
    "lstm": ({"i", "f", "g", "o", "c", "h"}, {"c": "C", "c0": "C_0", "h0": "h_0"},
             {"weight_ih": "W_x{g}", "weight_hh": "W_h{g}", "bias_ih": "b_{g}",
              "bias_hh": "b_{g}", "out.weight": "V", "out.bias": "b_y"}),
    "gru-torch": ({"r", "z", "n", "h"}, {"h0": "h_0"},
                  {"weight_ih": "W_i{g}", "weight_hh": "W_h{g}", "bias_ih": "b_i{g}",
                   "bias_hh": "b_h{g}", "out.weight": "W_hc", "out.bias": "b_c"}),
    "gru": ({"r", "z", "h~", "h"}, {"h0": "h_0"},
            {"weight_ih": "W_x{g}", "weight_hh": "W_h{g}", "bias_ih": "b_{g}",
             "bias_hh": "b_{g}", "out.weight": "W_hc", "out.bias": "b_c"}),
    "rnn": ({"h"}, {"h": "S", "h0": "S_0"},
            {"weight_ih": "U", "weight_hh": "W", "bias_ih": "b_a", "bias_hh": "b_a",
             "out.weight": "V", "out.bias": "b_y"}),
}
GATE_LETTER = {"h~": "h"}
NEWLINE = "\\n"  # a line break inside a DOT label

COLORS = {"param": "#cfe3f7", "root": "#fde9c9", "loss": "#fbe3e3", "out": "#e6f4ea"}


@dataclasses.dataclass
class Node:
    ident: str
    label: str
    kind: str  # "param", "data", "state", "seq" (y_t, L_t), "root"
    step: object = None  # 0-based time step, or None
    value: str = ""


@dataclasses.dataclass
class NotesGraph:
    nodes: dict  # ident -> Node, in drawing order
    edges: list  # (tail, head, label or "")
    steps: int  # T (0 without step scopes)
    cell: str  # "rnn", "gru", "gru-torch", "lstm" or "" (a graph of named tensors)
    groups: dict  # DrawnTensor ident -> notes node idents it is drawn as (or feeds)


def notes_graph(drawn, roots, param_names=None):
    """The NotesGraph of `drawn` (viz.DrawnTensor, newest first); `roots` are DOT ids,
    `param_names` maps a parameter's DOT id to its name in the module."""
    param_names = param_names or {}
    roots = set(roots)
    is_vertex = {d.ident: d.name is not None or d.kind != "op" or d.ident in roots
                 for d in drawn}
    links, groups = _contract(drawn, is_vertex)
    by_id = {d.ident: d for d in drawn}
    steps = 1 + max((d.step for d in drawn if is_vertex[d.ident] and d.step is not None),
                    default=-1)
    names = {d.name for d in drawn if d.step is not None and is_vertex[d.ident]}
    cell = next((c for c, (need, _, _) in CELLS.items() if need <= names), "")
    _, state_symbols, param_symbols = CELLS.get(cell, (set(), {}, {}))
    weights = _step_weights(drawn, steps)
    spread = _spread(drawn, links, is_vertex, steps)
    builder = _Builder(by_id, state_symbols, param_symbols, param_names, roots, spread)
    for d in reversed(drawn):  # oldest first: x_1 before S_1 before y_1
        if is_vertex[d.ident] and d.name != WEIGHTS_NAME:
            builder.add_vertex(d, steps)
    for tail, head in links:
        builder.add_link(by_id[tail], by_id[head], steps, weights)
    builder.prune()
    groups = {k: sorted({n for v in vs for n in builder.made.get(v, ())}) for k, vs in
              groups.items()}
    return NotesGraph(builder.nodes, builder.edges, steps, cell, groups)


def _contract(drawn, is_vertex):
    """Edges between vertices through unnamed ops, and for every tensor the vertices it is
    drawn as: itself, or for an unnamed op those it feeds through unnamed ops only."""
    above, links, groups = {}, {}, {}
    for d in drawn:
        reached = above.pop(d.ident, set())
        if is_vertex[d.ident]:
            for v in reached:
                links[(d.ident, v)] = None
            carry = {d.ident}
        else:
            carry = reached
        groups[d.ident] = carry
        for i in d.inputs:
            above.setdefault(i, set()).update(carry)
    return list(links), groups


def _spread(drawn, links, is_vertex, steps):
    """The vertices drawn once per step: named sequence tensors outside a step (first axis
    T) and data leaves that reach vertices of more than one step."""
    if steps < 1:
        return set()
    by_id = {d.ident: d for d in drawn}
    reach = {}
    for tail, head in links:
        reach.setdefault(tail, set()).add(by_id[head].step)
    spread = set()
    for d in drawn:
        if not is_vertex[d.ident] or d.step is not None or not d.shape or d.kind == "param":
            continue
        reached = reach.get(d.ident, set()) - {None}
        if d.kind == "data" and (len(reached) > 1 or steps == 1 and reached and d.name is None):
            spread.add(d.ident)
        elif d.kind == "op" and d.name is not None and d.shape[0] == steps:
            spread.add(d.ident)
    return spread


def _step_weights(drawn, steps):
    for d in drawn:
        if d.name == WEIGHTS_NAME and d.kind == "data" and d.shape == (steps,) and d.rows:
            return [row.split("]")[0].strip("[ ") for row in d.rows]
    return None


class _Builder:
    def __init__(self, by_id, state_symbols, param_symbols, param_names, roots, spread):
        self.by_id, self.roots, self.spread = by_id, roots, spread
        self.state_symbols, self.param_symbols = state_symbols, param_symbols
        self.param_names = param_names
        self.nodes, self.edges, self.made, self._edge_set = {}, [], {}, set()

    # ---- vertices
    def add_vertex(self, d, steps):
        if d.kind == "param":
            return  # drawn per symbol when its edges are known
        if d.ident in self.spread:
            for s in range(steps):
                value = d.rows[s] if s < len(d.rows) else ""
                self._node(d.ident, self._spread_id(d, s), f"{self._base(d)}_{s + 1}", "seq"
                           if d.kind == "op" else "data", s, value)
            return
        kind = ("root" if d.ident in self.roots else "data" if d.kind == "data" else
                "state")
        label = self._base(d) if d.step is None else f"{self._base(d)}_{d.step + 1}"
        if d.ident in self.roots and d.name is None:
            label = "L"
        self._node(d.ident, d.ident, label, kind, d.step, d.value)

    def _spread_id(self, d, step):
        # copies of the input (one reshape per projection) are one x_t
        key = "d_" + re.sub(r"\W", "_", self._base(d)) if d.kind == "data" else d.ident
        return f"{key}_s{step}"

    def _base(self, d):
        if d.name is None:
            return "x" if d.kind == "data" else (d.op or "?")
        return self.state_symbols.get(d.name, d.name)

    def _node(self, source, ident, label, kind, step, value):
        if ident not in self.nodes:
            self.nodes[ident] = Node(ident, label, kind, step, value)
        self.made.setdefault(source, []).append(ident)

    # ---- edges
    def add_link(self, tail, head, steps, weights):
        if tail.name == WEIGHTS_NAME or head.name == WEIGHTS_NAME:
            return
        tails = self._ends(tail, head, steps)
        heads = self._ends(head, tail, steps)
        for step, t_id in tails.items():
            for h_step, h_id in heads.items():
                if step is not None and h_step is not None and step != h_step:
                    continue
                label = ""
                if weights and tail.ident in self.spread and head.ident in self.roots:
                    label = weights[step]
                self._edge(t_id, h_id, label)

    def _ends(self, d, other, steps):
        """{step or None: node id} that an edge touching `d` uses, given its other end."""
        if d.kind == "param":
            gate = other.name if other.step is not None else None
            ident = self._param_node(d, gate)
            return {None: ident}
        if d.ident in self.spread:
            if other.ident in self.spread or other.step is None:
                return {s: self._spread_id(d, s) for s in range(steps)}
            return {other.step: self._spread_id(d, other.step)}
        return {None: d.ident}

    def _param_node(self, d, gate):
        full = self.param_names.get(d.ident) or d.name or "param"
        role = re.sub(r"_l0$", "", full.split(".")[-1])
        key = full if full.startswith("out.") else role
        symbol = self.param_symbols.get(key)
        letter = GATE_LETTER.get(gate, gate) if gate else ""
        label = full if symbol is None else symbol.format(g=letter)
        if symbol is not None and "{g}" in symbol:
            # a gated cell: one box per gate holds its W_x., W_h. and b_., which keeps
            # the picture narrow (9 parameter boxes fanning into every GRU step are not)
            ident = f"p_gate_{re.sub(chr(92) + 'W', '_', letter)}"
        else:
            ident = "p_" + re.sub(r"\W", "_", label)
        node = self.nodes.get(ident)
        if node is None:
            self.nodes[ident] = Node(ident, label, "param", None, f"{label} {d.value}")
        elif label not in node.label.split(NEWLINE):
            # W_x., then W_h., then the bias, whatever order the edges came in
            node.label = NEWLINE.join(sorted(node.label.split(NEWLINE) + [label], key=_role))
            node.value += f"; {label} {d.value}"
        self.made.setdefault(d.ident, [])
        if ident not in self.made[d.ident]:
            self.made[d.ident].append(ident)
        return ident

    def _edge(self, tail, head, label):
        if (tail, head) not in self._edge_set and tail in self.nodes and head in self.nodes:
            self._edge_set.add((tail, head))
            self.edges.append((tail, head, label))

    def prune(self):
        """Drop data leaves that feed nothing drawn (targets, constants)."""
        used = {t for t, _, _ in self.edges} | {h for _, h, _ in self.edges}
        for ident in [k for k, n in self.nodes.items()
                      if n.kind == "data" and k not in used]:
            del self.nodes[ident]


# ---- drawing ----------------------------------------------------------------------------
def notes_dot(ng, rolled=False, node_attrs=None, edge_attrs=None, title=None, box_note=None):
    """The graphviz.Digraph of a NotesGraph: bottom to top (x_t, the state, y_t, L_t, L),
    steps side by side in one box each, parameters in a row below. `rolled` draws the last
    step only, with the recurrence as an edge from the previous step and "x T";
    `box_note` is added to the label of its box."""
    if rolled:
        ng = _rolled(ng)
    # note 000's picture has steps side by side; gated cells have too many nodes per step for
    # that to fit a screen, so their steps are stacked, time running down
    wide = True
    dot = graphviz.Digraph("notes", graph_attr={
        "rankdir": "BT" if wide else "LR", "nodesep": "0.12", "ranksep": "0.25",
        "newrank": "true",
        **({"label": title, "labelloc": "t"} if title else {})},
        node_attr={"fontname": "Helvetica", "fontsize": "10", "shape": "box",
                   "style": "rounded", "height": "0.25", "width": "0.4",
                   "margin": "0.04,0.02"},
        edge_attr={"arrowsize": "0.6", "fontname": "Helvetica", "fontsize": "9"})
    clusters, params = {}, graphviz.Digraph("params", graph_attr={"rank": "min"})
    for n in ng.nodes.values():
        attrs = _node_style(n)
        attrs.update(node_attrs(n) if node_attrs else {})
        label = attrs.pop("label", n.label)
        attrs.setdefault("id", "n_" + n.ident)
        if n.kind == "param":
            params.node(n.ident, label, **attrs)
        elif n.step is None:
            dot.node(n.ident, label, **attrs)
        else:
            box = f"t = 1 .. {ng.steps}  (x T)" if rolled else f"t = {n.step + 1}"
            if box_note:
                box += f"{NEWLINE}{box_note}"
            clusters.setdefault(n.step, graphviz.Digraph(
                f"{'cluster_' if rolled else CLUSTER}{n.step}", graph_attr={"label": box, "style": "rounded",
                                                 "color": "#999999", "fontname": "Helvetica",
                                                 "fontsize": "10"})).node(
                n.ident, label, **attrs)
    dot.subgraph(params)
    for step in sorted(clusters):
        dot.subgraph(clusters[step])
    # steps left to right in time order: each family (x_1, x_2, ...; S_1, S_2, ...) on one
    # rank, chained by invisible edges (dot keeps the tail of an edge within one rank to the
    # left of its head)
    families = {}
    for n in ng.nodes.values():
        if n.step is not None:
            families.setdefault(_base(n), {}).setdefault(n.step, n.ident)
    for k, family in enumerate(families.values()):
        order = [family[s] for s in sorted(family)]
        row = graphviz.Digraph(f"family_{k}", graph_attr={"rank": "same"})
        for a, b in zip(order, order[1:]):
            row.edge(a, b, style="invis", weight="10")
        dot.subgraph(row)
    steps = {k: n.step for k, n in ng.nodes.items()}
    for tail, head, label in ng.edges:
        attrs = {}
        if label:
            attrs["label"] = label if not rolled else "w_t"
        if ng.nodes[tail].kind == "param":
            attrs.update(color="#7aa7d6", arrowsize="0.4")
        elif steps[tail] is not None and steps[head] is not None and steps[tail] != steps[head]:
            attrs.update(color="#444444", penwidth="1.4")
            if _base(ng.nodes[tail]) != _base(ng.nodes[head]):
                attrs["constraint"] = "false"
        attrs.update(edge_attrs(tail, head) if edge_attrs else {})
        attrs["id"] = edge_id(tail, head)
        dot.edge(tail, head, **attrs)
    return dot


def _role(symbol):
    return (symbol.startswith("b"), symbol.startswith("W_h"), symbol)


def _base(node):
    """S_3 -> S: the symbol without its step."""
    return node.label.split(NEWLINE)[0].rsplit("_", 1)[0]


def edge_id(tail, head):
    """The SVG id of the edge tail -> head (the explorer finds edges by it)."""
    return f"e_{tail}__{head}"


def _node_style(n):
    if n.kind == "param":
        return {"style": "filled", "fillcolor": COLORS["param"], "shape": "box"}
    if n.kind == "root":
        return {"style": "bold,filled", "fillcolor": COLORS["root"]}
    if n.kind == "data":
        return {"style": "dashed"}
    if n.kind == "seq":
        color = COLORS["loss"] if n.label.startswith("L") else COLORS["out"]
        return {"style": "rounded,filled", "fillcolor": color}
    return {"shape": "ellipse", "style": "solid"}


def _rolled(ng):
    """One step (the last) standing for all: its nodes lose their number (S_3 -> S_t),
    edges from the step before come from one dashed "previous step" node per state, and
    the box says x T."""
    last = ng.steps - 1
    keep = {k: n for k, n in ng.nodes.items() if n.step in (None, last)}
    nodes, edges, prev = {}, [], {}
    for k, n in keep.items():
        nodes[k] = dataclasses.replace(n, label=_unnumber(n.label, last))
    for tail, head, label in ng.edges:
        t, h = ng.nodes[tail], ng.nodes[head]
        if h.step not in (None, last) or h.step is None and t.step not in (None, last):
            continue
        if t.step is not None and t.step != last:
            base = _unnumber(t.label, t.step, "t-1")
            ident = "prev_" + tail
            prev[ident] = Node(ident, base, "data", None, t.value)
            edges.append((ident, head, ""))
        elif t.step is None and t.kind == "data" and h.step is None:
            continue
        else:
            edges.append((tail, head, label))
    nodes.update(prev)
    used = {a for a, _, _ in edges} | {b for _, b, _ in edges}
    nodes = {k: n for k, n in nodes.items() if k in used or n.kind == "root"}
    for k, n in nodes.items():
        if n.kind == "root":
            nodes[k] = dataclasses.replace(n, label=f"{n.label} (sum over T = {ng.steps})")
    return NotesGraph(nodes, edges, ng.steps, ng.cell, ng.groups)


def _unnumber(label, step, new="t"):
    suffix = f"_{step + 1}"
    return label[:-len(suffix)] + "_" + new if label.endswith(suffix) else label
