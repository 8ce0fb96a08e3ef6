"""The `bptt` command line. `bptt demo` (the default for now) builds a small graph, runs
backward and prints the gradients next to the hand-derived values."""
import argparse
import sys

import numpy as np

import autograd_core as ag


def demo(args):
    """Note 000's vanilla RNN, unrolled three steps, differentiated by the engine."""
    rng = np.random.default_rng(args.seed)
    hidden, inputs, classes = 4, 3, 2
    U = ag.Tensor(rng.normal(0, 0.5, (hidden, inputs)), requires_grad=True, name="U")
    W = ag.Tensor(rng.normal(0, 0.5, (hidden, hidden)), requires_grad=True, name="W")
    V = ag.Tensor(rng.normal(0, 0.5, (classes, hidden)), requires_grad=True, name="V")
    xs = rng.normal(size=(3, inputs))
    targets = [0, 1, 1]
    s = ag.Tensor(np.zeros(hidden))
    loss = 0.0
    print("forward: S_t = tanh(U x_t + W S_{t-1}), y_t = softmax(V S_t), L = L_1 + L_2 + L_3")
    for t, (x, y) in enumerate(zip(xs, targets), start=1):
        s = ag.tanh(U @ x + W @ s)
        log_probs = ag.log_softmax(V @ s)
        step_loss = -log_probs[y]
        print(f"  step {t}: L_{t} = {step_loss.item():.6f}")
        loss = loss + step_loss
    loss.backward()
    print(f"L = {loss.item():.6f}")
    np.set_printoptions(precision=4, suppress=True)
    for p in (U, W, V):
        print(f"dL/d{p.name} =\n{p.grad.numpy()}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bptt", description="A tiny reverse-mode autodiff engine for MLPs, RNNs and GRUs.",
        epilog="example: bptt demo --seed 1")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="differentiate a 3-step RNN and print the gradients",
                       description=demo.__doc__, epilog="example: bptt demo --seed 1")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=demo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        args = parser.parse_args(["demo"])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
