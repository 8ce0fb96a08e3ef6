"""Hand-written backward passes, as a learner would write them, for testing `nn.check_backward`.

Written here from the equations of the notes, independently of `nn.manual`, in numpy only.
Each can carry one deliberate slip (a keyword argument), so the tests can check that the report
pins it where it is:
  local_slip_at=k       the local derivative at step k forgotten (tanh' of the RNN, of the GRU's
                        candidate n / h~, of the LSTM's g)
  recursion_slip_at=k   the error sent from step k+1 back to h_k is wrong (k < T)
  direct_slip_at=k      dL/dh_k leaves out the output layer's term V^T g_k
  weight_slip_at=k      the output error at step k forgets the step weight w_k
Parameters are the state_dict names; row convention x_t (B, I), h_t (B, H).
"""
import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def softmax(c):
    e = np.exp(c - c.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def one_hot(y, n):
    return np.eye(n)[y]


# ---- cells: forward keeps what backward needs; backward returns the four parameter terms ----
class RNNCell:
    def __init__(self, nonlinearity="tanh"):
        self.relu = nonlinearity == "relu"

    def forward(self, p, x, h, c):
        net = x @ p["rnn.weight_ih_l0"].T + h @ p["rnn.weight_hh_l0"].T
        net = net + p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"]
        h_new = np.maximum(net, 0.0) if self.relu else np.tanh(net)
        return h_new, c, (x, h, net, h_new)

    def backward(self, p, cache, dh, dc, forget_derivative, bad_recursion):
        x, h, net, h_new = cache
        slope = (net > 0).astype(float) if self.relu else 1.0 - h_new ** 2
        delta = dh if forget_derivative else dh * slope
        w = p["rnn.weight_hh_l0"]
        dh_prev = delta @ (w.T if bad_recursion else w)
        s = delta.sum(axis=0)
        return (delta.T @ x, delta.T @ h, s, s), dh_prev, dc


class GRUNotesCell:
    """r = σ(.), z = σ(.), n = tanh(x W_in^T + (r h) W_hn^T + b_n), h' = (1 - z) h + z n."""

    def forward(self, p, x, h, c):
        W_ir, W_iz, W_in = np.split(p["rnn.weight_ih_l0"], 3)
        W_hr, W_hz, W_hn = np.split(p["rnn.weight_hh_l0"], 3)
        b_r, b_z, b_n = np.split(p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"], 3)
        r = sigmoid(x @ W_ir.T + h @ W_hr.T + b_r)
        z = sigmoid(x @ W_iz.T + h @ W_hz.T + b_z)
        n = np.tanh(x @ W_in.T + (r * h) @ W_hn.T + b_n)
        return (1 - z) * h + z * n, c, (x, h, r, z, n)

    def backward(self, p, cache, dh, dc, forget_derivative, bad_recursion):
        x, h, r, z, n = cache
        W_hr, W_hz, W_hn = np.split(p["rnn.weight_hh_l0"], 3)
        dn, dz = dh * z, dh * (n - h)
        da_n = dn if forget_derivative else dn * (1 - n ** 2)
        d_rh = da_n @ W_hn
        da_r = d_rh * h * r * (1 - r)
        da_z = dz * z * (1 - z)
        # four paths back to h: the (1 - z) copy, through n, through r, through z
        dh_prev = d_rh * r + da_r @ W_hr + da_z @ W_hz
        if not bad_recursion:  # the slip: the gated copy (1 - z) h forgotten
            dh_prev = dh_prev + dh * (1 - z)
        d_in = np.hstack([da_r, da_z, da_n])
        g_ih = d_in.T @ x
        g_hh = np.vstack([da_r.T @ h, da_z.T @ h, da_n.T @ (r * h)])
        s = d_in.sum(axis=0)
        return (g_ih, g_hh, s, s), dh_prev, dc


class GRUTorchCell:
    """gi = x W_ih^T + b_ih, gh = h W_hh^T + b_hh, r, z = σ(gi + gh), n = tanh(gi_n + r gh_n),
    h' = (1 - z) n + z h."""

    def forward(self, p, x, h, c):
        gi = x @ p["rnn.weight_ih_l0"].T + p["rnn.bias_ih_l0"]
        gh = h @ p["rnn.weight_hh_l0"].T + p["rnn.bias_hh_l0"]
        H = h.shape[1]
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h, c, (x, h, r, z, n, gh[:, 2 * H:])

    def backward(self, p, cache, dh, dc, forget_derivative, bad_recursion):
        x, h, r, z, n, gh_n = cache
        dn, dz = dh * (1 - z), dh * (h - n)
        da_n = dn if forget_derivative else dn * (1 - n ** 2)
        da_r = da_n * gh_n * r * (1 - r)
        da_z = dz * z * (1 - z)
        d_gi = np.hstack([da_r, da_z, da_n])
        d_gh = np.hstack([da_r, da_z, da_n * r])
        dh_prev = d_gh @ p["rnn.weight_hh_l0"]
        if not bad_recursion:  # the slip: the z h copy forgotten
            dh_prev = dh_prev + dh * z
        return (d_gi.T @ x, d_gh.T @ h, d_gi.sum(axis=0), d_gh.sum(axis=0)), dh_prev, dc


class LSTMCell:
    """i, f, o = σ(.), g = tanh(.), c' = f c + i g, h' = o tanh(c')."""

    def forward(self, p, x, h, c):
        a = x @ p["rnn.weight_ih_l0"].T + h @ p["rnn.weight_hh_l0"].T
        a = a + p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"]
        a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
        c_new = f * c + i * g
        return o * np.tanh(c_new), c_new, (x, h, c, i, f, g, o, c_new)

    def backward(self, p, cache, dh, dc, forget_derivative, bad_recursion):
        x, h, c, i, f, g, o, c_new = cache
        tc = np.tanh(c_new)
        dc = dc + dh * o * (1 - tc ** 2)
        da_i = dc * g * i * (1 - i)
        da_f = dc * c * f * (1 - f)
        da_g = dc * i if forget_derivative else dc * i * (1 - g ** 2)
        da_o = dh * tc * o * (1 - o)
        d_a = np.hstack([da_i, da_f, da_g, da_o])
        sent = np.hstack([da_i, da_f, da_g, 0 * da_o]) if bad_recursion else d_a
        s = d_a.sum(axis=0)
        return (d_a.T @ x, d_a.T @ h, s, s), sent @ p["rnn.weight_hh_l0"], dc * f


CELLS = {"rnn": RNNCell, "rnn-relu": lambda: RNNCell("relu"), "gru": GRUNotesCell,
         "gru-torch": GRUTorchCell, "lstm": LSTMCell}
NAMES = ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0")


def recurrent_backward(kind, params, xs, targets, w, *, per_step=True, dh=True,
                       local_slip_at=None, recursion_slip_at=None, direct_slip_at=None,
                       weight_slip_at=None):
    """BPTT of L = sum_t w_t mean_b CE(h_t V^T + b_y, y_t): whole gradients, and optionally
    each step's terms ("per_step") and dL/dh_t ("dh"). Slips count steps 1..T."""
    cell = CELLS[kind]()
    T, B, _ = xs.shape
    H = params["rnn.weight_hh_l0"].shape[1]
    V, b_y = params["out.weight"], params["out.bias"]
    h, c, caches, hs = np.zeros((B, H)), np.zeros((B, H)), [], []
    for t in range(T):
        h, c, cache = cell.forward(params, xs[t], h, c)
        caches.append(cache)
        hs.append(h)

    steps = {name: [None] * T for name in params}
    errors = [None] * T
    from_later, dc = np.zeros((B, H)), np.zeros((B, H))
    for t in reversed(range(T)):
        weight = 1.0 if weight_slip_at == t + 1 else w[t]
        g = weight * (softmax(hs[t] @ V.T + b_y) - one_hot(targets[t], V.shape[0])) / B
        steps["out.weight"][t], steps["out.bias"][t] = g.T @ hs[t], g.sum(axis=0)
        errors[t] = from_later if direct_slip_at == t + 1 else g @ V + from_later
        terms, from_later, dc = cell.backward(params, caches[t], errors[t], dc,
                                              local_slip_at == t + 1, recursion_slip_at == t)
        for name, term in zip(NAMES, terms):
            steps[name][t] = term

    result = {name: sum(terms) for name, terms in steps.items()}
    if per_step:
        result["per_step"] = steps
    if dh:
        result["dh"] = errors
    return result


def student(kind, **slips):
    """`backward(params, xs, targets, step_weights)` for `kind`, with `slips`."""
    def backward(params, xs, targets, step_weights):
        return recurrent_backward(kind, params, xs, targets, step_weights, **slips)
    return backward


# ---- MLP (notes 002, 004) ---------------------------------------------------------------------
def mlp_backward(params, x, y, step_weights, *, activation="tanh", delta=True,
                 recursion_slip_at=None, outer_slip_at=None, output_slip=False):
    """The four equations of note 002 for a linear-output MLP; E = 1/2 ||y - a||^2 (float y)
    or the cross-entropy (integer y), averaged over the batch. Slips count layers 1..L:
    recursion_slip_at=l forgets f'(z^(l)); outer_slip_at=l (l >= 2) uses z^(l-1) in place of
    a^(l-1); output_slip flips the sign of the MSE's output error."""
    assert step_weights is None
    layers = len([k for k in params if k.endswith(".weight")])
    f = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0)}[activation]
    a, zs = [x], []
    for i in range(layers):
        zs.append(a[-1] @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"])
        a.append(f(zs[-1]) if i < layers - 1 else zs[-1])
    B = x.shape[0]
    if np.issubdtype(np.asarray(y).dtype, np.integer):
        d = (softmax(a[-1]) - one_hot(y, a[-1].shape[1])) / B
    else:
        d = ((y - a[-1]) if output_slip else -(y - a[-1])) / B
    deltas, result = [None] * layers, {}
    for i in reversed(range(layers)):
        deltas[i] = d
        below = zs[i - 1] if outer_slip_at == i + 1 else a[i]
        result[f"layers.{i}.weight"] = d.T @ below
        result[f"layers.{i}.bias"] = d.sum(axis=0)
        if i > 0:
            d = d @ params[f"layers.{i}.weight"]
            if recursion_slip_at != i:
                d = d * ((1 - a[i] ** 2) if activation == "tanh" else (zs[i - 1] > 0))
    if delta:
        result["delta"] = deltas
    return result


def mlp_student(**options):
    def backward(params, x, y, step_weights):
        return mlp_backward(params, x, y, step_weights, **options)
    return backward
