"""Recurrent layers as plain forward code: the engine does backprop-through-time.

RNN (the notes' vanilla RNN), GRU (note 001's form by default, `variant="torch"` for
torch.nn.GRU's) and LSTM, with torch.nn's parameter names, shapes and gate stacking:
`weight_ih_l{k}` (G*H, I), `weight_hh_l{k}` (G*H, H), `bias_ih_l{k}`, `bias_hh_l{k}`, gates
stacked (r, z, n) for GRU (n is the notes' h~) and (i, f, g, o) for LSTM. Where the notes have
one bias per gate it is `bias_ih + bias_hh`.

The input projections of all time steps are one matmul before the loop over time; only the
hidden-to-hidden products run per step. Each step runs inside `ag.step_scope(t)` and names its
gates and state as the notes do (r, z, h~, h; i, f, g, o, c, h), for graph export, path
counting and the BPTT diagnostics.
"""
import math

import numpy as np

import autograd_core as ag

from .init import get_rng, uniform
from .layers import _check_sizes
from .module import Module, Parameter

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
GRU_VARIANTS = ("notes", "torch")


# ---- one time step of each cell ------------------------------------------------------------
def rnn_step(p, h, w_hh, act):
    """S_t = f(U x_t + W S_{t-1} + b)   (notes 000, 002); `p` holds U x_t + b."""
    return _named(act(ag.linear(h, w_hh, p)), "h")


def gru_step_notes(p_rz, p_n, h, w_rz, w_n, hidden):
    """Note 001:  r = σ(W_hr h + W_xr x + b_r),  z = σ(W_hz h + W_xz x + b_z),
    h~ = tanh(W_hh (r * h) + W_xh x + b_h),  h_t = (1 - z) * h_{t-1} + z * h~."""
    rz = ag.sigmoid(ag.linear(h, w_rz, p_rz))
    r, z = _named(rz[:, :hidden], "r"), _named(rz[:, hidden:], "z")
    h_tilde = _named(ag.tanh(ag.linear(r * h, w_n, p_n)), "h~")
    return _named((1 - z) * h + z * h_tilde, "h")


def gru_step_torch(p_rz, p_n, h, w_hh, b_hh, hidden):
    """torch.nn.GRU:  r, z = σ(W_i x + b_i + W_h h + b_h),  n = tanh(W_in x + b_in +
    r * (W_hn h + b_hn)),  h_t = (1 - z) * n + z * h_{t-1}."""
    gh = ag.linear(h, w_hh, b_hh)
    rz = ag.sigmoid(p_rz + gh[:, :2 * hidden])
    r, z = _named(rz[:, :hidden], "r"), _named(rz[:, hidden:], "z")
    n = _named(ag.tanh(p_n + r * gh[:, 2 * hidden:]), "n")
    return _named((1 - z) * n + z * h, "h")


def lstm_step(p, h, c, w_hh, hidden):
    """i, f, o = σ(.), g = tanh(.), c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)."""
    gates = ag.linear(h, w_hh, p)
    s = ag.sigmoid(gates)
    i, f = _named(s[:, :hidden], "i"), _named(s[:, hidden:2 * hidden], "f")
    o = _named(s[:, 3 * hidden:], "o")
    g = _named(ag.tanh(gates[:, 2 * hidden:3 * hidden]), "g")
    c = _named(f * c + i * g, "c")
    return _named(o * ag.tanh(c), "h"), c


def _named(t, name):
    """Name a gate or state as the notes do: graph export and path counting read it."""
    t.name = name
    return t


