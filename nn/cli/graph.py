"""`bptt graph`: draw a small unrolled RNN, GRU or LSTM as the notes do and count its backprop
paths (notes 000, 001). Long sequences are drawn rolled; an unrolled drawing is capped where
it is still readable and quick, and `dot` itself runs under a time limit."""
import shutil
import subprocess
import sys

import autograd_core as ag

from ..diagnostics import step_states
from . import graph_view
from .arguments import UsageError, at_most, seed
from .run_folder import RunFolder, destination

HELP = "draw an unrolled RNN, GRU or LSTM and count its paths"
DESCRIPTION = ("Render the unrolled graph of a small RNN, GRU or LSTM with Graphviz, as the "
               "notes draw it (or every op), and report the backprop path counts of notes 000 "
               "and 001.")
EPILOG = ("examples:\n  bptt graph\n  bptt graph --model rnn --steps 3 --format png --grad\n"
          "  bptt graph --view ops --steps 2\n  bptt graph --steps 500   (drawn rolled)")

FORMATS = ("svg", "png", "pdf")
# Graphviz lays out an unrolled graph in time that grows much faster than the graph: a 40-step
# GRU of every op (~1,200 boxes) takes dot about a second; at 100 steps dot fails ("trouble in
# init_rank") after 9 s, at 150 it runs for minutes. The notes view past ROLL_AFTER steps is
# drawn rolled (one step, x T) and has no such limit.
MAX_UNROLLED_STEPS = 40
DOT_SECONDS = 60
# Tensors of the longest graph drawn: the DOT source of a rolled view reads the whole graph
# (a 20,000-step GRU, 260,000 tensors: 28 s), on top of recording it and counting its paths.
# At this many the whole command took 6 s (GRU) to 21 s (LSTM).
MAX_TENSORS = 100_000
_WHERE = "bptt graph"


def add_arguments(p):
    p.add_argument("--model", choices=("gru", "rnn", "lstm"), default="gru",
                   help="(default gru)")
    p.add_argument("--steps", type=at_most(int, graph_view.MAX_STEPS, "the graph of so long "
                                           "an unroll takes minutes to record"),
                   default=3, help=f"time steps (default 3; the notes view is drawn rolled "
                                   f"past {graph_view.ROLL_AFTER}, --view ops takes at most "
                                   f"{MAX_UNROLLED_STEPS})")
    p.add_argument("--format", choices=FORMATS, default="svg", help="(default svg)")
    p.add_argument("--grad", action="store_true", help="show each tensor's gradient norm")
    graph_view.add_arguments(p)
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=None, help="output folder (default: a new runs/graph-...)")


def run(args):
    view, why = graph_view.view_for(args.view, args.steps)
    if view != "rolled" and args.steps > MAX_UNROLLED_STEPS:
        raise UsageError(f"{_WHERE}: --steps {args.steps} with the {view} view: at most "
                         f"{MAX_UNROLLED_STEPS} (Graphviz takes minutes to lay out a larger "
                         f"unrolled graph); --view rolled draws any length")
    longest = max_steps(args.model)
    if args.steps > longest:
        raise UsageError(f"{_WHERE}: --steps {args.steps} for --model {args.model}: at most "
                         f"{longest} (a longer unroll has more than {MAX_TENSORS} tensors, "
                         f"which take more than a minute to draw)")
    out = destination(args.out, f"graph-{args.model}", _WHERE)
    model, loss, hidden = graph_view.build(args.model, args.steps, args.seed)
    name = f"{args.model}-{view}.{args.format}"
    exe = shutil.which("dot")
    if exe is None:
        print(f"{_WHERE}: the Graphviz 'dot' program was not found on PATH, so the graph was "
              f"not drawn (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
              f"graphviz); the DOT source is written instead", file=sys.stderr)
    # the drawing reads the graph before anything else: count_paths leaves it as it was
    try:
        dot = ag.to_dot(loss, params=model, show_grad=args.grad, view=view,
                        max_nodes=MAX_TENSORS)
    except ag.GraphTooLargeError as exc:
        raise UsageError(f"{_WHERE}: {exc}") from None
    with RunFolder(out, _WHERE) as folder:
        source = folder / f"{args.model}-{view}.dot"
        source.write_text(dot.source)
        if exe is not None:
            _run_dot(exe, source, folder / name, args.format)
    if exe is not None:
        print(f"graph of the {args.steps}-step {args.model.upper()} ({view} view) written to "
              f"{out / name}" + (f"\n{why}" if why else ""))
    print("\n" + "\n".join(graph_view.state_path_lines(args.model, loss, step_states(hidden))))
    print("\n" + "\n".join(graph_view.gru_lstm_table()))
    return 0 if exe is not None else 1


def max_steps(model):
    """The longest unroll of `model` whose graph has at most MAX_TENSORS tensors, from the
    tensors the first and the second step add."""
    one, two = (len(ag.walk_graph(graph_view.build(model, steps, 0)[1])) for steps in (1, 2))
    return (MAX_TENSORS - one) // (two - one) + 1


def _run_dot(exe, source, path, format):
    try:
        result = subprocess.run([exe, f"-T{format}", str(source), "-o", str(path)],
                                capture_output=True, text=True, timeout=DOT_SECONDS)
    except subprocess.TimeoutExpired:
        raise UsageError(f"{_WHERE}: Graphviz's dot did not finish within {DOT_SECONDS} s; "
                         f"try fewer --steps") from None
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["(no message)"])[0]
        raise UsageError(f"{_WHERE}: Graphviz's dot failed (exit {result.returncode}): {first}")
