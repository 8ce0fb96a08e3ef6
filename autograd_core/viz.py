"""Graphviz export of the recorded graph, micrograd's `draw_dot` grown up: one box per tensor
(name, shape, dtype, optionally the gradient norm), one small node per op, edges in the forward
direction, and one cluster per time step for recurrent unrolls."""
import pathlib
import shutil
import subprocess
from typing import NamedTuple, Optional

import graphviz
import numpy as np

from . import step_norms
from .engine import grad
from .graph import walk
from .tensor import Tensor

DEFAULT_MAX_NODES = 2000
FORMATS = ("svg", "png", "pdf")


class GraphTooLargeError(ValueError):
    """The graph has more tensors than the drawing limit."""


def param_names(params):
    """{tensor: name} from a Module (named_parameters), a dict or (name, tensor) pairs."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters"):
        params = params.named_parameters()
    elif isinstance(params, dict):
        params = params.items()
    return {t: name for name, t in params}


def _grad_norms(roots, tensors):
    """Norm of d(root)/d(t) for every tensor that requires grad, without touching `.grad`."""
    return {t: float(np.linalg.norm(g)) for t, g in _grad_arrays(roots, tensors).items()}


def _grad_arrays(roots, tensors):
    """d(root)/d(t) (an ndarray) for every tensor that requires grad, without touching
    `.grad`; for several or non-scalar roots, the `.grad` leaves hold."""
    root = roots[0]
    wanted = [t for t in tensors if t.requires_grad]
    if len(roots) != 1 or root.size != 1 or not wanted:
        return {t: t.grad.numpy() for t in tensors if t.grad is not None}
    grads = grad(root, wanted, retain_graph=True, allow_unused=True)
    return {t: g.numpy() for t, g in zip(wanted, grads) if g is not None}


def _label(t, names, norms):
    name = names.get(t) or t.name
    lines = [name] if name else []
    lines.append(f"{tuple(t.shape)} {t.dtype}")
    if t in norms:
        lines.append(f"|grad| {norms[t]:.3g}")
    return "\\n".join(lines)


def node_style(t, names, roots):
    if t in roots:
        return {"shape": "box", "style": "bold,filled", "fillcolor": "#fde9c9"}
    if t._op is None and t.requires_grad:  # a parameter (or any leaf that learns)
        return {"shape": "box", "style": "filled", "fillcolor": "#cfe3f7"}
    if t._op is None:  # data and constants
        return {"shape": "box", "style": "dashed"}
    return {"shape": "box"}


VIEWS = ("ops", "notes", "rolled")


def to_dot(roots, params=None, show_grad=False, cluster_steps=True,
           max_nodes=DEFAULT_MAX_NODES, rankdir="LR", view="ops"):
    """A `graphviz.Digraph` of the graph recorded behind `roots` (a tensor or a list).

    - `params`: a Module, a dict or (name, tensor) pairs naming the leaves (parameter names
      from `named_parameters()`); otherwise a tensor's own `name` is shown.
    - Parameters are filled blue, data and constants dashed, the roots bold.
    - `show_grad`: add each tensor's gradient norm (computed here, from a scalar root, with
      the graph kept; otherwise the `.grad` of leaves is shown).
    - `cluster_steps`: ops recorded inside `ag.step_scope(t)` (as RNN, GRU and LSTM do) are
      grouped in a box per time step.
    - A graph of more than `max_nodes` tensors raises GraphTooLargeError instead of
      producing a drawing that would take the renderer minutes.
    - `view`: "ops" (every op, the default), "notes" (the picture of notes 000 and 001:
      only named tensors, leaves and the root, per step x_t, S_t or the gates, y_t, L_t,
      every parameter fanning into every step; see `notes_view`) or "rolled" (the notes
      view of one step, "x T"). The notes view draws up to `notes_view.MAX_STEPS` steps.
    Draw before backward, or after backward(retain_graph=True): a backward frees the graph.
    """
    if view not in VIEWS:
        raise ValueError(f"to_dot: view must be one of {VIEWS}, got {view!r}")
    roots = [roots] if isinstance(roots, Tensor) else list(roots)
    if view != "ops":
        return _notes_dot(roots, params, show_grad, view, max_nodes)
    tensors = walk(roots, "to_dot", limit=max_nodes)
    if tensors is None:
        raise too_large("to_dot", max_nodes)
    names = param_names(params)
    norms = _grad_norms(roots, tensors) if show_grad else {}
    root_set = set(roots)
    drawn = describe(tensors, lambda t: _label(t, names, norms),
                     lambda t: node_style(t, names, root_set))
    return build_dot(drawn, cluster_steps=cluster_steps, rankdir=rankdir)


def _notes_dot(roots, params, show_grad, view, max_nodes):
    from . import notes_view
    # the drawing is small whatever the graph: walk a much larger graph than the op view draws
    tensors = walk(roots, "to_dot", limit=max_nodes * 100)
    if tensors is None:
        raise too_large("to_dot", max_nodes * 100)
    arrays = _grad_arrays(roots, tensors) if show_grad else {}
    drawn, ng = notes_of(tensors, roots, params)
    if view == "notes" and ng.steps > notes_view.MAX_STEPS:
        raise GraphTooLargeError(
            f"to_dot: {ng.steps} steps are too many for the unrolled notes view (at most "
            f"{notes_view.MAX_STEPS}); draw it with view=\"rolled\"")
    # the norm of a tensor drawn as one node; a sequence drawn once per step (y_t, L_t)
    # shows step t's slice at copy t; a gate's box (several parameters) shows none
    grads = {}
    for t, d in zip(tensors, drawn):
        if t not in arrays:
            continue
        copies = ng.groups.get(d.ident, ())
        if d.ident in ng.nodes:
            grads[d.ident] = float(np.linalg.norm(arrays[t]))
        elif d.kind == "param" and len(copies) == 1:
            if "\n" not in ng.nodes[copies[0]].label:
                grads[copies[0]] = float(np.linalg.norm(arrays[t]))
        elif d.kind != "param" and copies and (d.name is not None or d.kind == "data"):
            per_step = step_norms.blocks(arrays[t], ng.steps)
            for c in copies if per_step is not None else ():
                if ng.nodes[c].step is not None:
                    grads[c] = per_step[ng.nodes[c].step]

    def tooltip(n):
        extra = f"\\n|grad| {grads[n.ident]:.3g}" if n.ident in grads else ""
        attrs = {"tooltip": f"{n.label} {n.value}"}
        if extra:
            attrs["label"] = n.label + extra
        return attrs
    # the rolled view draws the last step: its |grad| labels are that step's
    note = f"|grad| at t = {ng.steps}" if show_grad and view == "rolled" else None
    return notes_view.notes_dot(ng, rolled=view == "rolled", node_attrs=tooltip,
                                box_note=note)


def notes_of(tensors, roots, params=None):
    """(DrawnTensors, notes_view.NotesGraph) of `tensors` (from `walk(roots)`)."""
    from . import notes_view
    names = param_names(params)
    drawn = describe(tensors, lambda t: "", lambda t: {})
    ids = {t: d.ident for t, d in zip(tensors, drawn)}
    ng = notes_view.notes_graph(drawn, [ids[r] for r in roots],
                                {ids[t]: n for t, n in names.items() if t in ids})
    return drawn, ng


def too_large(where, max_nodes):
    return GraphTooLargeError(
        f"{where}: the graph has more than {max_nodes} tensors; pass max_nodes= a larger "
        f"number to draw it anyway (rendering may be slow), or draw a shorter unroll")


class DrawnTensor(NamedTuple):
    """What a drawing needs of one tensor, without its arrays (so it can outlive the graph)."""
    ident: str  # DOT node id; its op is drawn as `ident + "_op"`
    label: str
    style: dict
    op: Optional[str]  # None for a leaf
    inputs: tuple  # DOT ids of the op's inputs, in argument order
    step: Optional[int]
    name: Optional[str] = None  # the tensor's own name
    shape: tuple = ()
    kind: str = "op"  # "param" (a leaf that learns), "data" (other leaves) or "op"
    value: str = ""  # a few of its numbers, for the explorer's hover text
    rows: tuple = ()  # the same per index of the first axis, for step-less named tensors


def describe(tensors, label, style):
    """One DrawnTensor per tensor (newest first, as `walk` gives them)."""
    ids = {t: f"t{k}" for k, t in enumerate(tensors)}
    return [DrawnTensor(ids[t], label(t), style(t), t._op.name if t._op else None,
                        tuple(ids[i] for i in t._inputs) if t._op else (), t._step, t.name,
                        tuple(t.shape), _kind(t), summary(t._data), _rows(t))
            for t in tensors]


def _kind(t):
    if t._op is not None:
        return "op"
    return "param" if t.requires_grad else "data"


def summary(array, count=4):
    """A few numbers of `array`, e.g. "[0.12 -0.5 0.33 ...] (2, 3)"."""
    flat = np.asarray(array).ravel()
    shown = " ".join(f"{v:.3g}" for v in flat[:count].tolist())
    more = " ..." if flat.size > count else ""
    return f"[{shown}{more}] {tuple(np.shape(array))}"


def _rows(t, limit=64):
    """Per-step values of a tensor that may hold a whole sequence (time on the first axis):
    only leaves and named tensors outside a step, and only short sequences."""
    if t._step is not None or t.ndim == 0 or t.shape[0] > limit:
        return ()
    if t._op is not None and t.name is None:
        return ()
    return tuple(summary(row) for row in t._data)


def build_dot(drawn, cluster_steps=True, rankdir="LR", graph_attrs=None, node_attrs=None,
              edge_attrs=None):
    """The Digraph of `drawn` (DrawnTensors). Hooks for drawings that mark up the graph (the
    frames of a backward trace): `node_attrs(d)` returns attributes that override the tensor
    box's own, `edge_attrs(d, k)` those of the edge from input k into the op of `d`."""
    dot = graphviz.Digraph("graph", graph_attr={"rankdir": rankdir, **(graph_attrs or {})},
                           node_attr={"fontname": "Helvetica", "fontsize": "10"})
    clusters = {}
    for d in drawn:
        step = d.step if cluster_steps else None
        target = dot if step is None else clusters.setdefault(step, graphviz.Digraph(
            f"cluster_{step}", graph_attr={"label": f"t = {step}", "style": "rounded",
                                           "color": "#999999"}))
        attrs = {"label": d.label, **d.style, **(node_attrs(d) if node_attrs else {})}
        target.node(d.ident, attrs.pop("label"), **attrs)
        if d.op is not None:
            op_id = d.ident + "_op"
            target.node(op_id, d.op, shape="ellipse", fontsize="9", height="0.3")
            for k, i in enumerate(d.inputs):
                dot.edge(i, op_id, **(edge_attrs(d, k) if edge_attrs else {}))
            dot.edge(op_id, d.ident)
    for step in sorted(clusters):
        dot.subgraph(clusters[step])
    return dot


