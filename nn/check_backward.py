"""Check a learner's hand-written backward pass against the engine, and say where it goes wrong.

    report = nn.check_backward(student, model, xs, targets, step_weights=None)
    print(report.table())

`student(params, xs, targets, step_weights)` gets float64 copies of the model's parameters
(under their state_dict names), of `xs`, `targets` and `step_weights`, and returns
`{name: dL/dname}` for every parameter. It may add, to be told WHERE a gradient goes wrong:
  recurrent models  "per_step": {name: [T arrays]}, step t's term of each shared parameter
                    (t = 1..T in time order; note 003: dL/dW = sum_t delta_t h_{t-1}^T), and
                    "dh": [T arrays], the total error dL/dh_t (paths through later steps
                    included), each (B, H);
  MLP               "delta": [L arrays], delta^(l) = dL/dz^(l), each (B, n_l) (note 002).

The engine differentiates the same model on the same data in float64: the whole gradients and
dL/dh_t by `ag.grad`, step t's share of the recurrent layer's parameters by `nn.bptt_report`.
The losses are the model's: for `RecurrentClassifier`, L = sum_t w_t mean_b CE(logits_t, y_t)
(`model.loss`); for `MLP`, the batch mean of E = 1/2 ||y - a^(L)||^2 (float targets (B, n_L),
note 004) or of the cross-entropy (integer targets (B,)); an MLP's student gets
step_weights=None.
"""
import copy
import os
import traceback

import numpy as np

import autograd_core as ag

from .backward_report import BackwardReport, Row, compare, diagnose
from .bptt_report import bptt_report
from .diagnostics import step_states
from .layers import ACTIVATIONS, MLP
from .losses import cross_entropy, sequence_cross_entropy
from .models import RecurrentClassifier

_WHERE = "check_backward"
_EXTRA = {"recurrent": ("per_step", "dh"), "mlp": ("delta",)}


def check_backward(student, model, xs, targets, step_weights=None):
    """Compare `student`'s gradients with the engine's; returns a `BackwardReport`."""
    if not callable(student):
        raise TypeError(f"{_WHERE}: student must be a function (params, xs, targets, "
                        f"step_weights) -> dict, got {type(student).__name__}")
    if isinstance(model, RecurrentClassifier):
        ref = _recurrent_reference(model, xs, targets, step_weights)
    elif isinstance(model, MLP):
        if step_weights is not None:
            raise ValueError(f"{_WHERE}: step_weights apply to recurrent models; an MLP has "
                             f"no time steps")
        ref = _mlp_reference(model, xs, targets)
    else:
        raise TypeError(f"{_WHERE}: model must be an nn.RecurrentClassifier or an nn.MLP, "
                        f"got {type(model).__name__}")

    report = BackwardReport(ref["kind"], ref["steps"])
    result = _call(student, ref["inputs"], report)
    if result is not None:
        _compare_all(ref, result, report)
    report.first_divergence = diagnose(report, ref.get("loss"))
    return report


# ---- the engine's side ------------------------------------------------------------------------
def _float64_copy(model):
    """A float64 copy of `model`; the caller's model (and its .grad) is left alone."""
    return copy.deepcopy(model).double()


