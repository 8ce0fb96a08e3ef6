"""GRU sequence classifier, training step: nn.RecurrentClassifier(cell="gru"),
logits_t = h_t V^T + b, L = sum_t mean_b CE_t; batch 32, input 32, hidden 128, 32 classes,
T = 50, float32, one thread. Same weights and data everywhere.

The notes' GRU (variant="notes", the default; note 001):
    r, z = σ(x W_x{r,z}^T + h W_h{r,z}^T + b),  h~ = tanh(x W_xh^T + (r * h) W_hh^T + b_h),
    h_t = (1 - z) h_{t-1} + z h~
- autograd_core: `model.loss(xs, targets)` and `.backward()`;
- autograd_core, the user loop: every gate's input projection and the output layer inside
  the per-step loop, as a learner first writes it (`_steps.gru_user_loop`); eager and replayed;
- numpy by hand: `numpy_reference.gru_loss_grad`, the floor (held to nn.manual first);
- torch eager: the same per-step Python loop written with torch ops (input projections of all
  steps in one matmul, then the equations above per step), torch.nn.Linear, F.cross_entropy.

torch.nn.GRU's form (variant="torch"; informational):
- autograd_core with variant="torch";
- torch eager, the per-step loop over torch.nn.GRUCell;
- torch.nn.GRU, torch's fused layer (all steps in one call; not a per-step Python loop).
"""
from . import _steps, numpy_reference
from ._common import import_torch

# consecutive steps per timed sample (see _steps.time_steps): the shorter the step, the more
# of them a sample holds, so that its time stands above the clock's and the scheduler's noise
BURST = 2

NAME = "gru"
TITLE = "GRU classifier step (fwd + bwd): " + _steps.SEQ_TITLE

OURS, FLOOR, TORCH = "autograd_core (notes GRU)", "numpy by hand (floor)", "torch eager (notes GRU)"
REPLAY = "autograd_core replay (notes GRU)"
LOOP, LOOP_REPLAY = "autograd_core user loop", "autograd_core user loop, replay"
OURS_T, CELL_T, FUSED_T = ("autograd_core variant=torch", "torch eager, GRUCell loop",
                           "torch nn.GRU (fused)")


def _notes_torch(torch, state, xs, targets):
    """Note 001's GRU as plain torch forward code, the same loop as nn.recurrent's."""
    T, B, I = xs.shape
    H, C = _steps.HIDDEN, _steps.CLASSES
    xt, yt = torch.from_numpy(xs), torch.from_numpy(targets)
    lin = torch.nn.Linear(H, C)
    params = _steps.torch_params(torch, state, {
        "rnn.weight_ih_l0": None, "rnn.weight_hh_l0": None, "rnn.bias_ih_l0": None,
        "rnn.bias_hh_l0": None, "out.weight": (lin, "weight"), "out.bias": (lin, "bias")})
    w_ih, w_hh = params["rnn.weight_ih_l0"], params["rnn.weight_hh_l0"]
    b_ih, b_hh = params["rnn.bias_ih_l0"], params["rnn.bias_hh_l0"]

    def loss():
        x2 = xt.reshape(T * B, I)
        b = b_ih + b_hh                                     # one bias per gate (notes)
        p_rz = (x2 @ w_ih[:2 * H].T).reshape(T, B, 2 * H) + b[:2 * H]
        p_n = (x2 @ w_ih[2 * H:].T).reshape(T, B, H) + b[2 * H:]
        w_rz_t, w_n_t = w_hh[:2 * H].T, w_hh[2 * H:].T
        h, outs = torch.zeros(B, H), []
        for t in range(T):
            rz = torch.sigmoid(p_rz[t] + h @ w_rz_t)
            r, z = rz[:, :H], rz[:, H:]
            h_tilde = torch.tanh(p_n[t] + (r * h) @ w_n_t)
            h = (1 - z) * h + z * h_tilde
            outs.append(h)
        return _steps.torch_sequence_loss(torch, lin, outs, yt)

    return _steps.torch_eager(TORCH, params, loss)


def _torch_form(torch, state, xs, targets):
    """torch.nn.GRU's form: the GRUCell loop and the fused layer."""
    T, B, I = xs.shape
    H, C = _steps.HIDDEN, _steps.CLASSES
    xt, yt = torch.from_numpy(xs), torch.from_numpy(targets)

    cell, lin = torch.nn.GRUCell(I, H), torch.nn.Linear(H, C)
    cell_params = _steps.torch_params(torch, state, {
        "rnn.weight_ih_l0": (cell, "weight_ih"), "rnn.weight_hh_l0": (cell, "weight_hh"),
        "rnn.bias_ih_l0": (cell, "bias_ih"), "rnn.bias_hh_l0": (cell, "bias_hh"),
        "out.weight": (lin, "weight"), "out.bias": (lin, "bias")})

    cell_loop = _steps.torch_cell_loop(torch, cell, lin, xt, yt)

    gru, lin2 = torch.nn.GRU(I, H), torch.nn.Linear(H, C)
    fused_params = _steps.torch_params(torch, state, {
        "rnn.weight_ih_l0": (gru, "weight_ih_l0"), "rnn.weight_hh_l0": (gru, "weight_hh_l0"),
        "rnn.bias_ih_l0": (gru, "bias_ih_l0"), "rnn.bias_hh_l0": (gru, "bias_hh_l0"),
        "out.weight": (lin2, "weight"), "out.bias": (lin2, "bias")})

    def fused():
        out, _ = gru(xt)
        return _steps.torch_sequence_loss(torch, lin2, out, yt)

    return [_steps.torch_eager(CELL_T, cell_params, cell_loop),
            _steps.torch_eager(FUSED_T, fused_params, fused)]


def run(quick=False):
    numpy_reference.check_against_manual(models=("gru",))
    model, state, xs, targets = _steps.sequence_task("gru")
    model_t, _, _, _ = _steps.sequence_task("gru", variant="torch")
    model_t.load_state_dict(state)

    ours = _steps.ours_sequence(OURS, model, xs, targets)
    floor = _steps.numpy_by_hand(FLOOR, numpy_reference.gru_loss_grad, state, xs, targets)
    ours_t = _steps.ours_sequence(OURS_T, model_t, xs, targets)
    torch = import_torch()
    notes = [ours, _steps.ours_sequence(REPLAY, model, xs, targets, replayed=True),
             _steps.ours_user_loop(LOOP, model, _steps.gru_user_loop, xs, targets),
             _steps.ours_user_loop(LOOP_REPLAY, model, _steps.gru_user_loop, xs, targets,
                                   replayed=True)]
    torch_form = [ours_t]
    if torch is not None:
        notes.append(_notes_torch(torch, state, xs, targets))
        torch_form += _torch_form(torch, state, xs, targets)
    notes.append(floor)
    _steps.check_agreement(NAME, notes, floor)
    _steps.check_agreement(NAME, torch_form, ours_t)

    times = _steps.time_steps(notes + torch_form, quick, BURST)
    return _steps.rows(times, [("autograd_core / numpy", OURS, FLOOR),
                               ("replay / numpy", REPLAY, FLOOR),
                               ("user loop / numpy", LOOP, FLOOR),
                               ("user loop, replay / numpy", LOOP_REPLAY, FLOOR),
                               ("autograd_core / torch", OURS, TORCH),
                               ("variant=torch / GRUCell loop", OURS_T, CELL_T),
                               ("variant=torch / nn.GRU fused", OURS_T, FUSED_T)])
