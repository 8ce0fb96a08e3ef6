"""The `bptt` command line: train, report, check, graph, bench (and a tiny demo).

    bptt train            a vanilla RNN and a GRU on the adding problem, 50 steps long
    bptt report           where BPTT's gradient comes from, step by step (note 003)
    bptt check            engine gradients vs the notes' hand-derived formulas
    bptt graph            draw an unrolled GRU and count its backprop paths (note 001)
    bptt bench            the speed comparisons
"""
import argparse
import datetime
import os
import pathlib
import subprocess
import sys

import numpy as np

import autograd_core as ag

from . import compare
from .train import MODELS, OPTIMIZERS, TASK_DEFAULTS, TASKS, TrainConfig


class UsageError(Exception):
    """Bad arguments or an unusable output folder: one line, exit code 2."""


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _model_list(text):
    models = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in models if m not in MODELS]
    if not models or unknown:
        raise argparse.ArgumentTypeError(f"unknown model {', '.join(unknown) or text!r}; choose "
                                         f"from {', '.join(MODELS)}")
    return models


def new_output_folder(out, prefix):
    """The folder results go to: `out`, or runs/<prefix>-<time>. Never an existing run."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = pathlib.Path("runs") / f"{prefix}-{stamp}"
        n = 1
        while out.exists():
            n += 1
            out = pathlib.Path("runs") / f"{prefix}-{stamp}-{n}"
    out = pathlib.Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"output folder {out} already exists and is not empty; choose another "
                         f"with --out (results are never written over an earlier run)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    return out


# ---- train -----------------------------------------------------------------------------------
def cmd_train(args):
    cfg = TrainConfig(models=args.models, task=args.task, length=args.length,
                      hidden=args.hidden, steps=args.steps, batch=args.batch,
                      optimizer=args.optimizer, lr=args.lr, clip=args.clip, seed=args.seed,
                      seeds=args.seeds)
    out = new_output_folder(args.out, f"train-{cfg.task}")
    from .train import run
    print(f"task: {cfg.task}, length {cfg.length}; models {', '.join(cfg.models)}, hidden "
          f"{cfg.hidden}; {cfg.steps} steps of batch {cfg.batch}, {cfg.optimizer} lr {cfg.lr}, "
          f"clip {cfg.clip}; seed {cfg.seed}"
          + (f" to {cfg.seed + cfg.seeds - 1}" if cfg.seeds > 1 else ""))
    rows, baseline, plots = run(cfg, out, sys.stdout)
    print(f"\nresults (fresh data; baseline: {baseline})")
    print(_table(rows))
    print(f"\nwritten to {out}/: {', '.join(f'{m}.npz' for m in cfg.models)} (checkpoints), "
          f"history.npz{''.join(', ' + p for p in plots)}")
    return 0


def _table(rows):
    header = list(rows[0])
    cells = [[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in header]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# ---- report ----------------------------------------------------------------------------------
def cmd_report(args):
    from .report_command import run
    return run(args)


# ---- graph -----------------------------------------------------------------------------------
def cmd_graph(args):
    import nn
    from .diagnostics import step_states
    out = new_output_folder(args.out, f"graph-{args.model}")
    rng = np.random.default_rng(args.seed)
    model = nn.RecurrentClassifier(2, 3, 2, cell=args.model, rng=args.seed, dtype=np.float64)
    xs = rng.standard_normal((args.steps, 1, 2))
    logits, hidden, _ = model(xs)
    loss = nn.sequence_cross_entropy(logits, rng.integers(0, 2, (args.steps, 1)))
    states = step_states(hidden)
    path = out / f"{args.model}-unrolled.{args.format}"
    try:
        ag.render(loss, path, format=args.format, params=model, show_grad=args.grad)
        print(f"graph of the {args.steps}-step {args.model.upper()} written to {path}")
    except RuntimeError as exc:
        print(f"bptt graph: {exc}", file=sys.stderr)
        return 1
    finally:
        _report_paths(args.model, loss, states)
    return 0


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


# ---- check / bench / demo ----------------------------------------------------------------------
def cmd_check(args):
    return compare.run(args, args.parser)


def cmd_bench(args):
    root = pathlib.Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").exists():
        raise UsageError("bench: the benchmarks/ folder of the source tree was not found (it "
                         "ships with the repository, not with an installed package)")
    extra = (["--quick"] if args.quick else []) + sum((["--only", n] for n in args.only), [])
    return subprocess.call([sys.executable, "-m", "benchmarks", *extra], cwd=root)


def cmd_demo(args):
    """Note 000's vanilla RNN, unrolled three steps, differentiated by the engine."""
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


