"""`bptt demo`: note 000's vanilla RNN, unrolled three steps, differentiated by the engine."""
import numpy as np

import autograd_core as ag

from .arguments import seed

HELP = "differentiate note 000's 3-step RNN and print gradients"
DESCRIPTION = "Note 000's vanilla RNN, unrolled three steps, differentiated by the engine."
EPILOG = "example: bptt demo --seed 1"


def add_arguments(p):
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")


def run(args):
    rng = np.random.default_rng(args.seed)
    U = ag.Tensor(rng.normal(0, 0.5, (4, 3)), requires_grad=True, name="U")
    W = ag.Tensor(rng.normal(0, 0.5, (4, 4)), requires_grad=True, name="W")
    V = ag.Tensor(rng.normal(0, 0.5, (2, 4)), requires_grad=True, name="V")
    s, loss = ag.Tensor(np.zeros(4)), 0.0
    print("S_t = tanh(U x_t + W S_{t-1}), y_t = softmax(V S_t), L = L_1 + L_2 + L_3")
    for t, (x, y) in enumerate(zip(rng.normal(size=(3, 3)), [0, 1, 1]), start=1):
        s = ag.tanh(U @ x + W @ s)
        step_loss = -ag.log_softmax(V @ s)[y]
        print(f"  L_{t} = {step_loss.item():.6f}")
        loss = loss + step_loss
    loss.backward()
    with np.printoptions(precision=4, suppress=True):
        for p in (U, W, V):
            print(f"dL/d{p.name} =\n{p.grad.numpy()}")
    return 0
