"""Where a shared parameter's gradient comes from, step by step (note 003, eq. 5, 6, 8):

    grad_W L = sum_t delta_t s_{t-1}^T,     grad_U L = sum_t delta_t x_t^T,

read from ONE reverse sweep of the engine over the recorded graph; nothing here is a
hand-written derivative.

What "the contribution of step t" means
---------------------------------------
Recurrent layers record each step inside `ag.step_scope(t)`, so every node of step t carries
`step == t`; nodes recorded outside any step carry `step is None`. A contribution is from step
t when it leaves a node of step t towards a node outside the steps: a weight or bias used as
is, a transpose or slice of one made before the loop (`w_hh.T`, `w_hh[:2H]`), or the input
projection of all steps `p = x_flat W_ih^T + b` whose row block `p[t]` is read inside step t.
An observer of the sweep (`ag.SweepObserver` with `contributions = False`, so the engine's fast
rules still run) is handed the gradient each step node that sends something out of the steps
receives; what it sends is then carried down to the parameters through the few nodes between
the steps (transposes, slices, the projection matmul) with the engine's own rules
(`ag.node_vjp`, see `nn.step_split`), stopping wherever it would re-enter a step (that step's
own contributions are counted where they leave it; so a stacked layer's input projection,
which reads the layer below, counts nothing twice). So step t's share of `weight_ih` is
delta_t x_t^T, as in the notes, although the engine ran the input projection of all steps as
one matmul; and the whole report costs a few times one backward, linear in the length.

What reaches a parameter without passing through any step, e.g. an output layer applied to the
stacked states of all steps at once (as `RecurrentClassifier` does), goes in `outside_steps`.
`nn.manual`'s step_grads book the output layer's term g_t h_t^T under step t instead; the two
agree once the output layer runs inside each step's scope. In every case

    contributions[name].sum(axis=0) + outside_steps[name] == dL/d(name).
"""
from dataclasses import dataclass

import numpy as np

import autograd_core as ag
from autograd_core import Tensor

from .diagnostics import decay_rate, state_list
from .step_split import StepSplit

# Per-step factor r of ||dL/dh_t|| ~ C r^(T - t): below VANISHING_BELOW the gradient shrinks
# at least 10x every 22 steps back; above EXPLODING_ABOVE it grows as fast.
VANISHING_BELOW = 0.9
EXPLODING_ABOVE = 1.1

_WHERE = "bptt_report"