# ---- parser ----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def _per_task(name):
    return ", ".join(f"{d[name]} for {task}" for task, d in TASK_DEFAULTS.items())


def build_parser():
    parser = _Parser(prog="bptt", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train an RNN and a GRU on a long-range task",
                       description="Train a vanilla RNN and a GRU on a synthetic long-range task "
                                   "and compare them: losses, accuracy, gradient norm per time "
                                   "step, checkpoints and plots.",
                       epilog="examples:\n  bptt train\n  bptt train --seeds 5\n"
                              "  bptt train --length 100 --steps 1500"
                              "\n  bptt train --task remember --models gru --out runs/mine",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainConfig()
    p.add_argument("--models", type=_model_list, default=d.models,
                   help=f"comma-separated, from {', '.join(MODELS)} (default rnn,gru)")
    p.add_argument("--task", choices=TASKS, default=d.task,
                   help="adding: sum of two marked numbers; remember: name the first symbol "
                        f"(default {d.task})")
    p.add_argument("--length", type=_positive(int), default=None,
                   help=f"sequence length T (default {_per_task('length')})")
    p.add_argument("--hidden", type=_positive(int), default=d.hidden,
                   help=f"hidden size (default {d.hidden})")
    p.add_argument("--steps", type=_positive(int), default=d.steps,
                   help=f"training steps (default {d.steps})")
    p.add_argument("--batch", type=_positive(int), default=d.batch,
                   help=f"batch size (default {d.batch})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help=f"(default {d.optimizer})")
    p.add_argument("--lr", type=_positive(float), default=None,
                   help=f"learning rate (default {_per_task('lr')})")
    p.add_argument("--clip", type=_non_negative_float, default=d.clip,
                   help=f"clip the gradient norm to this value, 0 for none (default {d.clip})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--seeds", type=_positive(int), default=d.seeds,
                   help="train each model this many times, with seeds SEED, SEED+1, ...; "
                        f"the table and plots show the spread (default {d.seeds})")
    p.add_argument("--out", default=None,
                   help="output folder (default: a new runs/train-<task>-<time>)")
    p.set_defaults(func=cmd_train)

    # imported here: report_command imports UsageError and the parsers above from this module
    from . import report_command
    p = sub.add_parser("report", help="each time step's share of the gradient (RNN, GRU)",
                       description=report_command.DESCRIPTION, epilog=report_command.EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    report_command.add_arguments(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("check", help="engine gradients vs the hand-derived formulas",
                       description="Compare the engine's gradients with the hand-derived "
                                   "formulas of the notes (nn.manual), parameter by "
                                   "parameter; exit 1 if any difference exceeds its tolerance.",
                       epilog="examples:\n  bptt check\n  bptt check --models rnn "
                              "--perturb rnn.weight_hh_l0   (shows a failure)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_arguments(p)
    p.set_defaults(func=cmd_check, parser=p)

    p = sub.add_parser("graph", help="draw an unrolled RNN or GRU and count its paths",
                       description="Render the unrolled graph of a small RNN or GRU with "
                                   "Graphviz and report the backprop path counts of notes 000 "
                                   "and 001.",
                       epilog="examples:\n  bptt graph\n  bptt graph --model rnn --steps 3 "
                              "--format png --grad",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("gru", "rnn"), default="gru", help="(default gru)")
    p.add_argument("--steps", type=_positive(int), default=3, help="time steps (default 3)")
    p.add_argument("--format", choices=ag.viz.FORMATS, default="svg", help="(default svg)")
    p.add_argument("--grad", action="store_true", help="show each tensor's gradient norm")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=None, help="output folder (default: a new runs/graph-...)")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("bench", help="run the speed comparisons (ratios in one run)",
                       description="Time the engine against hand-written numpy and PyTorch "
                                   "eager (when installed) and print the ratio tables.",
                       epilog="examples:\n  bptt bench\n  bptt bench --quick --only per_op",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only this benchmark (repeatable)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="differentiate note 000's 3-step RNN and print gradients",
                       description=cmd_demo.__doc__, epilog="example: bptt demo --seed 1")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv or ["train"])
        if args.command is None:
            args = parser.parse_args(["train", *argv])
        return args.func(args)
    except UsageError as exc:
        print(f"{exc}\n(see {parser.prog} --help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bptt report | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
