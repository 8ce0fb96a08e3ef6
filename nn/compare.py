"""Engine gradients against the hand-derived reference (`nn.manual`), as a table.

    nn.compare.compare(seed=0, models=("mlp", "rnn", "gru"), dtype=np.float64, perturb=None)

(from the command line: `bptt check [--seed N] [--models ...] [--dtype ...] [--perturb NAME]`)

For each model the `nn` model and the reference get the same weights and the same random data;
the engine differentiates the model's plain forward code (`loss.backward()`), the reference runs
the notes' hand-written backward pass. One row per compared quantity:

    (loss)       the loss values
    <parameter>  dL/dparameter, one row per parameter, by the model's parameter names
    (dL/dh)      recurrent models: the total error dL/dh_t of every step (paths through later
                 steps included); the engine gets it from an unroll that keeps each h_t as one node

`max abs diff` is max |engine - reference| over the entries; `max rel diff` is that divided by
max |reference| (relative to the quantity's scale, so entries that happen to be near zero do not
blow it up). A row is ok when its relative difference is at most the tolerance (1e-10 in float64).
`perturb=NAME` adds a small error (1e-6 of its scale) to one entry of that parameter's engine
gradient, to show the check catches it; `MODEL:NAME` restricts it to one model. `bptt check`
exits with status 1 when any row is not ok.
"""
from typing import NamedTuple

import numpy as np

import autograd_core as ag

from . import manual
from .layers import MLP
from .losses import cross_entropy, mse_loss, sequence_cross_entropy
from .models import RecurrentClassifier

# name -> (family, model keyword arguments, reference keyword arguments, MLP loss)
MODELS = {
    "mlp": ("mlp", {"activation": "tanh"}, {"activation": "tanh", "loss": "mse"}, "mse"),
    "mlp-ce": ("mlp", {"activation": "tanh"}, {"activation": "tanh", "loss": "cross_entropy"},
               "cross_entropy"),
    "rnn": ("rnn", {"nonlinearity": "tanh"}, {"nonlinearity": "tanh"}, None),
    "rnn-relu": ("rnn", {"nonlinearity": "relu"}, {"nonlinearity": "relu"}, None),
    "gru": ("gru", {"variant": "notes"}, {"variant": "notes"}, None),
    "gru-torch": ("gru", {"variant": "torch"}, {"variant": "torch"}, None),
}
DEFAULT_MODELS = ("mlp", "rnn", "gru")
TOLERANCES = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
PERTURBATION = 1e-6
DTYPES = {"float64": np.float64, "float32": np.float32}


class Row(NamedTuple):
    model: str
    parameter: str
    max_abs: float
    max_rel: float
    tolerance: float
    ok: bool


