"""`bptt check --mine FILE.py`: check a learner's own backward pass against the engine.

FILE.py defines `backward(params, xs, targets, step_weights)` (see `nn.check_backward`); it
runs on a small model of the notes with random weights and data, and the report says where
its gradients first differ from the engine's. Exit status 0 when they agree, 1 when not, 2
when the file cannot be used (missing, does not import, defines no `backward`).
"""
import argparse
import importlib.util
import pathlib
import sys
import traceback

import numpy as np

from .check_backward import check_backward
from .layers import MLP
from .models import RecurrentClassifier

# name -> RecurrentClassifier keyword arguments, or the MLP's loss
MODELS = {"rnn": {"cell": "rnn"}, "rnn-relu": {"cell": "rnn", "nonlinearity": "relu"},
          "gru": {"cell": "gru"}, "gru-torch": {"cell": "gru", "variant": "torch"},
          "lstm": {"cell": "lstm"}, "mlp": "mse", "mlp-ce": "cross_entropy"}
INPUT, HIDDEN, CLASSES, BATCH = 3, 4, 3, 2
MLP_SIZES = [3, 4, 4, 2]
DEFAULT_MODEL, DEFAULT_STEPS = "rnn", 4


class StudentFileError(Exception):
    """The learner's file cannot be used: one line."""


def load_backward(path):
    """The `backward` function defined by the Python file at `path`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise StudentFileError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(f"bptt_mine_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # so it can import its neighbours
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise StudentFileError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        line = next((f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__))
                     if f.filename == str(path)), None)
        at = f":{line}" if line else ""
        raise StudentFileError(f"{path}{at}: importing it raised {type(exc).__name__}: "
                               f"{exc}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    backward = getattr(module, "backward", None)
    if not callable(backward):
        raise StudentFileError(f"{path} does not define a function backward(params, xs, "
                               f"targets, step_weights)")
    return backward


def example_problem(model=DEFAULT_MODEL, steps=DEFAULT_STEPS, seed=0):
    """(model, xs, targets) for `model` (a name of MODELS): random float32 weights, float64
    data; T = `steps` for the recurrent models."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    rng = np.random.default_rng(seed)
    if isinstance(MODELS[model], str):
        net = MLP(MLP_SIZES, rng=seed)
        x = rng.standard_normal((BATCH, MLP_SIZES[0]))
        if MODELS[model] == "mse":
            return net, x, rng.standard_normal((BATCH, MLP_SIZES[-1]))
        return net, x, rng.integers(0, MLP_SIZES[-1], BATCH)
    net = RecurrentClassifier(INPUT, HIDDEN, CLASSES, rng=seed, **MODELS[model])
    return net, rng.standard_normal((steps, BATCH, INPUT)), rng.integers(0, CLASSES,
                                                                         (steps, BATCH))


def check_backward_file(path, model=DEFAULT_MODEL, steps=DEFAULT_STEPS, seed=0):
    """`nn.check_backward` of the `backward` in the file at `path` on `example_problem`."""
    backward = load_backward(path)
    net, xs, targets = example_problem(model, steps, seed)
    return check_backward(backward, net, xs, targets)


# ---- the command line -----------------------------------------------------------------------
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
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
                        help=f"with --mine: time steps T (default {DEFAULT_STEPS})")
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
    time = "" if isinstance(net, MLP) else f"T = {xs.shape[0]} steps, step_weights all ones, "
    return (f"checking backward() of {path} for model {model}: {time}xs {xs.shape}, targets "
            f"{targets.shape}\nparams (float64): {shapes}\n")