class _Recurrent(Module):
    """Shared set-up: parameters, the activation, the input-side projection."""

    def _make_params(self, suffix, in_size, rng, dtype):
        g, hsize = GATES[self.mode], self.hidden_size
        bound = 1 / math.sqrt(hsize)
        setattr(self, "weight_ih" + suffix, Parameter(uniform((g * hsize, in_size), bound, rng,
                                                              dtype)))
        setattr(self, "weight_hh" + suffix, Parameter(uniform((g * hsize, hsize), bound, rng,
                                                              dtype)))
        if self.bias:
            setattr(self, "bias_ih" + suffix, Parameter(uniform((g * hsize,), bound, rng, dtype)))
            setattr(self, "bias_hh" + suffix, Parameter(uniform((g * hsize,), bound, rng, dtype)))
        else:
            self.__dict__["bias_ih" + suffix] = self.__dict__["bias_hh" + suffix] = None

    def _setup(self, mode, input_size, hidden_size, bias, nonlinearity, variant):
        _check_sizes(type(self).__name__, input_size=input_size, hidden_size=hidden_size)
        if mode == "rnn" and nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"{type(self).__name__}: nonlinearity must be 'tanh' or 'relu', "
                             f"got {nonlinearity!r}")
        if mode == "gru" and variant not in GRU_VARIANTS:
            raise ValueError(f"{type(self).__name__}: variant must be one of {GRU_VARIANTS}, "
                             f"got {variant!r}")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.bias, self.nonlinearity, self.variant = bool(bias), nonlinearity, variant

    def _input_bias(self, b_ih, b_hh):
        """The bias added to the input projection: both biases, except torch's GRU keeps
        b_hn inside r * (W_hn h + b_hn)."""
        if b_ih is None:
            return None
        if self.mode == "gru" and self.variant == "torch":
            return b_ih
        return b_ih + b_hh

    def _run(self, x, h, c, w_ih, w_hh, b_in, b_hh):
        """Loop over the time steps of x (T, B, I); returns ([h_t], h_T, c_T)."""
        hsize, steps = self.hidden_size, x.shape[0]
        if self.mode != "gru":
            proj = _project(x, w_ih, b_in)
        outs = []
        if self.mode == "rnn":
            act = ag.tanh if self.nonlinearity == "tanh" else ag.relu
            for t in range(steps):
                with ag.step_scope(t):
                    h = rnn_step(proj[t], h, w_hh, act)
                outs.append(h)
        elif self.mode == "lstm":
            for t in range(steps):
                with ag.step_scope(t):
                    h, c = lstm_step(proj[t], h, c, w_hh, hsize)
                outs.append(h)
        else:
            # Two projections rather than slices of one: slicing a (T, B, 3H) array costs a
            # copy forward and a scatter backward.
            cut = 2 * hsize
            p_rz = _project(x, w_ih[:cut], None if b_in is None else b_in[:cut])
            p_n = _project(x, w_ih[cut:], None if b_in is None else b_in[cut:])
            if self.variant == "notes":
                w_rz, w_n = w_hh[:cut], w_hh[cut:]
                for t in range(steps):
                    with ag.step_scope(t):
                        h = gru_step_notes(p_rz[t], p_n[t], h, w_rz, w_n, hsize)
                    outs.append(h)
            else:
                for t in range(steps):
                    with ag.step_scope(t):
                        h = gru_step_torch(p_rz[t], p_n[t], h, w_hh, b_hh, hsize)
                    outs.append(h)
        return outs, h, c


def _project(x, w_ih, bias):
    """x (T, B, I) @ W_ih^T + bias for all steps at once, as one 2-D matmul."""
    steps, batch, size = x.shape
    flat = x.reshape(steps * batch, size)
    proj = ag.linear(flat, w_ih, bias)
    return proj.reshape(steps, batch, w_ih.shape[0])


class _Layer(_Recurrent):
    """RNN / GRU / LSTM over whole sequences, `num_layers` stacked."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, nonlinearity="tanh", variant="notes", rng=None,
                 dtype=np.float32):
        super().__init__()
        self._setup(mode, input_size, hidden_size, bias, nonlinearity, variant)
        _check_sizes(type(self).__name__, num_layers=num_layers)
        self.num_layers, self.batch_first = num_layers, bool(batch_first)
        rng = get_rng(rng)
        for k in range(num_layers):
            self._make_params(f"_l{k}", input_size if k == 0 else hidden_size, rng, dtype)
        # names built once: a new string per forward would stay in Python's method cache
        self.__dict__["_param_names"] = [
            tuple(f"{n}_l{k}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for k in range(num_layers)]

    def _layer_params(self, k):
        return [getattr(self, name) for name in self._param_names[k]]

    def _initial_state(self, state, batch, unbatched, dtype):
        name, shape = type(self).__name__, (self.num_layers, batch, self.hidden_size)
        if state is None:
            return ag.Tensor(np.zeros(shape, dtype=dtype))
        state = ag.as_tensor(state)
        if unbatched and state.ndim == 2:
            state = state[:, None]
        if state.shape != shape:
            want = (self.num_layers, self.hidden_size) if unbatched else shape
            raise ValueError(f"{name}: initial state must have shape {want}, got "
                             f"{tuple(state.shape)}")
        return state

    def forward(self, x, hx=None):
        """x: (T, B, input_size) ((B, T, input_size) with batch_first; (T, input_size)
        unbatched). hx: initial state (num_layers, B, H); for LSTM a pair (h0, c0). Returns
        (output, h_n), output (T, B, H) from the last layer; LSTM returns (output, (h_n, c_n))."""
        name = type(self).__name__
        x = ag.as_tensor(x)
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input of shape (T, B, {self.input_size}) (or "
                             f"(T, {self.input_size}) unbatched), got {tuple(x.shape)}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[:, None]
        elif self.batch_first:
            x = x.swapaxes(0, 1)
        batch = x.shape[1]
        if self.mode == "lstm":
            h0, c0 = _state_pair(name, hx)
            h0 = self._initial_state(h0, batch, unbatched, x.dtype)
            c0 = self._initial_state(c0, batch, unbatched, x.dtype)
        else:
            h0, c0 = self._initial_state(hx, batch, unbatched, x.dtype), None
        layer_in, h_finals, c_finals = x, [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_params(k)
            h_start, c_start = _start(h0, k, "h0"), None if c0 is None else _start(c0, k, "c0")
            outs, h, c = self._run(layer_in, h_start, c_start, w_ih, w_hh,
                                   self._input_bias(b_ih, b_hh), b_hh)
            layer_in = ag.stack(outs, axis=0)
            h_finals.append(h)
            c_finals.append(c)
        output, h_n = layer_in, ag.stack(h_finals, axis=0)
        c_n = ag.stack(c_finals, axis=0) if self.mode == "lstm" else None
        if unbatched:
            output, h_n = output[:, 0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        elif self.batch_first:
            output = output.swapaxes(0, 1)
        return (output, (h_n, c_n)) if self.mode == "lstm" else (output, h_n)

    def extra_repr(self):
        extra = f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        if self.mode == "rnn" and self.nonlinearity != "tanh":
            extra += f", nonlinearity={self.nonlinearity!r}"
        if self.mode == "gru":
            extra += f", variant={self.variant!r}"
        if self.batch_first:
            extra += ", batch_first=True"
        return f"{self.input_size}, {self.hidden_size}{extra}"


class RNN(_Layer):
    """The notes' vanilla RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, rng=None, dtype=np.float32):
        super().__init__("rnn", input_size, hidden_size, num_layers, bias, batch_first,
                         nonlinearity=nonlinearity, rng=rng, dtype=dtype)