@dataclass
class BPTTReport:
    """Per-step view of one backward pass. Row i belongs to hidden state i (h_{i+1}).

    steps:              (T,) the step-scope index each hidden state was recorded in.
    state_grad_norms:   (T,) ||dL/dh_t||, the total error at step t (later steps included).
    contributions:      name -> (T, *shape), step t's share of dL/d(name).
    contribution_norms: name -> (T,), their Frobenius norms.
    outside_steps:      name -> (*shape), what reached the parameter from no step.
    decay_rate:         r fitted to ||dL/dh_t|| ~ C r^(T - t) (nan with < 2 non-zero norms).
    verdict:            "vanishing", "exploding", "stable" or "undetermined" (see `classify`).
    """
    steps: np.ndarray
    state_grad_norms: np.ndarray
    contributions: dict
    contribution_norms: dict
    outside_steps: dict
    decay_rate: float
    verdict: str

    def total(self, name):
        """dL/d(name): the per-step contributions plus the outside-steps part."""
        return self.contributions[name].sum(axis=0) + self.outside_steps[name]

    def table(self):
        """One row per step: t, ||dL/dh_t||, each parameter's contribution norm; then the
        outside-steps norms and the verdict."""
        names = list(self.contributions)
        widths = [max(len(n), 11) for n in names]
        lines = ["  t  ||dL/dh_t||  " + "  ".join(n.rjust(w) for n, w in zip(names, widths))]
        for i in range(len(self.steps)):
            cells = (f"{self.contribution_norms[n][i]:.4e}".rjust(w)
                     for n, w in zip(names, widths))
            lines.append(f"{i + 1:>3}  {self.state_grad_norms[i]:11.4e}  " + "  ".join(cells))
        outside = (f"{np.linalg.norm(self.outside_steps[n]):.4e}".rjust(w)
                   for n, w in zip(names, widths))
        lines.append(f"{'outside':>16}  " + "  ".join(outside))
        lines.append(f"decay rate {self.decay_rate:.4g} per step back: {self.verdict}")
        return "\n".join(lines)

    def save_npz(self, path):
        """Every array in one .npz; per-parameter arrays under 'contributions/<name>',
        'contribution_norms/<name>' and 'outside_steps/<name>'."""
        arrays = {"steps": self.steps, "state_grad_norms": self.state_grad_norms,
                  "decay_rate": np.float64(self.decay_rate), "verdict": np.str_(self.verdict)}
        for group in ("contributions", "contribution_norms", "outside_steps"):
            for name, value in getattr(self, group).items():
                arrays[f"{group}/{name}"] = value
        np.savez(path, **arrays)
        return path

    def plot(self, path, names=None, title="Contribution of each step to the gradient"):
        """PNG of the contribution norms per step (log scale), one line per parameter in
        `names` (default all), beside ||dL/dh_t||. Needs matplotlib."""
        from .plots import log_plot
        t = np.arange(1, len(self.steps) + 1)
        curves = {"||dL/dh_t||": (t, self.state_grad_norms)}
        for name in self.contributions if names is None else names:
            curves[name] = (t, self.contribution_norms[name])
        return log_plot(curves, path, "time step t", "norm", title)


def classify(rate, vanishing_below=VANISHING_BELOW, exploding_above=EXPLODING_ABOVE):
    """The verdict for a fitted per-step factor."""
    if not np.isfinite(rate):
        return "undetermined"
    if rate < vanishing_below:
        return "vanishing"
    if rate > exploding_above:
        return "exploding"
    return "stable"


def bptt_report(loss, params, hidden_states, *, allow_unused=True,
                vanishing_below=VANISHING_BELOW, exploding_above=EXPLODING_ABOVE):
    """Per-step BPTT report of the scalar `loss`, from one reverse sweep.

    params:         a Module (its named_parameters) or a dict name -> Parameter.
    hidden_states:  h_1..h_T in time order, each recorded in its own step scope, or the output
                    tensor of a recurrent layer (see `nn.diagnostics.step_states`).
    allow_unused:   a parameter the loss does not depend on gets zero contributions (True,
                    the default: a Module may hold parameters a loss does not use) or a
                    ValueError (False).
    The graph is kept (retain_graph) and no `.grad` is written. Returns a `BPTTReport`.
    """
    named = _named_params(params)
    states = state_list(hidden_states, _WHERE)
    _check_loss(loss)
    graph = ag.walk_graph(loss)
    in_graph = set(graph)
    _check_states(states, in_graph, graph)
    _check_used(named, in_graph, allow_unused)

    row_of = {h.step: i for i, h in enumerate(states)}
    split = StepSplit(graph, named, row_of, len(states))
    # One sweep, watched by an observer that sees only what each node receives (so the
    # engine's fast rules still run): what every step node sending something out of the
    # steps received is handed to the split.
    found = ag.grad(loss, states, retain_graph=True, allow_unused=True,
                    observer=_Crossings(split))
    captured = {t: g for t, g in zip(states, found) if g is not None}
    if loss.step is None:
        split.seed(loss, np.ones(loss.shape, dtype=loss.dtype))
    split.carry()
    outside = split.outside

    norms = np.array([_norm(captured.get(h)) for h in states])
    try:
        rate = decay_rate(norms)
    except ValueError:  # fewer than two non-zero norms: nothing to fit
        rate = float("nan")
    contributions = split.totals
    return BPTTReport(
        steps=np.array([h.step for h in states]), state_grad_norms=norms,
        contributions=contributions,
        contribution_norms={n: np.sqrt((c.reshape(len(states), -1) ** 2).sum(axis=1))
                            for n, c in contributions.items()},
        outside_steps={n: _as_float64(outside.get(p), p.shape) for n, p in named.items()},
        decay_rate=rate, verdict=classify(rate, vanishing_below, exploding_above))