def _row(model, name, engine, reference, tol):
    engine = np.asarray(engine, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    diff = float(np.max(np.abs(engine - reference))) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    if scale > 0:
        rel = diff / scale
    else:
        rel = 0.0 if diff == 0 else float("inf")
    ok = bool(np.isfinite(diff) and np.isfinite(rel) and rel <= tol)
    return Row(model, name, diff, rel, tol, ok)


def _parse_perturb(perturb, models, param_names):
    """`perturb` (None, "NAME" or "MODEL:NAME") -> set of (model, parameter) pairs."""
    if perturb is None:
        return set()
    model, _, name = perturb.rpartition(":")
    if model and model not in models:
        raise ValueError(f"compare: --perturb {perturb!r} names model {model!r}, which is not "
                         f"compared; compared models: {', '.join(models)}")
    hits = {(m, name) for m in ([model] if model else models) if name in param_names[m]}
    if not hits:
        known = sorted({n for m in models for n in param_names[m]})
        raise ValueError(f"compare: --perturb {perturb!r} matches no parameter; parameters: "
                         f"{', '.join(known)}")
    return hits


def _engine_mlp(model, x, y, loss_kind):
    out = model(ag.Tensor(x))
    if loss_kind == "mse":       # batch mean of E = 1/2 ||y - a||^2 (notes 002, 004)
        loss = mse_loss(out, ag.Tensor(y), reduction="sum") * (0.5 / x.shape[0])
    else:
        loss = cross_entropy(out, y)
    loss.backward()
    return loss.item()


def _engine_total_dh(model, xs, targets, weights, h0):
    """dL/dh_t, t = 1..T, from the engine. The layer's stacked output only sees the direct path
    (the recurrence reads the per-step h_t, not the stack), so unroll one step at a time through
    the same layer and keep each h_t as a single node that both the loss and h_{t+1} read."""
    h, hs = ag.Tensor(h0[None]), []
    for t in range(xs.shape[0]):
        _, h_n = model.rnn(ag.Tensor(xs[t:t + 1]), h)
        h_t = h_n[0]
        h_t.retain_grad()
        hs.append(h_t)
        h = h_t[None]
    sequence_cross_entropy(model.out(ag.stack(hs)), targets, weights).backward()
    return np.stack([h_t.grad.numpy() for h_t in hs])


def compare(seed=0, models=DEFAULT_MODELS, dtype=np.float64, *, batch=3, steps=5, input_size=4,
            hidden_size=5, num_classes=3, mlp_hidden=(6, 5), tolerance=None, perturb=None):
    """Run engine and reference on the same random data; return a list of `Row`s.

    `models`: names from `MODELS`. `dtype`: the engine's float type (the reference always
    computes in float64 from the same values). `tolerance`: maximum relative difference, by
    default 1e-10 for float64 and 1e-4 for float32. `perturb`: see the module docstring.
    """
    models = tuple(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"compare: unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    dtype = np.dtype(dtype)
    if dtype not in TOLERANCES:
        raise ValueError(f"compare: dtype must be float32 or float64, got {dtype}")
    tol = TOLERANCES[dtype] if tolerance is None else float(tolerance)

    built = {}
    for k, name in enumerate(models):
        family, model_kw, ref_kw, loss_kind = MODELS[name]
        rng = np.random.default_rng([seed, k])
        if family == "mlp":
            model = MLP([input_size, *mlp_hidden, num_classes], rng=rng, **model_kw).to(dtype)
        else:
            model = RecurrentClassifier(input_size, hidden_size, num_classes, cell=family,
                                        rng=rng, **model_kw).to(dtype)
        built[name] = (model, rng)
    names = {m: [n for n, _ in built[m][0].named_parameters()] for m in models}
    perturbed = _parse_perturb(perturb, models, names)

    rows = []
    for name in models:
        family, _, ref_kw, loss_kind = MODELS[name]
        model, rng = built[name]
        params = model.state_dict()
        if family == "mlp":
            x = rng.normal(size=(batch, input_size)).astype(dtype)
            if loss_kind == "mse":
                y = rng.normal(size=(batch, num_classes)).astype(dtype)
            else:
                y = rng.integers(0, num_classes, batch)
            ref = manual.mlp_forward_backward(params, x, y, **ref_kw)
            loss = _engine_mlp(model, x, y, loss_kind)
            ref_dh = None
        else:
            xs = rng.normal(size=(steps, batch, input_size)).astype(dtype)
            targets = rng.integers(0, num_classes, (steps, batch))
            weights = rng.uniform(0.1, 1.0, steps).astype(dtype)
            h0 = (0.5 * rng.normal(size=(batch, hidden_size))).astype(dtype)
            fb = manual.rnn_forward_backward if family == "rnn" else manual.gru_forward_backward
            ref = fb(params, xs, targets, step_weights=weights, h0=h0, **ref_kw)
            loss = model.loss(ag.Tensor(xs), targets, weights, ag.Tensor(h0[None]))
            loss.backward()
            loss = loss.item()
            ref_dh = ref.dL_dh
        rows.append(_row(name, "(loss)", loss, ref.loss, tol))
        for pname, p in model.named_parameters():
            g = p.grad.numpy().astype(np.float64)
            if (name, pname) in perturbed:
                g.flat[0] += PERTURBATION * max(float(np.max(np.abs(g))), 1.0)
            rows.append(_row(name, pname, g, ref.grads[pname], tol))
        if ref_dh is not None:
            rows.append(_row(name, "(dL/dh)", _engine_total_dh(model, xs, targets, weights, h0),
                             ref_dh, tol))
    return rows


def format_table(rows):
    """The rows as an aligned text table, one line per row."""
    header = ("model", "parameter", "max abs diff", "max rel diff", "tolerance", "ok")
    body = [(r.model, r.parameter, f"{r.max_abs:.3e}", f"{r.max_rel:.3e}", f"{r.tolerance:.0e}",
             "ok" if r.ok else "FAIL") for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = (False, False, True, True, True, False)

    def fmt(line):
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body)])
