"""A learner's backward pass in a file, checked on a small model of the notes.

    report = nn.check_backward_file("my_backward.py", model="gru", steps=5, seed=0)

The file defines `backward(params, xs, targets, step_weights)` (see `nn.check_backward`); it
runs on a model with random weights and data (`example_problem`).
"""
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
