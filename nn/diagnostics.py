"""Gradient flow over time (note 003): how large dL/dh_t is at each step, read from the graph
the engine records (the engine's own backward; nothing here is a hand-written derivative)."""
import numpy as np

import autograd_core as ag

_VIEWS = ("swapaxes", "transpose", "getitem", "reshape")


def step_states(output):
    """The per-step hidden states h_1..h_T behind a recurrent layer's `output` (the tensor the
    layer stacked them into), in time order."""
    t = output
    while t._op is not None and t._op.name in _VIEWS and t._inputs:
        t = t._inputs[0]
    if t._op is None or t._op.name != "stack" or not t._inputs:
        raise ValueError("step_states: expected the output of a recurrent layer (a stack of "
                         "per-step states recorded with grad); got a tensor made by "
                         f"{t._op.name if t._op else 'no op'}")
    return list(t._inputs)


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
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_gradient_flow needs matplotlib: pip install matplotlib (or "
                          "pip install -e '.[plots]')") from None
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, norms in curves.items():
        norms = np.asarray(norms, dtype=np.float64)
        ax.plot(np.arange(1, len(norms) + 1), np.where(norms > 0, norms, np.nan), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dL/dh_t||")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
