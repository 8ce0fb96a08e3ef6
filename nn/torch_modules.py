"""torch.nn modules for the models of this library that torch has no exact counterpart of.

Imported only by `nn.to_torch` / `nn.from_torch` (this module imports torch; `import nn` does
not). Parameter names, shapes and order are this library's (which are torch's), so a
state_dict moves unchanged between the two sides:

- `NotesGRU`: note 001's GRU (`nn.GRU(variant="notes")`) over torch.nn.GRU's stacked weights
  (r, z, n; one bias per gate is `bias_ih + bias_hh`).
- `MLP`: `nn.MLP`, keys `layers.{i}.weight` / `layers.{i}.bias`.
- `RecurrentClassifier`: `nn.RecurrentClassifier`; `forward` returns (logits, hidden states,
  final state) and `loss` is `sequence_cross_entropy`, as here.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn as tnn

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


class NotesGRU(tnn.Module):
    """Note 001:  r = σ(W_hr h + W_xr x + b_r),  z = σ(W_hz h + W_xz x + b_z),
    h~ = tanh(W_hh (r * h) + W_xh x + b_h),  h_t = (1 - z) * h_{t-1} + z * h~,
    with torch.nn.GRU's arguments, parameters and return value (output, h_n)."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        kw = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            size = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}",
                                    tnn.Parameter(torch.empty(3 * hidden_size, size, **kw)))
            self.register_parameter(f"weight_hh_l{k}",
                                    tnn.Parameter(torch.empty(3 * hidden_size, hidden_size,
                                                              **kw)))
            if self.bias:
                self.register_parameter(f"bias_ih_l{k}",
                                        tnn.Parameter(torch.empty(3 * hidden_size, **kw)))
                self.register_parameter(f"bias_hh_l{k}",
                                        tnn.Parameter(torch.empty(3 * hidden_size, **kw)))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            tnn.init.uniform_(p, -bound, bound)

    def _layer(self, x, h, k):
        """One layer over x (T, B, I) from state h (B, H): (outputs (T, B, H), h_T)."""
        hsize = self.hidden_size
        w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
        b = getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}") if self.bias \
            else None
        proj = F.linear(x, w_ih, b)  # every step's input side at once
        w_rz, w_n = w_hh[:2 * hsize], w_hh[2 * hsize:]
        outs = []
        for p in proj.unbind(0):
            rz = torch.sigmoid(p[:, :2 * hsize] + F.linear(h, w_rz))
            r, z = rz[:, :hsize], rz[:, hsize:]
            h_tilde = torch.tanh(p[:, 2 * hsize:] + F.linear(r * h, w_n))
            h = (1 - z) * h + z * h_tilde
            outs.append(h)
        return torch.stack(outs, 0), h

    def forward(self, input, hx=None):
        unbatched = input.dim() == 2
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(f"NotesGRU: expected input of shape (T, B, {self.input_size}) (or "
                             f"(T, {self.input_size}) unbatched), got {tuple(input.shape)}")
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first
                                                   else input)
        shape = (self.num_layers, x.shape[1], self.hidden_size)
        if hx is None:
            hx = x.new_zeros(shape)
        elif unbatched and hx.dim() == 2:
            hx = hx.unsqueeze(1)
        if tuple(hx.shape) != shape:
            raise ValueError(f"NotesGRU: initial state must have shape {shape}, got "
                             f"{tuple(hx.shape)}")
        finals = []
        for k in range(self.num_layers):
            x, h = self._layer(x, hx[k], k)
            finals.append(h)
        h_n = torch.stack(finals, 0)
        if unbatched:
            return x.squeeze(1), h_n.squeeze(1)
        return (x.transpose(0, 1) if self.batch_first else x), h_n

    def extra_repr(self):
        extra = f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        extra += ", bias=False" if not self.bias else ""
        extra += ", batch_first=True" if self.batch_first else ""
        return f"{self.input_size}, {self.hidden_size}{extra}"


class MLP(tnn.Module):
    """Linear layers with `activation` after every one but the last."""

    def __init__(self, sizes, activation="tanh", device=None, dtype=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; choose one of "
                             f"{', '.join(ACTIVATIONS)}")
        self.sizes, self.activation = list(sizes), activation
        self.layers = tnn.ModuleList(tnn.Linear(a, b, device=device, dtype=dtype)
                                     for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        f, last = ACTIVATIONS[self.activation], len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = f(x)
        return x

    def extra_repr(self):
        return f"sizes={self.sizes}, activation={self.activation!r}"


def recurrent_layer(cell, input_size, hidden_size, variant="notes", device=None, dtype=None,
                    **kwargs):
    """torch's own RNN / LSTM / GRU, or NotesGRU for the notes' GRU."""
    kw = dict(kwargs, device=device, dtype=dtype)
    if cell == "rnn":
        return tnn.RNN(input_size, hidden_size, **kw)
    if cell == "lstm":
        return tnn.LSTM(input_size, hidden_size, **kw)
    if cell == "gru":
        return tnn.GRU(input_size, hidden_size, **kw) if variant == "torch" else \
            NotesGRU(input_size, hidden_size, **kw)
    raise ValueError(f"unknown cell {cell!r}; choose one of rnn, gru, lstm")


class RecurrentClassifier(tnn.Module):
    """h_t = cell(x_t, h_{t-1});  C_t = V h_t + b. Parameters `rnn.*` and `out.*`."""

    def __init__(self, input_size, hidden_size, num_classes, cell="rnn", device=None,
                 dtype=None, **layer_kwargs):
        super().__init__()
        self.cell = cell
        self.rnn = recurrent_layer(cell, input_size, hidden_size, device=device, dtype=dtype,
                                   **layer_kwargs)
        self.out = tnn.Linear(hidden_size, num_classes, device=device, dtype=dtype)

    def forward(self, xs, h0=None):
        """xs (T, B, input_size) -> (logits (T, B, num_classes), hidden states, final state)."""
        hidden, final = self.rnn(xs, h0)
        return self.out(hidden), hidden, final

    def loss(self, xs, targets, step_weights=None, h0=None):
        """L = sum_t w_t L_t, L_t the batch-mean cross-entropy at step t (w_t = 1 by
        default). Logits must be (T, B, C) and targets (T, B) class indices."""
        logits, _, _ = self(xs, h0)
        if logits.dim() != 3:
            raise ValueError(f"RecurrentClassifier.loss: logits must be (T, B, C), got "
                             f"{tuple(logits.shape)}")
        targets = torch.as_tensor(targets, device=logits.device).long()
        steps, batch, classes = logits.shape
        per_step = F.cross_entropy(logits.reshape(-1, classes), targets.reshape(-1),
                                   reduction="none").reshape(steps, batch).mean(1)
        if step_weights is None:
            return per_step.sum()
        w = torch.as_tensor(step_weights, dtype=logits.dtype, device=logits.device)
        if tuple(w.shape) != (steps,):
            raise ValueError(f"RecurrentClassifier.loss: step_weights must have shape "
                             f"({steps},) (one per time step), got {tuple(w.shape)}")
        return (per_step * w).sum()
