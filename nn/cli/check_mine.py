"""`bptt check --mine FILE.py`: check a learner's own backward pass against the engine.

FILE.py defines `backward(params, xs, targets, step_weights)` (see `nn.check_backward`); it
runs on a small model of the notes with random weights and data, and the report says where
its gradients first differ from the engine's. Exit status 0 when they agree, 1 when not, 2
when the file cannot be used (missing, does not import, defines no `backward`).
"""
import argparse
import sys

from ..check_backward import check_backward
from ..layers import MLP
from ..learner_file import (DEFAULT_MODEL, DEFAULT_STEPS, MODELS, StudentFileError,
                           example_problem, load_backward)


# The engine's side of the check takes ~0.3 ms per step (and ~20 MB per 1,000 steps): the
# longest sequence that surely finishes within a minute, before the learner's own code runs.
MAX_STEPS = 50_000


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_STEPS}, got {text}: a longer check "
                                         f"takes more than a minute")
    return value


def add_arguments(parser, seed=True):
    """--mine, --model, --steps (and --seed unless the parser has one)."""
    parser.add_argument("--mine", metavar="FILE.py", default=None,
                        help="check YOUR backward(params, xs, targets, step_weights) in "
                             "FILE.py against the engine, step by step")
    parser.add_argument("--model", choices=tuple(MODELS), default=None,
                        help=f"with --mine: the model your backward is for (default "
                             f"{DEFAULT_MODEL}; mlp is mean squared error, mlp-ce "
                             f"cross-entropy)")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help=f"with --mine: time steps T (default {DEFAULT_STEPS}, at most "
                             f"{MAX_STEPS})")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def run(args):
    """Print the report for `args.mine`; 0 when it agrees, 1 when not, 2 when unusable."""
    where = "bptt check --mine"
    if args.mine is None:
        print(f"bptt check: --model and --steps go with --mine FILE.py (the models of the "
              f"engine-vs-reference check are chosen with --models)", file=sys.stderr)
        return 2
    model = args.model or DEFAULT_MODEL
    steps = args.steps or DEFAULT_STEPS
    try:
        backward = load_backward(args.mine)
    except StudentFileError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 2
    net, xs, targets = example_problem(model, steps, args.seed)
    print(_describe(args.mine, model, net, xs, targets))
    report = check_backward(backward, net, xs, targets)
    print(report.table())
    return 0 if report.ok else 1


def _describe(path, model, net, xs, targets):
    shapes = ", ".join(f"{n} {tuple(v.shape)}" for n, v in net.state_dict().items())
    time = ("step_weights None, " if isinstance(net, MLP)
            else f"T = {xs.shape[0]} steps, step_weights all ones, ")
    return (f"checking backward() of {path} for model {model}: {time}xs {xs.shape}, targets "
            f"{targets.shape}\nparams (float64): {shapes}\n")