def render(roots, path, format="svg", **kwargs):
    """Write the drawing of `roots` to `path` (svg, png or pdf) with Graphviz's `dot`.

    The DOT source is written next to it (`path` with the suffix `.dot`) first, so it is there
    even when `dot` is missing, in which case the error says how to install it."""
    if format not in FORMATS:
        raise ValueError(f"render: format must be one of {FORMATS}, got {format!r}")
    path = pathlib.Path(path)
    dot = to_dot(roots, **kwargs)
    source = path.with_suffix(".dot")
    source.write_text(dot.source)
    exe = find_dot(f"render: the Graphviz 'dot' program was not found on PATH, so {path} was "
                   f"not drawn; the DOT source is in {source}.")
    run_dot(exe, source, path, format, "render")
    return path


def find_dot(problem, otherwise="and try again"):
    """The path of Graphviz's `dot`; if it is missing, a RuntimeError: `problem`, how to
    install it, then `otherwise`."""
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(f"{problem} Install Graphviz (Debian/Ubuntu: apt-get install "
                           f"graphviz; macOS: brew install graphviz) {otherwise}.")
    return exe


def run_dot(exe, source, path, format, where):
    result = subprocess.run([exe, f"-T{format}", str(source), "-o", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{where}: dot failed on {source}: {result.stderr.strip()}")