class GRU(_Layer):
    """GRU in note 001's form (variant="notes", the default) or torch.nn.GRU's
    (variant="torch"); same parameter names and shapes either way."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 variant="notes", rng=None, dtype=np.float32):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first,
                         variant=variant, rng=rng, dtype=dtype)


class LSTM(_Layer):
    """LSTM as torch.nn.LSTM; returns (output, (h_n, c_n))."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 rng=None, dtype=np.float32):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         rng=rng, dtype=dtype)


class _Cell(_Recurrent):
    """One time step; parameters `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`."""

    def __init__(self, mode, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 variant="notes", rng=None, dtype=np.float32):
        super().__init__()
        self._setup(mode, input_size, hidden_size, bias, nonlinearity, variant)
        self._make_params("", input_size, get_rng(rng), dtype)

    def _one_step(self, x, h, c):
        name = type(self).__name__
        x = ag.as_tensor(x)
        unbatched = x.ndim == 1
        if unbatched:
            x = x[None]
        if x.ndim != 2 or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input of shape (B, {self.input_size}), got "
                             f"{tuple(x.shape)}")
        shape = (x.shape[0], self.hidden_size)
        states = []
        for s in (h, c):
            s = ag.Tensor(np.zeros(shape, dtype=x.dtype)) if s is None else ag.as_tensor(s)
            s = s[None] if unbatched and s.ndim == 1 else s
            if s.shape != shape:
                raise ValueError(f"{name}: state must have shape {shape}, got {tuple(s.shape)}")
            states.append(s)
        outs, h, c = self._run(x[None], states[0], states[1], self.weight_ih, self.weight_hh,
                               self._input_bias(self.bias_ih, self.bias_hh), self.bias_hh)
        if unbatched:
            h, c = h[0], c[0]
        return h, c


class RNNCell(_Cell):
    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", rng=None,
                 dtype=np.float32):
        super().__init__("rnn", input_size, hidden_size, bias, nonlinearity=nonlinearity,
                         rng=rng, dtype=dtype)

    def forward(self, x, h=None):
        return self._one_step(x, h, None)[0]


class GRUCell(_Cell):
    def __init__(self, input_size, hidden_size, bias=True, variant="notes", rng=None,
                 dtype=np.float32):
        super().__init__("gru", input_size, hidden_size, bias, variant=variant, rng=rng,
                         dtype=dtype)

    def forward(self, x, h=None):
        return self._one_step(x, h, None)[0]


class LSTMCell(_Cell):
    def __init__(self, input_size, hidden_size, bias=True, rng=None, dtype=np.float32):
        super().__init__("lstm", input_size, hidden_size, bias, rng=rng, dtype=dtype)

    def forward(self, x, state=None):
        h, c = _state_pair(type(self).__name__, state)
        return self._one_step(x, h, c)


def _start(states, k, name):
    """Layer k's initial state, named as the notes' S_0 / h_0 / C_0 for the notes-level
    drawing (a fresh tensor: the caller's own is left as it is)."""
    state = states[k]
    state.name = name
    return state


def _state_pair(name, state):
    """An LSTM state: None or a pair (h, c)."""
    if state is None:
        return None, None
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"{name}: the state must be a pair (h0, c0), got "
                        f"{type(state).__name__}")
    return state
