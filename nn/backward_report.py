"""The result of `nn.check_backward`: engine vs. learner, quantity by quantity, and where to look.

Rows come in the order the reverse sweep meets their quantities: for a recurrent model step T
first (the output layer's term, then dL/dh_T, then the recurrent layer's terms), down to step 1,
then the whole gradients; for an MLP layer L first (delta^(L), then W^(L) and b^(L)), down to
layer 1. The first row that disagrees is the diagnosis: every quantity after it may be wrong
only because it was computed from it.
"""
from dataclasses import dataclass, field

import numpy as np

TOLERANCE = 1e-8  # normwise relative: ||learner - engine|| / max(||engine||, ||learner||)

# Gate blocks of the stacked recurrent parameters (torch order; n is the notes' h~).
GATE_NAMES = {"gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}


@dataclass
class Row:
    """One compared quantity. `step` is 1..T (recurrent; None for a whole gradient) or the
    layer 1..L (MLP). `problem` says why there is nothing to compare (missing,
    wrong shape, not finite); then `rel` is inf."""
    parameter: str
    step: object
    engine_norm: float
    learner_norm: float
    diff_norm: float
    rel: float
    problem: str = ""
    gates: tuple = ()

    @property
    def ok(self):
        return not self.problem and self.rel <= TOLERANCE


@dataclass
class Divergence:
    """The first disagreement: `parameter` (a state_dict name, "dh" or "delta"; None when the
    learner's backward raised or returned no dict), `step` (1..T, or None for a whole
    gradient; for an MLP the layer 1..L), `max_rel` (its normwise relative difference, inf when nothing could be compared),
    and `where` (a sentence saying where to look)."""
    parameter: object
    step: object
    max_rel: float
    where: str


@dataclass
class BackwardReport:
    """`ok`, `first_divergence` (None or a `Divergence`), `rows` (every `Row` in sweep order),
    `notes` (things ignored, e.g. unknown keys), `table()`."""
    kind: str                      # "rnn", "gru", "lstm" or "mlp"
    steps: int                     # T (recurrent) or the number of layers L (MLP)
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    failure: str = ""              # the learner's backward raised or returned no dict
    first_divergence: object = None

    @property
    def ok(self):
        return not self.failure and all(r.ok for r in self.rows)

    @property
    def max_rel(self):
        """The largest normwise relative difference over all rows (inf if one failed)."""
        if self.failure:
            return float("inf")
        return max((r.rel for r in self.rows), default=0.0)

    def table(self):
        """The rows as text, then a line in words that says where to look."""
        unit = "layer" if self.kind == "mlp" else "step"
        lines = []
        if self.failure:
            lines.append(self.failure)
        else:
            width = max([len("quantity")] + [len(r.parameter) for r in self.rows])
            lines.append(f"{'quantity':<{width}}  {unit:>5}  {'|engine|':>10}  "
                         f"{'|learner|':>10}  {'|diff|':>10}  {'rel':>8}  ok")
            for r in self.rows:
                step = "all" if r.step is None else str(r.step)
                learner = "-" if r.problem else f"{r.learner_norm:10.4e}"
                diff = "-" if r.problem else f"{r.diff_norm:10.4e}"
                rel = "-" if r.problem else f"{r.rel:8.1e}"
                mark = "ok" if r.ok else "DIFFERS"
                extra = f"  {r.problem}" if r.problem else ""
                if r.gates:
                    extra += f"  (gate {', '.join(r.gates)})"
                lines.append(f"{r.parameter:<{width}}  {step:>5}  {r.engine_norm:10.4e}  "
                             f"{learner:>10}  {diff:>10}  {rel:>8}  {mark}{extra}")
        lines += [f"note: {n}" for n in self.notes]
        d = self.first_divergence
        if self.failure:
            lines.append("nothing compared: the backward must run on these inputs and return "
                         "a dict")
        elif d is None:
            lines.append(f"all {len(self.rows)} quantities agree within a relative "
                         f"{TOLERANCE:g}")
        else:
            at = "" if d.step is None else f" at {unit} {d.step}"
            name = "backward" if d.parameter is None else d.parameter
            lines.append(f"first divergence: {name}{at} (relative {d.max_rel:.2g})")
            lines.append(f"where to look: {d.where}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


# ---- comparing one quantity -------------------------------------------------------------------
def compare(parameter, step, engine, learner, kind=None):
    """A `Row` for one quantity; `learner` is whatever the learner returned (None: missing)."""
    engine = np.asarray(engine, dtype=np.float64)
    e_norm = float(np.linalg.norm(engine))
    if learner is None:
        return Row(parameter, step, e_norm, np.nan, np.nan, np.inf, "missing")
    try:
        value = np.asarray(learner, dtype=np.float64)
    except (TypeError, ValueError):
        return Row(parameter, step, e_norm, np.nan, np.nan, np.inf,
                   f"not a numeric array ({type(learner).__name__})")
    if value.shape != engine.shape:
        hint = " (transposed?)" if value.shape == engine.shape[::-1] else ""
        return Row(parameter, step, e_norm, np.nan, np.nan, np.inf,
                   f"shape {value.shape}, expected {engine.shape}{hint}")
    if not np.all(np.isfinite(value)):
        return Row(parameter, step, e_norm, np.nan, np.nan, np.inf, "contains nan or inf")
    diff = value - engine
    row = Row(parameter, step, e_norm, float(np.linalg.norm(value)),
              float(np.linalg.norm(diff)), _rel(diff, engine, value))
    if not row.ok and kind in GATE_NAMES and parameter.startswith("rnn."):
        row.gates = _gates(kind, diff, engine, value)
    return row


def _rel(diff, engine, value):
    scale = max(np.linalg.norm(engine), np.linalg.norm(value))
    return 0.0 if scale == 0 else float(np.linalg.norm(diff) / scale)


def _gates(kind, diff, engine, value):
    """The gate blocks (rows of the stacked parameter) where the difference sits."""
    names = GATE_NAMES[kind]
    blocks = zip(np.split(diff, len(names)), np.split(engine, len(names)),
                 np.split(value, len(names)))
    return tuple(n for n, (d, e, v) in zip(names, blocks) if _rel(d, e, v) > TOLERANCE)


# ---- where to look --------------------------------------------------------------------------
_RECURSION = {"rnn": "through W_hh and f' at step {n}",
              "gru": "through W_hh and the gates of step {n}, along the four paths of note 001",
              "lstm": "through W_hh and the gates of step {n}; c_t carries its own error"}
_LOCAL = {"rnn": "f'(net_t), e.g. tanh' = 1 - h_t^2",
          "gru": "the gate derivatives (sigmoid' = s(1 - s), tanh' = 1 - h~^2)",
          "lstm": "the gate derivatives, or dL/dc_t"}


def diagnose(report, loss=None):
    """The report's first disagreement as a `Divergence` (None when everything agrees)."""
    if report.failure:
        return Divergence(None, None, float("inf"), report.failure)
    bad = next((r for r in report.rows if not r.ok), None)
    if bad is None:
        return None
    words = _mlp_words if report.kind == "mlp" else _recurrent_words
    where = words(report, bad, loss)
    if bad.gates:
        where += f" The difference sits in the rows of gate {', '.join(bad.gates)}"
        where += " (n is the notes' h~)." if "n" in bad.gates else "."
    return Divergence(bad.parameter, bad.step, bad.rel, where)


def _problem_words(r, per_step=True):
    if r.problem == "missing":
        return (f"the result has no {r.parameter!r}"
                + ("" if r.step is None or not per_step else f" for step {r.step}")
                + ": return one gradient per parameter, under its state_dict name.")
    if r.problem.startswith("shape"):
        return (f"{r.parameter}: {r.problem}; each array has the shape of what it "
                f"differentiates.")
    return f"{r.parameter}: {r.problem}."


def _given(report, parameter):
    """The per-step (or per-layer) rows of `parameter`."""
    return [r for r in report.rows if r.parameter == parameter and r.step is not None]


def _recurrent_words(report, r, loss):
    if r.problem:
        return _problem_words(r)
    t, kind = r.step, report.kind
    if r.parameter == "dh":
        if t == report.steps:
            return ("dL/dh_T itself differs: at the last step it is only the output layer's "
                    "term V^T g_T, with g_T = w_T (y^_T - y_T) / B.")
        return (f"dL/dh_{t} itself differs while step {t + 1} agrees: the recursion from step "
                f"{t + 1} is wrong (what h_{t + 1} sends back to h_{t}, "
                f"{_RECURSION[kind].format(n=t + 1)}), or the direct term V^T g_{t} added "
                f"to it.")
    steps = _given(report, r.parameter)
    if t is None and steps and all(s.ok for s in steps):
        return (f"every step's term of {r.parameter} agrees but the whole gradient does not: "
                f"the sum over the steps is wrong (a step left out or counted twice?).")
    ask = "" if steps else " Return 'per_step' and 'dh' too, and the report names the step."
    if r.parameter.startswith("out."):
        at = "" if t is None else f" at step {t}"
        return (f"the output layer's term{at} differs: g_t h_t^T for out.weight, g_t for "
                f"out.bias, with g_t = w_t (y^_t - y_t) / B (the step weight and the batch "
                f"mean included).{ask if t is None else ''}")
    if t is not None:
        if not _given(report, "dh"):
            return (f"step {t}'s term of {r.parameter} differs. Return 'dh' (dL/dh_t) too: "
                    f"without it a wrong local derivative at step {t} and a wrong recursion "
                    f"into step {t} look alike.")
        return (f"dL/dh_{t} agrees but step {t}'s term of {r.parameter} does not: the local "
                f"derivative at step {t} ({_LOCAL[kind]}) or the outer product at step {t} "
                f"(with x_{t} or h_{t - 1}) is wrong.")
    return f"dL/d{r.parameter} differs as a whole.{ask}"


def _layer(name):
    return int(name.split(".")[1]) + 1


def _mlp_words(report, r, loss):
    if r.problem:
        return _problem_words(r, per_step=False)
    if r.parameter == "delta":
        l, last = r.step, report.steps
        if l == last:
            error = ("-(y - a^(L)) / B" if loss == "mse"
                     else "(softmax(z^(L)) - onehot(y)) / B")
            return (f"delta^({l}) = dL/dz^({l}) itself differs: the output error is wrong "
                    f"(the output is linear, so delta^(L) = {error}).")
        return (f"delta^({l}) itself differs while layer {l + 1} agrees: the recursion from "
                f"layer {l + 1} is wrong: delta^({l}) = (delta^({l + 1}) W^({l + 1})) "
                f"* f'(z^({l})).")
    l = _layer(r.parameter)
    if _given(report, "delta"):
        return (f"delta^({l}) agrees but dL/d{r.parameter} does not: the outer product "
                f"delta^({l})^T a^({l - 1}) (weight) or the sum of delta^({l}) over the batch "
                f"(bias) at layer {l} is wrong.")
    return (f"dL/d{r.parameter} (layer {l}) differs. Return 'delta' (dL/dz^(l), one per layer) "
            f"too, to tell a wrong recursion from a wrong outer product.")
