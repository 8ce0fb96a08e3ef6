"""`bptt graph`: draw a small unrolled RNN or GRU and count its backprop paths (notes 000, 001).

Graphviz lays out an unrolled graph in time that grows much faster than the graph: a 100-step
GRU makes `dot` fail and 150 steps run for minutes. So --steps is capped where a drawing is
still readable and quick, and `dot` itself runs under a time limit.
"""
import shutil
import subprocess
import sys

import numpy as np

import autograd_core as ag

from ..diagnostics import step_states
from ..losses import sequence_cross_entropy
from ..models import RecurrentClassifier
from .arguments import UsageError, at_most, seed
from .run_folder import RunFolder, destination

HELP = "draw an unrolled RNN or GRU and count its paths"
DESCRIPTION = ("Render the unrolled graph of a small RNN or GRU with Graphviz and report the "
               "backprop path counts of notes 000 and 001.")
EPILOG = "examples:\n  bptt graph\n  bptt graph --model rnn --steps 3 --format png --grad"

FORMATS = ("svg", "png", "pdf")
# A 40-step GRU (~1,200 boxes) takes dot about a second; at 100 steps dot fails ("trouble in
# init_rank") after 9 s, at 150 it runs for minutes. bptt report handles long sequences.
MAX_STEPS = 40
DOT_SECONDS = 60
_WHERE = "bptt graph"


def add_arguments(p):
    p.add_argument("--model", choices=("gru", "rnn"), default="gru", help="(default gru)")
    p.add_argument("--steps", type=at_most(int, MAX_STEPS, "a larger unrolled graph is "
                                           "unreadable and Graphviz takes minutes to lay it "
                                           "out (bptt report handles long sequences)"),
                   default=3, help=f"time steps, at most {MAX_STEPS} (default 3)")
    p.add_argument("--format", choices=FORMATS, default="svg", help="(default svg)")
    p.add_argument("--grad", action="store_true", help="show each tensor's gradient norm")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=None, help="output folder (default: a new runs/graph-...)")


def run(args):
    out = destination(args.out, f"graph-{args.model}", _WHERE)
    rng = np.random.default_rng(args.seed)
    model = RecurrentClassifier(2, 3, 2, cell=args.model, rng=args.seed, dtype=np.float64)
    xs = rng.standard_normal((args.steps, 1, 2))
    logits, hidden, _ = model(xs)
    loss = sequence_cross_entropy(logits, rng.integers(0, 2, (args.steps, 1)))
    states = step_states(hidden)
    name = f"{args.model}-unrolled.{args.format}"
    exe = shutil.which("dot")
    if exe is None:
        print(f"{_WHERE}: the Graphviz 'dot' program was not found on PATH, so the graph was "
              f"not drawn (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
              f"graphviz); the DOT source is written instead", file=sys.stderr)
    # the drawing reads the graph before anything else: count_paths leaves it as it was
    dot = ag.to_dot(loss, params=model, show_grad=args.grad)
    with RunFolder(out, _WHERE) as folder:
        source = folder / f"{args.model}-unrolled.dot"
        source.write_text(dot.source)
        if exe is not None:
            _run_dot(exe, source, folder / name, args.format)
    if exe is not None:
        print(f"graph of the {args.steps}-step {args.model.upper()} written to {out / name}")
    _report_paths(args.model, loss, states)
    return 0 if exe is not None else 1


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


def _report_paths(model, loss, states):
    last = states[-1]
    if model == "gru":
        print("\nbackprop paths from h_T back to h_(T-k) (note 001):")
        print("   k   through z, r, h~, h   over every op")
        for k in range(1, len(states)):
            named = ag.count_paths(last, states[-1 - k], through=["z", "r", "h~", "h"])
            every = ag.count_paths(last, states[-1 - k])
            print(f"  {k:2d}   {named:>19}   {every:>13}")
        print("  (the note counts 4^k; over every op z reaches h_t twice, (1-z)*h and z*h~)")
    else:
        print("\nbackprop paths from each hidden state S_t to the loss (note 000):")
        for t, s in enumerate(states, start=1):
            print(f"  S_{t}: {ag.count_paths(loss, s, through=['h'])} through the states, "
                  f"{ag.count_paths(loss, s)} over every op")