def _recurrent_reference(model, xs, targets, step_weights):
    layer = model.rnn
    if layer.num_layers != 1 or layer.batch_first:
        raise ValueError(f"{_WHERE}: supports a one-layer, time-first recurrent layer (the "
                         f"notes' model); got num_layers={layer.num_layers}, "
                         f"batch_first={layer.batch_first}")
    xs = np.array(xs, dtype=np.float64)
    if xs.ndim != 3:
        raise ValueError(f"{_WHERE}: xs must be (T, B, input_size), got shape {xs.shape}")
    steps = xs.shape[0]
    targets = np.array(targets)
    w = np.ones(steps) if step_weights is None else np.array(step_weights, dtype=np.float64)
    if w.shape != (steps,):
        raise ValueError(f"{_WHERE}: step_weights must have shape ({steps},), one per time "
                         f"step, got {w.shape}")
    inputs = (_param_copies(model), xs, targets, w)

    m = _float64_copy(model)
    logits, hidden, _ = m(xs.copy())
    loss = sequence_cross_entropy(logits, targets, w)
    named = dict(m.named_parameters())
    recurrent = {n: p for n, p in named.items() if n.startswith("rnn.")}
    split = bptt_report(loss, recurrent, hidden)      # step t's share of each rnn.* parameter
    states = step_states(hidden)
    grads = ag.grad(loss, [*named.values(), logits, *states], allow_unused=True)
    total = {n: _array(g, p.shape) for (n, p), g in zip(named.items(), grads)}
    g_logits = _array(grads[len(named)], logits.shape)
    h = hidden.numpy()
    per_step = {n: split.contributions[n] for n in recurrent}
    # The output layer runs on all steps at once; its step-t term is g_t h_t^T (note 000).
    per_step["out.weight"] = np.einsum("tbc,tbh->tch", g_logits, h)
    if "out.bias" in named:
        per_step["out.bias"] = g_logits.sum(axis=1)
    dh = [_array(g, s.shape) for g, s in zip(grads[len(named) + 1:], states)]
    order = [n for n in named if n.startswith("out.")] + list(recurrent)
    kind = layer.mode
    return {"kind": kind, "steps": steps, "inputs": inputs, "order": order, "total": total,
            "per_step": {n: per_step[n] for n in order}, "dh": dh, "family": "recurrent"}


