"""Sequence models of the notes: a recurrent layer followed by an output layer per step."""
import numpy as np

from .layers import Linear
from .losses import sequence_cross_entropy
from .module import Module
from .recurrent import GRU, LSTM, RNN

CELLS = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


class RecurrentClassifier(Module):
    """h_t = cell(x_t, h_{t-1});  C_t = V h_t + b  (logits of y^_t = softmax(C_t)).

    Parameters `rnn.weight_ih_l0`, `rnn.weight_hh_l0`, `rnn.bias_ih_l0`, `rnn.bias_hh_l0`,
    `out.weight` (the notes' V / W_hc) and `out.bias` (b_y / b_c): the names the hand-derived
    reference in `nn.manual` takes. `cell` is "rnn", "gru" or "lstm"; extra keyword
    arguments go to the recurrent layer (nonlinearity, variant, num_layers, ...).
    """

    def __init__(self, input_size, hidden_size, num_classes, cell="rnn", rng=None,
                 dtype=np.float32, **layer_kwargs):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"RecurrentClassifier: unknown cell {cell!r}; choose one of "
                             f"{', '.join(CELLS)}")
        from .init import get_rng
        rng = get_rng(rng)
        self.cell = cell
        self.rnn = CELLS[cell](input_size, hidden_size, rng=rng, dtype=dtype, **layer_kwargs)
        self.out = Linear(hidden_size, num_classes, rng=rng, dtype=dtype)

    def forward(self, xs, h0=None):
        """xs (T, B, input_size) -> (logits (T, B, num_classes), hidden states (T, B, H),
        final state)."""
        hidden, final = self.rnn(xs, h0)
        logits = self.out(hidden)
        logits.name = "y"  # the notes' y_t, one per step in the notes-level drawing
        return logits, hidden, final

    def loss(self, xs, targets, step_weights=None, h0=None):
        """L = sum_t w_t L_t (see `sequence_cross_entropy`)."""
        logits, _, _ = self(xs, h0)
        return sequence_cross_entropy(logits, targets, step_weights)
