"""`bptt explore`: one self-contained HTML page that steps through the reverse sweep of a
small RNN or GRU on the notes' picture (see autograd_core.explorer)."""
import pathlib
import sys

import autograd_core as ag

from . import graph_view
from .arguments import at_most, seed

HELP = "an HTML page that steps through the reverse sweep"
DESCRIPTION = ("Write one self-contained HTML page (no network, no server) that steps "
               "forward and back through the reverse sweep of a small RNN or GRU: the notes' "
               "graph with the current node and the gradients just sent, the local rule in "
               "words, ||dL/dh_t|| per step, values and gradients on hover.")
EPILOG = ("examples:\n  bptt explore\n  bptt explore --model gru --steps 4 --out gru.html\n"
          "  (then open the page in a browser; the arrow keys step too)")
MAX_STEPS = 12  # the page draws every step unrolled


def add_arguments(parser):
    parser.add_argument("--model", choices=("rnn", "gru", "lstm"), default="rnn",
                        help="(default rnn: note 000's picture)")
    parser.add_argument("--steps", type=at_most(int, MAX_STEPS, "the page draws every step "
                                                "unrolled"),
                        default=3, help=f"time steps, 1 to {MAX_STEPS} (default 3)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=None,
                        help="the page to write (default: explore-<model>.html here)")


def run(args):
    out = pathlib.Path(args.out or f"explore-{args.model}.html")
    if out.suffix.lower() not in (".html", ".htm"):
        print(f"bptt explore: --out {out} should end in .html", file=sys.stderr)
        return 2
    model, loss, _ = graph_view.build(args.model, args.steps, args.seed)
    trace = ag.trace_backward(loss, params=model)
    try:
        trace.to_html(out, loss, model)
    except (RuntimeError, OSError) as exc:
        print(f"bptt explore: {exc}", file=sys.stderr)
        return 1
    print(f"the reverse sweep of the {args.steps}-step {args.model.upper()} ({len(trace.rows)} "
          f"steps of the chain rule) written to {out}; open it in a browser")
    return 0
