"""A `bptt train` checkpoint read back as the model it saved and the task it learnt (for
`bptt report` and `bptt explore`). train saves parameters only, so the cell, the sizes and
the task follow from their shapes; anything that does not fit is a one-line UsageError."""
import pathlib

from .. import checkpoint
from .arguments import UsageError
from .training import MODELS, SequenceModel, TrainConfig

GATES = {1: "rnn", 3: "gru"}  # rows of weight_ih per hidden unit -> the cell


def find(path, where, cell=None):
    """The checkpoint file `path` names: the file itself, or in a run folder `cell`.npz
    (default: the only one there, else rnn.npz)."""
    path = pathlib.Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UsageError(f"{where}: --checkpoint {path} does not exist; pass a bptt train "
                         f"output folder or its rnn.npz / gru.npz")
    present = [c for c in MODELS if (path / f"{c}.npz").is_file()]
    if not present:
        raise UsageError(f"{where}: --checkpoint {path} holds neither rnn.npz nor gru.npz; "
                         f"is it a bptt train output folder?")
    if cell is not None and cell not in present:
        raise UsageError(f"{where}: --checkpoint {path} has no {cell}.npz (was that run "
                         f"trained with --models {cell}?)")
    return path / f"{cell or present[0]}.npz"


def load(path, where, cell=None):
    """(float64 SequenceModel with the trained weights, its cell, TrainConfig of its task with
    the checkpoint's hidden size). `cell`, when given, must be the checkpoint's."""
    try:
        state = checkpoint.load(path)
    except (checkpoint.CheckpointError, OSError) as exc:
        raise UsageError(f"{where}: {one_line(exc)}") from None
    try:
        gates = state["rnn.weight_ih_l0"].shape[0] // state["rnn.weight_hh_l0"].shape[1]
        n_in = state["rnn.weight_ih_l0"].shape[1]
        hidden = state["rnn.weight_hh_l0"].shape[1]
        n_out = state["out.weight"].shape[0]
    except (KeyError, IndexError, ZeroDivisionError):
        raise UsageError(f"{where}: {path} is not a bptt train checkpoint (it lacks "
                         f"rnn.weight_ih_l0, rnn.weight_hh_l0 or out.weight)") from None
    found = GATES.get(gates)
    if found is None:
        raise UsageError(f"{where}: {path} holds a recurrent layer with {gates} gates; bptt "
                         f"train saves an RNN (1) or a GRU (3)")
    if cell not in (None, found):
        raise UsageError(f"{where}: {path} holds {_a(found)}, not {_a(cell)}")
    if (n_in, n_out) == (2, 1):
        cfg = TrainConfig(task="adding")
    elif n_in == n_out:
        cfg = TrainConfig(task="remember", symbols=n_in)
    else:
        raise UsageError(f"{where}: {path} reads {n_in} inputs and gives {n_out} outputs, "
                         f"which fits neither the adding nor the remember task")
    cfg.hidden = hidden
    model = SequenceModel(found, n_in, hidden, n_out, rng=0)
    try:
        checkpoint.load(path, module=model)
    except (checkpoint.CheckpointError, OSError) as exc:
        raise UsageError(f"{where}: {one_line(exc)}") from None
    return model.double(), found, cfg


def _a(cell):
    return ("an " if cell == "rnn" else "a ") + cell.upper()


def one_line(exc):
    return " ".join(str(exc).splitlines())
