"""The speed floor: lean hand-written numpy forward + backward of the benchmarked models.

`nn.manual` is the readable reference (float64, one step of the notes per line, extra outputs
for the tests and diagnostics). This module computes the same loss and gradients the way a
careful person would write them for speed, and is what the engine is timed against:

- the dtype follows the inputs (float32 stays float32, float64 stays float64);
- everything that does not depend on the recurrence is done for all time steps at once: the
  input projections (one matmul), the output layer and softmax cross-entropy (one matmul, one
  softmax over T*B rows), the derivative factors of the gates, and the weight gradients
  (one matmul each, summing over steps and batch together);
- the per-step loops write into preallocated (T, B, .) arrays with `out=` and in-place ops;
- only what the backward needs is kept, and only (loss, grads) is returned.

Functions take a model's `state_dict()` (the same parameter names as `nn.MLP` and
`nn.RecurrentClassifier`) and return `(loss, grads)` with `grads` keyed like the state dict:

    mlp_loss_grad(params, x, y)                 nn.MLP, tanh hidden layers, softmax CE, mean
    rnn_loss_grad(params, xs, targets, h0=None) RecurrentClassifier(cell="rnn"), tanh
    gru_loss_grad(params, xs, targets, h0=None) RecurrentClassifier(cell="gru"), note 001 form

For the sequence models L = sum_t mean_b CE(h_t V^T + b, y_t) (all step weights 1), as
`RecurrentClassifier.loss(xs, targets)`. `check_against_manual` holds the three to
`nn.manual` in float64 (relative error below 1e-10), so the floor computes the same thing.
"""
import numpy as np

__all__ = ["mlp_loss_grad", "rnn_loss_grad", "gru_loss_grad", "check_against_manual"]


def _arrays(params, names, dtype):
    return [np.asarray(params[n], dtype=dtype) for n in names]


def _softmax_ce_(logits, y, batch):
    """Loss sum(CE over rows) / batch, and dL/dlogits = (softmax - onehot) / batch written
    over `logits` (which is consumed)."""
    rows = np.arange(logits.shape[0])
    logits -= logits.max(axis=1, keepdims=True)
    picked = logits[rows, y].sum()
    np.exp(logits, out=logits)
    s = logits.sum(axis=1, keepdims=True)
    loss = (np.log(s).sum() - picked) / batch
    s *= batch
    logits /= s
    logits[rows, y] -= 1 / batch
    return float(loss), logits


def _sigmoid_(a):
    """In place: sigmoid(a) = (1 + tanh(a / 2)) / 2 (no overflow for any a)."""
    a *= 0.5
    np.tanh(a, out=a)
    a += 1
    a *= 0.5
    return a


# ---- MLP ----------------------------------------------------------------------------------
def mlp_loss_grad(params, x, y):
    """nn.MLP(sizes, activation="tanh") + cross_entropy(logits, y) (batch mean)."""
    n = 1
    while f"layers.{n}.weight" in params:
        n += 1
    dtype = np.result_type(x, params["layers.0.weight"])
    ws = _arrays(params, [f"layers.{i}.weight" for i in range(n)], dtype)
    bs = _arrays(params, [f"layers.{i}.bias" for i in range(n)], dtype)
    a = np.asarray(x, dtype=dtype)
    batch = a.shape[0]
    acts = [a]
    for i in range(n - 1):
        a = a @ ws[i].T
        a += bs[i]
        np.tanh(a, out=a)
        acts.append(a)
    logits = a @ ws[-1].T
    logits += bs[-1]
    loss, g = _softmax_ce_(logits, np.asarray(y), batch)
    grads = {}
    for i in reversed(range(n)):
        grads[f"layers.{i}.weight"] = g.T @ acts[i]
        grads[f"layers.{i}.bias"] = g.sum(axis=0)
        if i:
            g = g @ ws[i]                      # dL/da^(i)
            a = acts[i]
            d = a * a                          # tanh' = 1 - a^2
            np.subtract(1, d, out=d)
            g *= d
    return loss, {k: grads[k] for k in params}


# ---- recurrent: shared output layer --------------------------------------------------------
_RNN_KEYS = ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
             "out.weight", "out.bias")


def _output_layer(hs, targets, v, c, batch):
    """logits = h V^T + c over all T*B rows; returns loss, dL/dh (T*B, H), dV, dc."""
    logits = hs @ v.T
    logits += c
    loss, g = _softmax_ce_(logits, targets.reshape(-1), batch)
    return loss, g @ v, g.T @ hs, g.sum(axis=0)


