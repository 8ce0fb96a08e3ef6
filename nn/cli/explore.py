"""`bptt explore`: one self-contained HTML page that steps through the reverse sweep of a
small RNN or GRU, or of a model `bptt train` saved, on the notes' picture (see
autograd_core.explorer)."""
import pathlib
import sys

import numpy as np

import autograd_core as ag

from . import graph_view, trained
from .arguments import UsageError, at_most, seed
from .training import task_setup

HELP = "an HTML page that steps through the reverse sweep"
DESCRIPTION = ("Write one self-contained HTML page (no network, no server) that steps "
               "forward and back through the reverse sweep of a small RNN or GRU: the notes' "
               "graph with the current node and the gradients just sent, the local rule in "
               "words, ||dL/dh_t|| per step, values and gradients on hover. With "
               "--checkpoint, the sweep is that of a model bptt train saved, on one batch of "
               "the task it was trained on (its read-out of h_T and its loss).")
EPILOG = ("examples:\n  bptt explore\n  bptt explore --model gru --steps 4 --out gru.html\n"
          "  bptt explore --checkpoint runs/train-adding-20250101-120000/gru.npz --steps 6\n"
          "  bptt explore --checkpoint runs/train-adding-20250101-120000 --model gru\n"
          "  (then open the page in a browser; the arrow keys step too)")
MAX_STEPS = 12  # the page draws every step unrolled
_WHERE = "bptt explore"


def add_arguments(parser):
    parser.add_argument("--model", choices=("rnn", "gru", "lstm"), default=None,
                        help="(default rnn: note 000's picture; with a --checkpoint folder, "
                             "which of its models)")
    parser.add_argument("--steps", type=at_most(int, MAX_STEPS, "the page draws every step "
                                                "unrolled"),
                        default=3, help=f"time steps, 1 to {MAX_STEPS} (default 3)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="a bptt train output folder, or its rnn.npz / gru.npz: explore "
                             "the trained model on one batch of its task")
    parser.add_argument("--batch", type=at_most(int, 64, "the page is for small batches"),
                        default=None, help="with --checkpoint, the batch size (default 4)")
    parser.add_argument("--out", default=None,
                        help="the page to write (default: explore-<model>.html here)")


def run(args):
    if args.checkpoint is None:
        if args.batch is not None:
            raise UsageError(f"{_WHERE}: --batch is for --checkpoint (the small model has one "
                             f"sample)")
        cell = args.model or "rnn"
        model, loss, _ = graph_view.build(cell, args.steps, args.seed)
        what = f"the {args.steps}-step {cell.upper()}"
    else:
        model, loss, cell, what = _trained(args)
    out = pathlib.Path(args.out or f"explore-{cell}.html")
    if out.suffix.lower() not in (".html", ".htm"):
        print(f"{_WHERE}: --out {out} should end in .html", file=sys.stderr)
        return 2
    trace = ag.trace_backward(loss, params=model)
    try:
        trace.to_html(out, loss, model)
    except (RuntimeError, OSError) as exc:
        print(f"{_WHERE}: {trained.one_line(exc)}", file=sys.stderr)
        return 1
    print(f"the reverse sweep of {what} ({len(trace.rows)} steps of the chain rule) written "
          f"to {out}; open it in a browser")
    return 0


def _trained(args):
    """(model, loss, cell, description) of the checkpoint's model on one batch of its task:
    its own loss on its read-out of h_T (train's SequenceModel and task_setup)."""
    if args.model == "lstm":
        raise UsageError(f"{_WHERE}: bptt train saves an RNN or a GRU, not an LSTM")
    path = trained.find(args.checkpoint, _WHERE, args.model)
    model, cell, cfg = trained.load(path, _WHERE, args.model)
    if cfg.task == "adding" and args.steps < 2:
        raise UsageError(f"{_WHERE}: the adding task needs --steps 2 or more (one marked "
                         f"number in each half)")
    batch = args.batch or 4
    cfg.length = args.steps
    make, _, _, score, _ = task_setup(cfg)
    xs, target = make(batch, np.random.default_rng(args.seed))
    pred, hidden = model(xs.astype(np.float64))
    pred.name = "y"  # the read-out of h_T, drawn as the notes' y
    loss, _ = score(pred, target)
    for t in ag.walk_graph(loss):  # the target is a data leaf too: do not draw it as an x
        if t.is_leaf and not t.requires_grad and t.name is None and t.shape == target.shape:
            t.name = "target"
    return model, loss, cell, (f"the trained {cell.upper()} of {path} on one {cfg.task}-task "
                               f"batch of {batch}, {args.steps} step{'s' * (args.steps != 1)} long")
