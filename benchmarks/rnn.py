"""Vanilla RNN sequence classifier, training step: nn.RecurrentClassifier(cell="rnn"), tanh,
h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), logits_t = h_t V^T + b,
L = sum_t mean_b CE_t; batch 32, input 32, hidden 128, 32 classes, T = 50, float32, one thread.

Timed, with the same weights and data:
- autograd_core: `model.loss(xs, targets)` and `.backward()` (one matmul for the input
  projections of all steps, then the per-step loop, as nn.recurrent writes it);
- autograd_core, the user loop: input projection and output layer inside the per-step
  loop, as a learner first writes it (`_steps.rnn_user_loop`); eager and replayed;
- numpy by hand: `numpy_reference.rnn_loss_grad`, the floor (held to nn.manual first);
- torch eager: the per-step Python loop over `torch.nn.RNNCell`, then torch.nn.Linear and
  F.cross_entropy on the stacked states (the comparison of issue 3);
- torch eager with our loop (informational): the input projections of all steps in one
  matmul, then tanh(p_t + h W_hh^T) per step, exactly as autograd_core runs it.
"""
from . import _steps, numpy_reference
from ._common import import_torch

# consecutive steps per timed sample (see _steps.time_steps): the shorter the step, the more
# of them a sample holds, so that its time stands above the clock's and the scheduler's noise
BURST = 2

NAME = "rnn"
TITLE = "RNN classifier step (fwd + bwd), tanh: " + _steps.SEQ_TITLE

OURS, FLOOR = "autograd_core", "numpy by hand (floor)"
REPLAY = "autograd_core replay"
LOOP, LOOP_REPLAY = "autograd_core user loop", "autograd_core user loop, replay"
TORCH, TORCH_SAME = "torch eager, RNNCell loop", "torch eager, our loop (info)"


def _torch_impls(torch, state, xs, targets):
    T, B, I = xs.shape
    H, C = _steps.HIDDEN, _steps.CLASSES
    xt, yt = torch.from_numpy(xs), torch.from_numpy(targets)

    cell, lin = torch.nn.RNNCell(I, H, nonlinearity="tanh"), torch.nn.Linear(H, C)
    params = _steps.torch_params(torch, state, {
        "rnn.weight_ih_l0": (cell, "weight_ih"), "rnn.weight_hh_l0": (cell, "weight_hh"),
        "rnn.bias_ih_l0": (cell, "bias_ih"), "rnn.bias_hh_l0": (cell, "bias_hh"),
        "out.weight": (lin, "weight"), "out.bias": (lin, "bias")})

    cell_loop = _steps.torch_cell_loop(torch, cell, lin, xt, yt)

    lin2 = torch.nn.Linear(H, C)
    leaves = _steps.torch_params(torch, state, {
        "rnn.weight_ih_l0": None, "rnn.weight_hh_l0": None, "rnn.bias_ih_l0": None,
        "rnn.bias_hh_l0": None, "out.weight": (lin2, "weight"), "out.bias": (lin2, "bias")})
    w_ih, w_hh = leaves["rnn.weight_ih_l0"], leaves["rnn.weight_hh_l0"]
    b_ih, b_hh = leaves["rnn.bias_ih_l0"], leaves["rnn.bias_hh_l0"]

    def our_loop():
        proj = (xt.reshape(T * B, I) @ w_ih.T).reshape(T, B, H) + (b_ih + b_hh)
        w_hh_t = w_hh.T
        h, outs = torch.zeros(B, H), []
        for t in range(T):
            h = torch.tanh(proj[t] + h @ w_hh_t)
            outs.append(h)
        return _steps.torch_sequence_loss(torch, lin2, outs, yt)

    return [_steps.torch_eager(TORCH, params, cell_loop),
            _steps.torch_eager(TORCH_SAME, leaves, our_loop)]


def run(quick=False):
    numpy_reference.check_against_manual(models=("rnn",))
    model, state, xs, targets = _steps.sequence_task("rnn")

    impls = [_steps.ours_sequence(OURS, model, xs, targets),
             _steps.ours_sequence(REPLAY, model, xs, targets, replayed=True),
             _steps.ours_user_loop(LOOP, model, _steps.rnn_user_loop, xs, targets),
             _steps.ours_user_loop(LOOP_REPLAY, model, _steps.rnn_user_loop, xs, targets,
                                   replayed=True)]
    torch = import_torch()
    if torch is not None:
        impls += _torch_impls(torch, state, xs, targets)
    floor = _steps.numpy_by_hand(FLOOR, numpy_reference.rnn_loss_grad, state, xs, targets)
    impls.append(floor)
    _steps.check_agreement(NAME, impls, floor)

    times = _steps.time_steps(impls, quick, BURST)
    return _steps.rows(times, [("autograd_core / numpy", OURS, FLOOR),
                               ("replay / numpy", REPLAY, FLOOR),
                               ("user loop / numpy", LOOP, FLOOR),
                               ("user loop, replay / numpy", LOOP_REPLAY, FLOOR),
                               ("autograd_core / torch (RNNCell)", OURS, TORCH),
                               ("autograd_core / torch (our loop)", OURS, TORCH_SAME)])
