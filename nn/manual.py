"""Hand-derived gradients of the source notes, in plain numpy (no autograd, no Tensor).

This module is the reference the engine is checked against: every backward pass below is written
out by hand, step by step, following the notes in ``shared/seeds`` (000: a 3-step RNN, 001: GRU
backprop, 002: MLP backprop and BPTT, 003: BPTT weight gradients, 004: backprop by induction).

Row-vector convention
---------------------
The notes write column vectors, ``S_t = tanh(U x_t + W S_{t-1} + b_a)``. Here a batch of B samples
is stored one sample per row, so ``x_t`` has shape (B, I), ``S_t`` has shape (B, H), and the same
equation reads ``S_t = tanh(x_t @ U.T + S_{t-1} @ W.T + b_a)``. Likewise the notes' outer product
``delta_t s_{t-1}^T`` becomes ``delta_t.T @ S_{t-1}``, which also sums it over the batch.
Sequences are time-first: ``xs`` has shape (T, B, I), integer ``targets`` shape (T, B).

Name mapping (torch-style parameter names, so model weights can be handed over)
-------------------------------------------------------------------------------
MLP, ``sizes = [n0, ..., nL]``:   ``layers.{i}.weight`` (n_{i+1}, n_i) = W^(i+1),
                                  ``layers.{i}.bias`` (n_{i+1},) = b^(i+1).
RNN (notes 000, 002, 003):        ``rnn.weight_ih_l0`` (H, I) = U,  ``rnn.weight_hh_l0`` (H, H) = W,
                                  ``rnn.bias_ih_l0 + rnn.bias_hh_l0`` = b_a,
                                  ``out.weight`` (C, H) = V,  ``out.bias`` (C,) = b_y.
GRU (note 001, Cho et al. form):  ``rnn.weight_ih_l0`` (3H, I) rows [W_xr; W_xz; W_xh],
                                  ``rnn.weight_hh_l0`` (3H, H) rows [W_hr; W_hz; W_hh],
                                  per-gate sums bias_ih_l0 + bias_hh_l0 = [b_r; b_z; b_h],
                                  ``out.weight`` = W_hc, ``out.bias`` = b_c.
A bias that enters only through the sum ``bias_ih + bias_hh`` gets the same gradient in both.

Losses are averaged over the batch (note 002: average the per-sample gradients of a mini-batch).
For sequences ``L = sum_t w_t L_t`` with per-step weights ``w`` (note 000's open question,
e.g. w = (0.1, 0.1, 0.8)); ``L_t`` is the batch-mean cross-entropy of ``softmax(logits_t)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["MLPResult", "ManualResult", "mlp_forward_backward", "rnn_forward_backward",
           "gru_forward_backward"]


class MLPResult(NamedTuple):
    """``(loss, grads)``; unpacks like a plain tuple."""
    loss: float
    grads: dict


@dataclass(frozen=True)
class ManualResult:
    """Result of a recurrent reference pass.

    loss:       L = sum_t w_t L_t (float).
    grads:      name -> dL/dparam, same keys and shapes as ``params``.
    dL_dh:      (T, B, H), the TOTAL error dL/dh_t at each step, paths through later steps included.
    hidden:     (T, B, H), the hidden states h_1 .. h_T.
    step_grads: name -> (T, *param.shape), the contribution of step t to each shared parameter
                (note 003 eq. 5: delta_t s_{t-1}^T); summing over t gives ``grads[name]``.
    """
    loss: float
    grads: dict
    dL_dh: np.ndarray
    hidden: np.ndarray
    step_grads: dict


# ----------------------------------------------------------------------------- small helpers
def _act(name, a):
    """f(a) for an activation name."""
    if name == "tanh":
        return np.tanh(a)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    if name == "relu":
        return np.maximum(a, 0.0)
    raise AssertionError(name)


def _act_prime(name, a, fa):
    """f'(a), from the input a or (cheaper for tanh/sigmoid) the output fa = f(a)."""
    if name == "tanh":
        return 1.0 - fa ** 2
    if name == "sigmoid":
        return fa * (1.0 - fa)
    if name == "relu":
        return (a > 0).astype(a.dtype)
    raise AssertionError(name)


