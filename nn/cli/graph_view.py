"""`bptt graph`'s drawing and path counts: the view options, note 000's loss weights, and
note 001's comparison of GRU and LSTM backprop paths."""
import numpy as np

import autograd_core as ag

from ..models import RecurrentClassifier

VIEWS = ("notes", "ops", "rolled")
NOTE_000_WEIGHTS = (0.1, 0.1, 0.8)  # note 000's question: weight the late step more
ROLL_AFTER = 12  # longer sequences are drawn rolled ("x T") in the notes view
MAX_STEPS = 20_000  # beyond this even recording the graph takes more than a few seconds
GRU_NAMES = ["z", "r", "h~", "h"]
LSTM_NAMES = ["i", "f", "g", "o", "c", "h"]


def add_arguments(parser):
    parser.add_argument("--view", choices=VIEWS, default="notes",
                        help="notes: the notes' picture (x_t, S_t or gates, y_t, L_t per step, "
                             "shared parameters fanning into every step; rolled beyond "
                             f"{ROLL_AFTER} steps); ops: every op; rolled: one step, x T "
                             "(default notes)")


def check_steps(steps):
    """An error message for a sequence too long to record quickly, else None."""
    if steps > MAX_STEPS:
        return (f"--steps {steps} is more than {MAX_STEPS}; the graph of so long an unroll "
                f"takes minutes to record")
    return None


def build(model_kind, steps, seed):
    """(model, loss, hidden) of the small classifier the command draws: 2 inputs, 3 hidden
    units, 2 classes, one sample; note 000's weights when the sequence has 3 steps."""
    rng = np.random.default_rng(seed)
    model = RecurrentClassifier(2, 3, 2, cell=model_kind, rng=seed, dtype=np.float64)
    logits, hidden, _ = model(rng.standard_normal((steps, 1, 2)))
    weights = NOTE_000_WEIGHTS if steps == 3 else None
    loss = _loss(logits, rng.integers(0, 2, (steps, 1)), weights)
    return model, loss, hidden


def _loss(logits, targets, weights):
    from ..losses import sequence_cross_entropy
    return sequence_cross_entropy(logits, targets, step_weights=weights)


def view_for(view, steps):
    """The view actually drawn, and a line saying why if it differs."""
    if view == "notes" and steps > ROLL_AFTER:
        return "rolled", f"({steps} steps: drawn rolled, one step x T; --view ops for all)"
    return view, None


def draw(loss, path, model, view, fmt, show_grad):
    if view == "ops":
        return ag.render(loss, path, format=fmt, params=model, show_grad=show_grad)
    return ag.render(loss, path, format=fmt, params=model, show_grad=show_grad, view=view)


# ---- path counts --------------------------------------------------------------------------
def gru_lstm_table(depths=(1, 2, 3), seed=0):
    """Lines comparing, for k in `depths`, the backprop paths from the state at T back to
    the state at T-k of a recorded GRU (h) and LSTM ((h, C)), through the notes' gates."""
    T = max(depths) + 1
    (gru_h,) = _states("gru", T, seed, ["h"])
    lstm_h, lstm_c = _states("lstm", T, seed, ["h", "c"])
    lines = ["backprop paths from the state at T back to the state at T-k (note 001):",
             "   k   GRU h_T -> h_(T-k)   LSTM (h_T, C_T) -> (h_(T-k), C_(T-k))"]
    for k in depths:
        gru = ag.count_paths(gru_h[-1], gru_h[-1 - k], through=GRU_NAMES)
        to_h, to_c = ag.count_paths([lstm_h[-1], lstm_c[-1]], [lstm_h[-1 - k], lstm_c[-1 - k]],
                                    through=LSTM_NAMES, exclusive=True)
        mark_g = "  <- the note's 16" if k == 2 else ""
        mark_l = "  <- the note's 24" if k == 2 else ""
        lines.append(f"  {k:2d}   {gru:>18}{mark_g:<20}{to_h + to_c:>5} = {to_h} to h + "
                     f"{to_c} to C{mark_l}")
    lines.append("  (a path to C_(T-k) through h_(T-k) = o * tanh(C_(T-k)) is counted once, "
                 "at h_(T-k))")
    return lines


def _states(cell, T, seed, names):
    """The per-step tensors with each of `names` in one recorded unroll, in time order."""
    model = RecurrentClassifier(2, 3, 2, cell=cell, rng=seed, dtype=np.float64)
    _, hidden, final = model(np.random.default_rng(seed).standard_normal((T, 1, 2)))
    roots = [hidden] + ([final[1]] if cell == "lstm" else [])
    nodes = ag.walk_graph(roots)
    return [sorted((t for t in nodes if t.name == name and t.step is not None),
                   key=lambda t: t.step) for name in names]


def state_path_lines(model_kind, loss, states):
    """Note 000's / 001's counts for the drawn model, every state in one pass."""
    if model_kind == "gru":
        last = states[-1]
        named = ag.count_paths(last, states, through=GRU_NAMES)
        every = ag.count_paths(last, states)
        lines = ["backprop paths from h_T back to h_(T-k) (note 001):",
                 "   k   through z, r, h~, h   over every op"]
        for k in range(1, min(len(states), 9)):
            lines.append(f"  {k:2d}   {count_text(named[-1 - k]):>19}   "
                         f"{count_text(every[-1 - k]):>13}")
        lines.append("  (the note counts 4^k; over every op z reaches h_t twice, (1-z)*h and "
                     "z*h~)")
        return lines
    label = "S" if model_kind == "rnn" else "h"
    named = ag.count_paths(loss, states, through=["h"])
    every = ag.count_paths(loss, states)
    lines = [f"backprop paths from each hidden state {label}_t to the loss (note 000):"]
    shown = range(len(states)) if len(states) <= 12 else [*range(3), *range(len(states) - 3,
                                                                           len(states))]
    for t in shown:
        lines.append(f"  {label}_{t + 1}: {count_text(named[t])} through the states, "
                     f"{count_text(every[t])} over every op")
    return lines


def count_text(n, digits=15):
    """A path count in full up to `digits` digits, else as 1.234e+5678: a long unroll's counts
    have thousands of digits (past 4,300 Python refuses to print them at all)."""
    if n < 10 ** digits:
        return str(n)
    exponent = n.bit_length() * 0.30103 // 1 - 17  # keep ~17 leading digits exact
    exponent = int(max(exponent, 0))
    lead = n // 10 ** exponent
    text = f"{lead:.3e}"
    mantissa, power = text.split("e")
    return f"{mantissa}e+{int(power) + exponent}"