def _setup(params, xs, h0, gates):
    dtype = np.result_type(xs, params["rnn.weight_ih_l0"])
    w_ih, w_hh, b_ih, b_hh, v, c = _arrays(params, _RNN_KEYS, dtype)
    xs = np.asarray(xs, dtype=dtype)
    steps, batch, size = xs.shape
    hidden = w_hh.shape[1]
    # hs[0] = h0, hs[t + 1] = h_t: the previous states of all steps are hs[:-1], no copy.
    hs = np.empty((steps + 1, batch, hidden), dtype=dtype)
    hs[0] = 0 if h0 is None else h0
    x2 = xs.reshape(steps * batch, size)
    proj = (x2 @ w_ih.T).reshape(steps, batch, gates * hidden)
    proj += b_ih + b_hh
    return dtype, w_hh, v, c, x2, hs, proj


# ---- RNN ----------------------------------------------------------------------------------
def rnn_loss_grad(params, xs, targets, h0=None):
    """h_t = tanh(x_t W_ih^T + h_{t-1} W_hh^T + b_ih + b_hh); L = sum_t mean_b CE_t."""
    dtype, w_hh, v, c, x2, hs, proj = _setup(params, xs, h0, 1)
    steps, batch, hidden = proj.shape
    w_hh_t = w_hh.T
    for t in range(steps):
        h = hs[t + 1]
        np.matmul(hs[t], w_hh_t, out=h)
        h += proj[t]
        np.tanh(h, out=h)

    n = steps * batch
    h_all = hs[1:].reshape(n, hidden)
    loss, dh, g_v, g_c = _output_layer(h_all, targets, v, c, batch)
    dh = dh.reshape(steps, batch, hidden)        # direct dL/dh_t; becomes delta_t in place
    fprime = hs[1:] * hs[1:]
    np.subtract(1, fprime, out=fprime)           # tanh' = 1 - h_t^2, all steps at once
    buf = np.empty((batch, hidden), dtype=dtype)
    dh[-1] *= fprime[-1]
    for t in range(steps - 2, -1, -1):           # delta_t = (dh_t + delta_{t+1} W_hh) * f'_t
        np.matmul(dh[t + 1], w_hh, out=buf)
        d = dh[t]
        d += buf
        d *= fprime[t]
    delta = dh.reshape(n, hidden)
    g_b = delta.sum(axis=0)
    return loss, {"rnn.weight_ih_l0": delta.T @ x2,
                  "rnn.weight_hh_l0": delta.T @ hs[:-1].reshape(n, hidden),
                  "rnn.bias_ih_l0": g_b, "rnn.bias_hh_l0": g_b.copy(),
                  "out.weight": g_v, "out.bias": g_c}


# ---- GRU (note 001) -----------------------------------------------------------------------
def gru_loss_grad(params, xs, targets, h0=None):
    """Note 001's GRU: r, z = σ(x W_x{r,z}^T + h W_h{r,z}^T + b), h~ = tanh(x W_xh^T +
    (r * h) W_hh^T + b_h), h_t = (1 - z) h_{t-1} + z h~; L = sum_t mean_b CE_t.
    Gates stacked (r, z, h~) as torch; each gate's bias is bias_ih + bias_hh."""
    dtype, w_hh, v, c, x2, hs, proj = _setup(params, xs, h0, 3)
    steps, batch, hidden = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    h2 = 2 * hidden
    w_rz, w_n = w_hh[:h2], w_hh[h2:]
    w_rz_t, w_n_t = w_rz.T, w_n.T
    rz = np.empty((steps, batch, h2), dtype=dtype)       # sigmoid gates (r, z)
    cand = np.empty((steps, batch, hidden), dtype=dtype)  # h~
    rh = np.empty((steps, batch, hidden), dtype=dtype)    # r * h_{t-1}
    for t in range(steps):
        h = hs[t]
        g = rz[t]
        np.matmul(h, w_rz_t, out=g)
        g += proj[t, :, :h2]
        _sigmoid_(g)
        np.multiply(g[:, :hidden], h, out=rh[t])
        n = cand[t]
        np.matmul(rh[t], w_n_t, out=n)
        n += proj[t, :, h2:]
        np.tanh(n, out=n)
        h_new = hs[t + 1]
        np.subtract(n, h, out=h_new)                     # h + z (h~ - h)
        h_new *= g[:, hidden:]
        h_new += h

    n_rows = steps * batch
    loss, dh_out, g_v, g_c = _output_layer(hs[1:].reshape(n_rows, hidden), targets, v, c,
                                           batch)
    dh_out = dh_out.reshape(steps, batch, hidden)
    # Derivative factors of every step at once (none depends on the backward recursion).
    h_prev = hs[:-1]
    r, z = rz[..., :hidden], rz[..., hidden:]
    one_minus_z = 1 - z
    f_cand = cand * cand                                  # dL/da = dh * z (1 - h~^2)
    np.subtract(1, f_cand, out=f_cand)
    f_cand *= z
    f_z = cand - h_prev                                   # dL/dz~ = dh (h~ - h) z (1 - z)
    f_z *= z
    f_z *= one_minus_z
    f_r = 1 - r                                           # dL/dr~ = d(r*h) h r (1 - r)
    f_r *= r
    f_r *= h_prev

    # Backward through time. d[t] holds (dL/dr~, dL/dz~, dL/da) of step t, stacked as the
    # gates are, so the weight and bias gradients are one matmul / sum over all steps.
    d = np.empty((steps, batch, 3 * hidden), dtype=dtype)
    dh = np.empty((batch, hidden), dtype=dtype)
    d_rh = np.empty((batch, hidden), dtype=dtype)
    later = np.zeros((batch, hidden), dtype=dtype)        # dL/dh_t through step t + 1
    tmp = np.empty((batch, hidden), dtype=dtype)
    for t in range(steps - 1, -1, -1):
        np.add(dh_out[t], later, out=dh)
        dt = d[t]
        d_a = dt[:, h2:]
        np.multiply(dh, f_cand[t], out=d_a)
        np.matmul(d_a, w_n, out=d_rh)                     # dL/d(r * h_{t-1})
        np.multiply(d_rh, f_r[t], out=dt[:, :hidden])
        np.multiply(dh, f_z[t], out=dt[:, hidden:h2])
        # the four paths of note 001 from h_t to h_{t-1}: through r and z (one matmul),
        # the gated copy (1 - z), and h~ (via r * h)
        np.matmul(dt[:, :h2], w_rz, out=later)
        np.multiply(dh, one_minus_z[t], out=tmp)
        later += tmp
        np.multiply(d_rh, r[t], out=tmp)
        later += tmp

    d2 = d.reshape(n_rows, 3 * hidden)
    g_hh = np.empty_like(w_hh)
    np.matmul(d2[:, :h2].T, h_prev.reshape(n_rows, hidden), out=g_hh[:h2])
    np.matmul(d2[:, h2:].T, rh.reshape(n_rows, hidden), out=g_hh[h2:])
    g_b = d2.sum(axis=0)
    return loss, {"rnn.weight_ih_l0": d2.T @ x2, "rnn.weight_hh_l0": g_hh,
                  "rnn.bias_ih_l0": g_b, "rnn.bias_hh_l0": g_b.copy(),
                  "out.weight": g_v, "out.bias": g_c}