def _softmax(c):
    """Row-wise softmax, max subtracted for stability."""
    e = np.exp(c - c.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(c):
    m = c.max(axis=-1, keepdims=True)
    return c - m - np.log(np.exp(c - m).sum(axis=-1, keepdims=True))


def _one_hot(y, n):
    out = np.zeros((y.shape[0], n))
    out[np.arange(y.shape[0]), y] = 1.0
    return out


def _check_choice(fn, what, value, choices):
    if value not in choices:
        raise ValueError(f"{fn}: {what} must be one of {choices}, got {value!r}")


def _check_params(fn, params, expected):
    """Exact keys, exact shapes; returns float64 copies."""
    missing = [k for k in expected if k not in params]
    if missing:
        raise ValueError(f"{fn}: missing parameter(s) {missing}; expected keys {list(expected)}")
    extra = [k for k in params if k not in expected]
    if extra:
        raise ValueError(f"{fn}: unexpected parameter(s) {extra}; expected keys {list(expected)}")
    out = {}
    for k, shape in expected.items():
        v = np.asarray(params[k], dtype=np.float64)
        if v.shape != shape:
            raise ValueError(f"{fn}: parameter {k!r} has shape {v.shape}, expected {shape}")
        out[k] = v
    return out


def _dim(fn, params, key, axis):
    """Size of one axis of a 2-D parameter, used to infer H, C or layer sizes."""
    if key not in params:
        raise ValueError(f"{fn}: missing parameter {key!r}; got keys {list(params)}")
    shape = np.shape(params[key])
    if len(shape) != 2:
        raise ValueError(f"{fn}: parameter {key!r} has shape {shape}, expected a 2-D matrix")
    return shape[axis]


def _check_targets(fn, y, shape, n_classes):
    y = np.asarray(y)
    if y.shape != shape:
        raise ValueError(f"{fn}: targets have shape {y.shape}, expected {shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{fn}: targets must be integer class indices, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{fn}: targets must lie in [0, {n_classes}), "
                         f"got range [{y.min()}, {y.max()}]")
    return y


# ----------------------------------------------------------------------------- MLP (notes 002, 004)
def mlp_forward_backward(params, x, y, *, activation="tanh", loss="mse", output_activation=None):
    """Loss and gradients of an MLP, by the four backprop equations of note 002.

    Hidden layers: z^(l) = a^(l-1) W^(l)^T + b^(l), a^(l) = f(z^(l)) with f = ``activation``.
    Output layer: a^(L) = g(z^(L)) with g = ``output_activation``; None means linear (a^(L) = z^(L),
    the nn MLP's convention), and then the notes' factor f'(z^(L)) is 1.
    "mse":           E = 1/2 ||y - a^(L)||^2 per sample, dE/da^(L) = -(y - a^(L))  (note 004).
    "cross_entropy": E = -log softmax(a^(L))[y], dE/da^(L) = softmax(a^(L)) - onehot(y)  (note 001).
    The loss is the batch mean of E. x: (B, n0); y: (B, nL) floats for "mse", (B,) ints for
    "cross_entropy". Returns ``MLPResult(loss, grads)``.
    """
    fn = "mlp_forward_backward"
    _check_choice(fn, "activation", activation, ("tanh", "sigmoid", "relu"))
    _check_choice(fn, "loss", loss, ("mse", "cross_entropy"))
    _check_choice(fn, "output_activation", output_activation, (None, "tanh", "sigmoid", "relu"))
    n_layers = 1
    while f"layers.{n_layers}.weight" in params:
        n_layers += 1
    sizes = [_dim(fn, params, "layers.0.weight", 1)]
    sizes += [_dim(fn, params, f"layers.{i}.weight", 0) for i in range(n_layers)]
    expected = {}
    for i in range(n_layers):
        expected[f"layers.{i}.weight"] = (sizes[i + 1], sizes[i])
        expected[f"layers.{i}.bias"] = (sizes[i + 1],)
    p = _check_params(fn, params, expected)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != sizes[0] or x.shape[0] == 0:
        raise ValueError(f"{fn}: x has shape {x.shape}, expected (B, {sizes[0]}) with B >= 1")
    B = x.shape[0]
    if loss == "mse":
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (B, sizes[-1]):
            raise ValueError(f"{fn}: y has shape {y.shape}, expected {(B, sizes[-1])} for 'mse'")
    else:
        y = _check_targets(fn, y, (B,), sizes[-1])

    # Forward: keep z^(l) and a^(l) for every layer; a[0] = x.
    acts = [activation] * (n_layers - 1) + [output_activation]
    zs, a = [], [x]
    for i in range(n_layers):
        zs.append(a[-1] @ p[f"layers.{i}.weight"].T + p[f"layers.{i}.bias"])
        a.append(zs[-1] if acts[i] is None else _act(acts[i], zs[-1]))

    # Loss and dE/da^(L) per sample (rows), divided by B for the batch mean.
    out = a[-1]
    if loss == "mse":
        value = 0.5 * np.sum((y - out) ** 2) / B
        dE_da = -(y - out) / B                                   # note 004: dL/da = -(y - a)
    else:
        value = -np.sum(_log_softmax(out)[np.arange(B), y]) / B
        dE_da = (_softmax(out) - _one_hot(y, sizes[-1])) / B     # note 001: y^ - y

    # Backward, note 002: delta^(L) = -(y - a^(L)) ⊙ f'(z^(L))
    delta = dE_da if acts[-1] is None else dE_da * _act_prime(acts[-1], zs[-1], a[-1])
    grads = {}
    for i in reversed(range(n_layers)):
        grads[f"layers.{i}.weight"] = delta.T @ a[i]             # dE/dW^(l) = delta^(l) a^(l-1)^T
        grads[f"layers.{i}.bias"] = delta.sum(axis=0)            # dE/db^(l) = delta^(l)
        if i > 0:                # delta^(l) = (W^(l+1)^T delta^(l+1)) ⊙ f'(z^(l))
            delta = (delta @ p[f"layers.{i}.weight"]) * _act_prime(acts[i - 1], zs[i - 1], a[i])
    return MLPResult(float(value), {k: grads[k] for k in expected})


# ----------------------------------------------------------------------------- recurrent helpers
def _check_sequence(fn, params, xs, targets, step_weights, h0, gates):
    """Validate a recurrent call; returns (p, xs, targets, w, h0) as float64 / int arrays."""
    H = _dim(fn, params, "rnn.weight_hh_l0", 1)
    C = _dim(fn, params, "out.weight", 0)
    xs = np.asarray(xs, dtype=np.float64)
    if xs.ndim != 3 or 0 in xs.shape:
        raise ValueError(f"{fn}: xs has shape {xs.shape}, expected (T, B, I) with T, B, I >= 1")
    T, B, I = xs.shape
    p = _check_params(fn, params, {
        "rnn.weight_ih_l0": (gates * H, I), "rnn.weight_hh_l0": (gates * H, H),
        "rnn.bias_ih_l0": (gates * H,), "rnn.bias_hh_l0": (gates * H,),
        "out.weight": (C, H), "out.bias": (C,)})
    if np.shape(targets)[:1] != (T,):
        raise ValueError(f"{fn}: xs has T={T} steps (shape {xs.shape}) but targets have shape "
                         f"{np.shape(targets)}; expected {(T, B)}")
    targets = _check_targets(fn, targets, (T, B), C)
    w = np.ones(T) if step_weights is None else np.asarray(step_weights, dtype=np.float64)
    if w.shape != (T,):
        raise ValueError(f"{fn}: step_weights has shape {w.shape}, expected ({T},), one per step")
    h0 = np.zeros((B, H)) if h0 is None else np.asarray(h0, dtype=np.float64)
    if h0.shape != (B, H):
        raise ValueError(f"{fn}: h0 has shape {h0.shape}, expected {(B, H)}")
    return p, xs, targets, w, h0


def _output_layer(p, hidden, targets, w):
    """logits_t = h_t V^T + b_y, y^_t = softmax(logits_t), L = sum_t w_t mean_b(-log y^_t[y_t]).

    Returns (L, g) with g[t] = dL/dlogits_t = w_t (y^_t - y_t) / B
    (note 001: dL_t/dC_t = y^_t - y_t).
    """
    T, B, _ = hidden.shape
    logits = hidden @ p["out.weight"].T + p["out.bias"]
    C = logits.shape[-1]
    loss, g = 0.0, np.empty_like(logits)
    for t in range(T):
        loss += w[t] * -np.mean(_log_softmax(logits[t])[np.arange(B), targets[t]])
        g[t] = w[t] * (_softmax(logits[t]) - _one_hot(targets[t], C)) / B
    return float(loss), g


def _finish(p, loss, g, hidden, dL_dh, step):
    """Add the output layer's per-step terms, sum every step_grads over t (note 000, note 003)."""
    step["out.weight"] = np.einsum("tbc,tbh->tch", g, hidden)   # dL_t/dV = (y^_t - y_t) ⊗ S_t
    step["out.bias"] = g.sum(axis=1)                            # dL_t/db_y = y^_t - y_t
    step = {k: step[k] for k in p}
    grads = {k: v.sum(axis=0) for k, v in step.items()}         # shared params: sum over steps
    return ManualResult(loss, grads, dL_dh, hidden, step)


# ----------------------------------------------------------------------------- RNN (000, 002, 003)
def rnn_forward_backward(params, xs, targets, *, step_weights=None, h0=None, nonlinearity="tanh"):
    """BPTT for S_t = f(x_t U^T + S_{t-1} W^T + b_a), y^_t = softmax(S_t V^T + b_y).

    f is tanh (notes) or relu. delta_t = dL/dnet_t is note 003's error term; the hidden error
    dL/dS_t gathers the direct path through y^_t and the path through S_{t+1} (note 000: S_2 reaches
    the loss by two paths, S_1 by three).
    """
    fn = "rnn_forward_backward"
    _check_choice(fn, "nonlinearity", nonlinearity, ("tanh", "relu"))
    p, xs, targets, w, S0 = _check_sequence(fn, params, xs, targets, step_weights, h0, gates=1)
    U, W = p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"]
    b_a = p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"]
    T, B, _ = xs.shape

    # Forward (note 000): net_t = U x_t + W S_{t-1} + b_a, S_t = f(net_t).
    net = np.empty((T, B, W.shape[0]))
    S = np.empty_like(net)
    for t in range(T):
        net[t] = xs[t] @ U.T + (S[t - 1] if t else S0) @ W.T + b_a
        S[t] = _act(nonlinearity, net[t])
    loss, g = _output_layer(p, S, targets, w)

    # Backward through time, t = T .. 1.
    dL_dS = np.empty_like(S)
    step = {k: np.empty((T,) + p[k].shape) for k in p}
    from_later = np.zeros((B, W.shape[0]))                    # dL/dS_t via S_{t+1}; 0 at t = T
    for t in reversed(range(T)):
        dL_dS[t] = g[t] @ p["out.weight"] + from_later         # direct path: V^T (y^_t - y_t)
        delta = dL_dS[t] * _act_prime(nonlinearity, net[t], S[t])  # delta_t = dL/dnet_t
        S_prev = S[t - 1] if t else S0
        step["rnn.weight_ih_l0"][t] = delta.T @ xs[t]          # note 003 eq. 8: delta_t x_t^T
        step["rnn.weight_hh_l0"][t] = delta.T @ S_prev         # note 003 eq. 5: delta_t s_{t-1}^T
        step["rnn.bias_ih_l0"][t] = step["rnn.bias_hh_l0"][t] = delta.sum(axis=0)  # dL/db_a
        from_later = delta @ W                   # note 003: delta_{t-1}^T = delta_t^T W diag f'
    return _finish(p, loss, g, S, dL_dS, step)


# ----------------------------------------------------------------------------- GRU (note 001)
def _split3(a):
    """Rows [0:H], [H:2H], [2H:3H] of a torch-stacked gate tensor (r, z, h~ / n)."""
    return np.split(a, 3, axis=0)


def gru_forward_backward(params, xs, targets, *, step_weights=None, h0=None, variant="notes"):
    """BPTT for the GRU of note 001 (``variant="notes"``, default) or torch.nn.GRU ("torch").

    notes: z = σ(h W_hz^T + x W_xz^T + b_z),  r = σ(h W_hr^T + x W_xr^T + b_r),
           h~ = tanh((r*h) W_hh^T + x W_xh^T + b_h),  h_t = (1 - z)*h_{t-1} + z*h~.
    torch: r, z as above (separate b_ih, b_hh), n = tanh(x W_in^T + b_in + r*(h W_hn^T + b_hn)),
           h_t = (1 - z)*n + z*h_{t-1}; here bias_ih and bias_hh differ in their n rows.
    Note 001: from h_t back to h_{t-1} there are 4 paths (through (1-z)*h, through z, through h~,
    through r inside h~); the backward below adds exactly those four terms.
    """
    fn = "gru_forward_backward"
    _check_choice(fn, "variant", variant, ("notes", "torch"))
    p, xs, targets, w, h_init = _check_sequence(fn, params, xs, targets, step_weights, h0, gates=3)
    W_xr, W_xz, W_xh = _split3(p["rnn.weight_ih_l0"])
    W_hr, W_hz, W_hh = _split3(p["rnn.weight_hh_l0"])
    bi_r, bi_z, bi_h = _split3(p["rnn.bias_ih_l0"])
    bh_r, bh_z, bh_h = _split3(p["rnn.bias_hh_l0"])
    T, B, _ = xs.shape
    H = W_hh.shape[0]

    # Forward; keep the gates of every step for the backward pass.
    h = np.empty((T, B, H))
    z, r, h_cand, hn = (np.empty((T, B, H)) for _ in range(4))
    for t in range(T):
        x, h_prev = xs[t], (h[t - 1] if t else h_init)
        z[t] = _act("sigmoid", h_prev @ W_hz.T + x @ W_xz.T + bi_z + bh_z)   # z~ -> z
        r[t] = _act("sigmoid", h_prev @ W_hr.T + x @ W_xr.T + bi_r + bh_r)   # r~ -> r
        if variant == "notes":
            h_cand[t] = np.tanh((r[t] * h_prev) @ W_hh.T + x @ W_xh.T + bi_h + bh_h)   # h~
            h[t] = (1 - z[t]) * h_prev + z[t] * h_cand[t]
        else:
            hn[t] = h_prev @ W_hh.T + bh_h                                   # W_hn h + b_hn
            h_cand[t] = np.tanh(x @ W_xh.T + bi_h + r[t] * hn[t])            # n
            h[t] = (1 - z[t]) * h_cand[t] + z[t] * h_prev
    loss, g = _output_layer(p, h, targets, w)

    # Backward through time.
    dL_dh = np.empty_like(h)
    step = {k: np.empty((T,) + p[k].shape) for k in p}
    from_later = np.zeros((B, H))
    for t in reversed(range(T)):
        x, h_prev = xs[t], (h[t - 1] if t else h_init)
        dh = dL_dh[t] = g[t] @ p["out.weight"] + from_later   # W_hc^T (y^_t - y_t) + later steps
        if variant == "notes":
            d_z = dh * (h_cand[t] - h_prev)                   # dh_t/dz = h~ - h_{t-1}
            d_cand = dh * z[t]                                # dh_t/dh~ = z
            d_a = d_cand * (1 - h_cand[t] ** 2)               # through tanh
            d_rh = d_a @ W_hh                                 # dL/d(r*h)
            d_r = d_rh * h_prev
            d_a_hh, hh_in = d_a, r[t] * h_prev                # W_hh sees r*h_{t-1}
        else:
            d_z = dh * (h_prev - h_cand[t])
            d_cand = dh * (1 - z[t])
            d_a = d_cand * (1 - h_cand[t] ** 2)
            d_r = d_a * hn[t]
            d_a_hh, hh_in = d_a * r[t], h_prev                # W_hn sees h_{t-1}, scaled by r
        d_zt = d_z * z[t] * (1 - z[t])                        # dL/dz~ (sigmoid')
        d_rt = d_r * r[t] * (1 - r[t])                        # dL/dr~
        # The four paths of note 001 from h_t to h_{t-1}:
        from_later = dh * (1 - z[t] if variant == "notes" else z[t])   # 1. direct (gated copy)
        from_later = from_later + d_zt @ W_hz                           # 2. through z
        if variant == "notes":
            from_later = from_later + d_rh * r[t]                       # 3. through h~
        else:
            from_later = from_later + d_a_hh @ W_hh                     # 3. through n
        from_later = from_later + d_rt @ W_hr                           # 4. through r
        step["rnn.weight_ih_l0"][t] = np.vstack([d_rt.T @ x, d_zt.T @ x, d_a.T @ x])
        step["rnn.weight_hh_l0"][t] = np.vstack([d_rt.T @ h_prev, d_zt.T @ h_prev,
                                                 d_a_hh.T @ hh_in])
        gate_sums = [d_rt.sum(axis=0), d_zt.sum(axis=0)]
        step["rnn.bias_ih_l0"][t] = np.concatenate(gate_sums + [d_a.sum(axis=0)])
        step["rnn.bias_hh_l0"][t] = np.concatenate(gate_sums + [d_a_hh.sum(axis=0)])
    return _finish(p, loss, g, h, dL_dh, step)
