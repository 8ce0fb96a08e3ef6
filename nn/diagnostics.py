"""Gradient flow over time (note 003): how large dL/dh_t is at each step, read from the graph
the engine records (the engine's own backward; nothing here is a hand-written derivative)."""
import numpy as np

import autograd_core as ag

def step_states(output):
    """The per-step hidden states h_1..h_T behind a recurrent layer's `output` (the tensor the
    layer stacked them into), in time order."""
    t = output
    while t.op is not None and t.op.view:
        t = t.inputs[0]
    if t.op is None or t.op.name != "stack":
        raise ValueError("step_states: expected the output of a recurrent layer (a stack of "
                         "per-step states recorded with grad); got a tensor made by "
                         f"{t.op.name if t.op else 'no op'}")
    return list(t.inputs)


def state_list(hidden_states, where):
    """The per-step states h_1..h_T: a list as given, or those behind a recurrent layer's
    output; each checked to be a Tensor (errors start with `where`)."""
    if isinstance(hidden_states, ag.Tensor):
        return step_states(hidden_states)
    states = list(hidden_states)
    if not states:
        raise ValueError(f"{where}: hidden_states is empty; pass h_1..h_T (or the recurrent "
                         f"layer's output)")
    for i, h in enumerate(states):
        if not isinstance(h, ag.Tensor):
            raise TypeError(f"{where}: hidden state {i} must be a Tensor, got "
                            f"{type(h).__name__}")
    return states


def gradient_flow(model, inputs, targets, step_weights=None, h0=None):
    """Norm of dL/dh_t for every time step t, for a `RecurrentClassifier` (or any model whose
    call returns (logits, hidden states, final state) and that has `.loss`-compatible
    outputs). `step_weights` as in `sequence_cross_entropy`; put the whole weight on the last
    step to watch only the backprop-through-time part decay or grow. Parameter `.grad`s are
    left untouched. Returns an array of shape (T,)."""
    from .losses import sequence_cross_entropy
    logits, hidden, _ = model(inputs, h0)
    return state_gradient_norms(sequence_cross_entropy(logits, targets, step_weights), hidden)


def state_gradient_norms(loss, output):
    """||dL/dh_t|| for the per-step states behind a recurrent layer's `output` (T,)."""
    grads = ag.grad(loss, step_states(output), allow_unused=True)
    return np.array([0.0 if g is None else float(np.linalg.norm(g.numpy())) for g in grads])


def decay_rate(norms):
    """The per-step factor r fitted to norms ~ C r^(T - t) (least squares on log norms): below
    1 the gradient vanishes going back in time, above 1 it explodes."""
    norms = np.asarray(norms, dtype=np.float64)
    keep = norms > 0
    if keep.sum() < 2:
        raise ValueError("decay_rate: need at least two non-zero norms")
    back = (len(norms) - 1 - np.arange(len(norms)))[keep]
    slope = np.polyfit(back, np.log(norms[keep]), 1)[0]
    return float(np.exp(slope))


def plot_gradient_flow(curves, path, title="Gradient norm per time step"):
    """Write a PNG of ||dL/dh_t|| against t, log scale, one line per model.
    `curves` maps a label to its norms. Needs matplotlib (`pip install matplotlib`)."""
    from .plots import log_plot
    return log_plot({label: (np.arange(1, len(n) + 1), n) for label, n in curves.items()},
                    path, "time step t", "||dL/dh_t||", title)
