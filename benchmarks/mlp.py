"""MLP training step: 64-256-256-10, tanh hidden layers, softmax cross-entropy (batch mean),
batch 64, float32, one thread.

Timed: the forward and backward of autograd_core (nn.MLP + nn.cross_entropy), PyTorch eager
(torch.nn.Linear / tanh / F.cross_entropy, same weights), the lean hand-written numpy of
`numpy_reference.mlp_loss_grad` (the floor), and `lean_engine` (the least an eager graph
costs: what autograd_core's own bookkeeping adds shows against it). The floor is first held to
nn.manual in float64, then all of them are checked to give the same loss and gradients in
float32.
"""
import numpy as np

from . import _steps, lean_engine, numpy_reference
from ._common import import_torch

# consecutive steps per timed sample (see _steps.time_steps): the shorter the step, the more
# of them a sample holds, so that its time stands above the clock's and the scheduler's noise
BURST = 10

NAME = "mlp"
TITLE = "MLP step (fwd + bwd): batch 64, 64-256-256-10, tanh, softmax CE, float32, 1 thread"

SIZES = (64, 256, 256, 10)
BATCH = 64
SEED = 0

OURS, FLOOR, TORCH = "autograd_core", "numpy by hand (floor)", "torch eager (CPU)"
REPLAY = "autograd_core replay"
LEAN = "lean eager engine (reference)"


def _ours(model, x, y, replayed=False):
    import autograd_core as ag
    import nn

    xt = ag.Tensor(x)
    loss = lambda: nn.cross_entropy(model(xt), y)  # noqa: E731
    if replayed:
        return _steps.ours(REPLAY, model, ag.replay(loss))
    return _steps.ours(OURS, model, loss)


def _lean(state, x, y):
    params = {name: lean_engine.Node(np.array(value)) for name, value in state.items()}
    xn, layers = lean_engine.Node(x), len(SIZES) - 1
    loss = lambda: lean_engine.mlp_loss(params, xn, y, layers)  # noqa: E731
    return _steps.engine(LEAN, params, loss, lambda p: p.grad)


def _torch(torch, state, x, y):
    import torch.nn.functional as F

    layers = [torch.nn.Linear(a, b) for a, b in zip(SIZES, SIZES[1:])]
    names = {}
    for i, layer in enumerate(layers):
        names[f"layers.{i}.weight"] = (layer, "weight")
        names[f"layers.{i}.bias"] = (layer, "bias")
    params = _steps.torch_params(torch, state, names)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    last = len(layers) - 1

    def loss():
        a = xt
        for i, layer in enumerate(layers):
            a = layer(a)
            if i < last:
                a = torch.tanh(a)
        return F.cross_entropy(a, yt)

    return _steps.torch_eager(TORCH, params, loss)


def run(quick=False):
    numpy_reference.check_against_manual(models=("mlp",))
    import nn

    rng = np.random.default_rng(SEED)
    model = nn.MLP(list(SIZES), activation="tanh", rng=rng)
    state = model.state_dict()
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)

    impls = [_ours(model, x, y), _ours(model, x, y, replayed=True), _lean(state, x, y)]
    torch = import_torch()
    if torch is not None:
        impls.append(_torch(torch, state, x, y))
    floor = _steps.numpy_by_hand(FLOOR, numpy_reference.mlp_loss_grad, state, x, y)
    impls.append(floor)
    _steps.check_agreement(NAME, impls, floor)

    times = _steps.time_steps(impls, quick, BURST)
    return _steps.rows(times, [("autograd_core / numpy", OURS, FLOOR),
                               ("replay / numpy", REPLAY, FLOOR),
                               ("lean engine / numpy", LEAN, FLOOR),
                               ("autograd_core / lean engine", OURS, LEAN),
                               ("autograd_core / torch", OURS, TORCH)])