def _mlp_reference(model, x, targets):
    x = np.array(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{_WHERE}: an MLP's xs must be (B, n_0), got shape {x.shape}")
    targets = np.array(targets)
    loss_kind = "cross_entropy" if targets.dtype.kind in "iu" else "mse"
    if loss_kind == "mse":
        targets = targets.astype(np.float64)
        if targets.shape != (x.shape[0], model.sizes[-1]):
            raise ValueError(f"{_WHERE}: float targets (mean squared error) must be (B, n_L) = "
                             f"{(x.shape[0], model.sizes[-1])}, got {targets.shape}; integer "
                             f"targets (B,) select the cross-entropy")
    inputs = (_param_copies(model), x, targets, None)

    m = _float64_copy(model)
    # MLP.forward, keeping each layer's z^(l) for delta^(l) = dL/dz^(l).
    f, a, zs = ACTIVATIONS[m.activation], ag.Tensor(x.copy()), []
    for i, layer in enumerate(m.layers):
        zs.append(layer(a))
        a = f(zs[-1]) if i < len(m.layers) - 1 else zs[-1]
    if loss_kind == "mse":
        diff = a - targets
        loss = (diff * diff).sum() * (0.5 / x.shape[0])   # note 004: E = 1/2 ||y - a||^2
    else:
        loss = cross_entropy(a, targets)
    named = dict(m.named_parameters())
    grads = ag.grad(loss, [*named.values(), *zs], allow_unused=True)
    total = {n: _array(g, p.shape) for (n, p), g in zip(named.items(), grads)}
    delta = [_array(g, z.shape) for g, z in zip(grads[len(named):], zs)]
    order = [n for i in reversed(range(len(m.layers))) for n in named
             if n.startswith(f"layers.{i}.")]
    return {"kind": "mlp", "steps": len(m.layers), "inputs": inputs, "order": order,
            "total": total, "delta": delta, "family": "mlp", "loss": loss_kind}


def _param_copies(model):
    return {n: np.array(v, dtype=np.float64) for n, v in model.state_dict().items()}


def _array(g, shape):
    return np.zeros(shape) if g is None else np.asarray(g.numpy(), dtype=np.float64)


# ---- the learner's side -----------------------------------------------------------------------
def _call(student, inputs, report):
    """The learner's result dict, or None with `report.failure` set (never raises)."""
    params, xs, targets, w = inputs
    args = ({n: v.copy() for n, v in params.items()}, xs.copy(), targets.copy(),
            None if w is None else w.copy())
    try:
        result = student(*args)
    except Exception as exc:  # the learner's bug is the report's subject, not ours to raise
        report.failure = f"backward raised {type(exc).__name__}: {exc}{_location(exc)}"
        return None
    if not isinstance(result, dict):
        report.failure = (f"backward returned {type(result).__name__}, expected a dict "
                          f"{{name: gradient}} with the state_dict names")
        return None
    return result


def _location(exc):
    """' (at file:line in function)' for the innermost frame outside numpy."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f"{os.sep}numpy{os.sep}" not in f.filename and f.filename != __file__]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename}:{f.lineno} in {f.name})"


# ---- comparing --------------------------------------------------------------------------------
def _compare_all(ref, result, report):
    """Append one row per quantity to `report.rows`, in the order of the reverse sweep."""
    extra = _EXTRA[ref["family"]]
    for key in result:
        if key not in ref["order"] and key not in extra:
            report.notes.append(f"unknown key {key!r} ignored (expected the state_dict names "
                                f"{', '.join(ref['order'])}, or {', '.join(extra)})")
    rows = _recurrent_rows if ref["family"] == "recurrent" else _mlp_rows
    compared = list(rows(ref, result, report))  # malformed "per_step"/"dh"/"delta" rows first
    report.rows.extend(compared)


def _recurrent_rows(ref, result, report):
    """Steps T..1 (the output layer's terms, dL/dh_t, the recurrent layer's terms), then the
    whole gradients."""
    kind, steps = ref["kind"], ref["steps"]
    per_step = _sequence_dict(result.get("per_step"), "per_step", ref, report)
    dh = _sequence(result.get("dh"), "dh", steps, report)
    outputs = [n for n in ref["order"] if n.startswith("out.")]
    recurrent = [n for n in ref["order"] if n not in outputs]
    for t in reversed(range(steps)):
        for name in outputs:
            if name in per_step:
                yield compare(name, t + 1, ref["per_step"][name][t], per_step[name][t], kind)
        if dh is not None:
            yield compare("dh", t + 1, ref["dh"][t], dh[t], kind)
        for name in recurrent:
            if name in per_step:
                yield compare(name, t + 1, ref["per_step"][name][t], per_step[name][t], kind)
    for name in ref["order"]:
        yield compare(name, None, ref["total"][name], result.get(name), kind)


def _mlp_rows(ref, result, report):
    """Layers L..1: delta^(l) when given, then W^(l) and b^(l); `step` is the layer l."""
    delta = _sequence(result.get("delta"), "delta", ref["steps"], report)
    for l in reversed(range(ref["steps"])):
        if delta is not None:
            yield compare("delta", l + 1, ref["delta"][l], delta[l])
        for name in ref["order"]:
            if name.startswith(f"layers.{l}."):
                yield compare(name, l + 1, ref["total"][name], result.get(name))


def _sequence(value, key, length, report):
    """A list of `length` items, or None (absent, or malformed: then a failing row)."""
    if value is None:
        return None
    unit = "layer" if key == "delta" else "time step"
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        return _malformed(report, key, f"must be a list of {length} arrays (one per {unit}), "
                                       f"got {type(value).__name__}")
    if len(value) != length:
        return _malformed(report, key, f"has {len(value)} entries, expected {length} (one "
                                       f"per {unit}, in order)")
    return list(value)


def _sequence_dict(value, key, ref, report):
    """name -> list of T items for the names given; malformed entries become failing rows."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        _malformed(report, key, f"must be a dict name -> [T arrays], got "
                                f"{type(value).__name__}")
        return {}
    out = {}
    for name, steps in value.items():
        if name not in ref["per_step"]:
            report.notes.append(f"{key!r} has unknown parameter {name!r}; ignored")
            continue
        items = _sequence(steps, f"{key}[{name!r}]", ref["steps"], report)
        if items is not None:
            out[name] = items
    return out


def _malformed(report, key, problem):
    nan = float("nan")
    report.rows.append(Row(key, None, nan, nan, nan, float("inf"), problem))
    return None