# ---- the check against nn.manual ------------------------------------------------------------
def _compare(what, loss, grads, want_loss, want_grads, rtol):
    errors = [abs(loss - want_loss) / max(abs(want_loss), 1e-300)]
    if errors[0] > rtol:
        raise AssertionError(f"numpy_reference.{what}: loss {loss!r} != nn.manual's "
                             f"{want_loss!r}")
    if set(grads) != set(want_grads):
        raise AssertionError(f"numpy_reference.{what}: gradient keys {sorted(grads)} != "
                             f"nn.manual's {sorted(want_grads)}")
    for name, want in want_grads.items():
        got = grads[name]
        if got.shape != want.shape or got.dtype != np.float64:
            raise AssertionError(f"numpy_reference.{what}: {name} has shape {got.shape} "
                                 f"({got.dtype}), expected {want.shape} (float64)")
        err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)
        if not err <= rtol:
            raise AssertionError(f"numpy_reference.{what}: gradient of {name} differs from "
                                 f"nn.manual's by {err:.2e} (relative), more than {rtol:g}")
        errors.append(err)
    return max(errors)


def check_against_manual(models=("mlp", "rnn", "gru"), rtol=1e-10, seed=0):
    """Losses and gradients of the floor equal nn.manual's (float64, small random sizes,
    T = 1 included). Raises AssertionError otherwise; returns the worst relative error."""
    import nn
    from nn import manual

    rng = np.random.default_rng(seed)
    worst = 0.0
    if "mlp" in models:
        for sizes, batch in (([7, 9, 8, 5], 4), ([3, 4], 1)):
            model = nn.MLP(sizes, activation="tanh", rng=rng, dtype=np.float64)
            params = model.state_dict()
            x = rng.standard_normal((batch, sizes[0]))
            y = rng.integers(0, sizes[-1], batch)
            want = manual.mlp_forward_backward(params, x, y, activation="tanh",
                                               loss="cross_entropy")
            got = mlp_loss_grad(params, x, y)
            worst = max(worst, _compare("mlp_loss_grad", *got, *want, rtol))
    for cell, fn, ref in (("rnn", rnn_loss_grad, manual.rnn_forward_backward),
                          ("gru", gru_loss_grad, manual.gru_forward_backward)):
        if cell not in models:
            continue
        for steps, batch, size, hidden, classes in ((6, 3, 4, 5, 7), (1, 1, 2, 3, 2)):
            model = nn.RecurrentClassifier(size, hidden, classes, cell=cell, rng=rng,
                                           dtype=np.float64)
            params = model.state_dict()
            xs = rng.standard_normal((steps, batch, size))
            targets = rng.integers(0, classes, (steps, batch))
            h0 = rng.standard_normal((batch, hidden))
            for start in (None, h0):
                want = ref(params, xs, targets, h0=start)
                got = fn(params, xs, targets, h0=start)
                worst = max(worst, _compare(fn.__name__, *got, want.loss, want.grads, rtol))
    return worst