class _Crossings(ag.SweepObserver):
    """Hands the gradient each boundary node receives to the split (a copy: the sweep may
    add into its array later)."""

    contributions = False

    def __init__(self, split):
        self.split, self.boundary = split, set(split.boundary)

    def node(self, tensor, grad, sent):
        if tensor in self.boundary:
            self.split.cross(tensor, np.array(grad))


# ---- input checks ---------------------------------------------------------------------------
def _named_params(params):
    if hasattr(params, "named_parameters"):
        named = dict(params.named_parameters())
    elif isinstance(params, dict):
        named = dict(params)
    else:
        raise TypeError(f"{_WHERE}: params must be a Module or a dict name -> Parameter, got "
                        f"{type(params).__name__}")
    if not named:
        raise ValueError(f"{_WHERE}: no parameters given")
    for name, p in named.items():
        if not isinstance(p, Tensor) or not p.requires_grad or not p.is_leaf:
            raise TypeError(f"{_WHERE}: parameter {name!r} must be a leaf Tensor that "
                            f"requires grad, got {_describe(p)}")
    return named


def _check_loss(loss):
    if not isinstance(loss, Tensor):
        raise TypeError(f"{_WHERE}: loss must be a Tensor, got {type(loss).__name__}")
    if loss.size != 1:
        raise ValueError(f"{_WHERE}: loss must be a scalar (one element), got shape "
                         f"{tuple(loss.shape)}; reduce it first, e.g. loss.sum()")
    if not loss.requires_grad:
        raise ValueError(f"{_WHERE}: loss does not require grad (made under no_grad or "
                         f"from constants only)")


def _check_states(states, in_graph, graph):
    seen = {}
    for i, h in enumerate(states):
        if h not in in_graph:
            raise ValueError(f"{_WHERE}: hidden state {i} (shape {tuple(h.shape)}) is not in "
                             f"the loss's graph: the loss does not depend on it (a state of "
                             f"another run, or detached?)")
        if h.step is None:
            raise ValueError(f"{_WHERE}: hidden state {i} was recorded outside any step "
                             f"scope (model without step scopes): the model must run each "
                             f"time step inside `with ag.step_scope(t):`")
        if h.step in seen:
            raise ValueError(f"{_WHERE}: hidden states {seen[h.step]} and {i} were both "
                             f"recorded in step {h.step}; pass one state per step")
        if seen and h.step < states[i - 1].step:
            raise ValueError(f"{_WHERE}: hidden states must be in time order; state {i} is "
                             f"from step {h.step}, after step {states[i - 1].step}")
        seen[h.step] = i
    orphan = sorted({t.step for t in graph if t.step is not None} - set(seen))
    if orphan:
        raise ValueError(f"{_WHERE}: the loss's graph has nodes recorded in step(s) "
                         f"{orphan[:10]} but no hidden state from them; pass every h_t")


def _check_used(named, in_graph, allow_unused):
    unused = [n for n, p in named.items() if p not in in_graph]
    if unused and not allow_unused:
        raise ValueError(f"{_WHERE}: the loss does not depend on parameter(s) {unused}; "
                         f"pass allow_unused=True to report zeros for them")


# ---- small helpers --------------------------------------------------------------------------
def _describe(p):
    if not isinstance(p, Tensor):
        return type(p).__name__
    return "a tensor made by an op" if not p.is_leaf else "a tensor without requires_grad"


def _norm(g):
    return 0.0 if g is None else float(np.linalg.norm(g))


def _as_float64(g, shape):
    return np.zeros(shape) if g is None else np.asarray(g, dtype=np.float64).reshape(shape)
