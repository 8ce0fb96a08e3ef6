"""The `bptt report` job: where BPTT's gradient comes from, step by step, for the models of
`bptt train` (untrained, or loaded from a `bptt train` output folder).

The model, the task data and the loss are train's own (`SequenceModel`, `task_setup`), run in
float64 so that the sum check sits at rounding level. The report covers the recurrent layer's
parameters: the read-out after the last step gets its gradient without passing through time.
"""
import math
import pathlib

import numpy as np

from ..bptt_report import bptt_report
from ..diagnostics import step_states
from . import sizes, time_budget, trained
from .arguments import UsageError, model_list, positive, seed
from .run_folder import RunFolder, destination
from .training import MODELS, TASKS, SequenceModel, TrainConfig, saved_length, task_setup

JACOBIAN_STATES = 10  # --jacobian without a number: states 1..10 (GRU, hidden 32: ~2 s)
JACOBIAN_TOL = 1e-6  # the table prints 5 significant digits; 1e-10 costs 1.5x the iterations
TAIL_ROWS = 5  # a long table shows every k-th step and always the last few
FULL_TABLE_UP_TO = 20

_WHERE = "bptt report"

HELP = "each time step's share of the gradient (RNN, GRU)"
DESCRIPTION = """\
Split the gradient of each recurrent weight into the share of every time step (note 003:
dL/dW = sum_t delta_t s_{t-1}^T) from one reverse sweep, beside ||dL/dh_t||, for the RNN and
the GRU of `bptt train` on one batch of its task. Prints, per model, the table (t, ||dL/dh_t||,
the norm of step t's share of each parameter's gradient), the fitted per-step decay of
||dL/dh_t|| with its verdict (vanishing below 0.9, exploding above 1.1), and the sum check: the
steps' shares add up to the gradient loss.backward() computes (max abs difference).
Writes <model>_bptt.npz (every array, every step) and <model>_bptt.png (matplotlib) to --out.

Without --checkpoint the models are untrained: the initial weights `bptt train --seed S`
starts from. With --checkpoint FOLDER they are the trained weights of that run; the hidden
size and the task come from the checkpoint, and the length from the run's config.json (pass
--length to report another length)."""

EPILOG = """\
examples:
  bptt report
  bptt report --models rnn --length 100 --all-steps
  bptt report --checkpoint runs/train-adding-20250101-120000
  bptt report --task remember --every-step
  bptt report --models gru --jacobian 20"""


def add_arguments(p):
    d = TrainConfig()
    p.add_argument("--models", type=model_list(MODELS), default=None,
                   help=f"comma-separated, from {', '.join(MODELS)} (default rnn,gru, or "
                        f"those in --checkpoint)")
    p.add_argument("--task", choices=TASKS, default=None,
                   help=f"adding or remember, as in train (default {d.task}, or the "
                        f"checkpoint's)")
    p.add_argument("--length", type=positive(int), default=None,
                   help="sequence length T (default the task's, as in train, or the length "
                        "the --checkpoint run trained on)")
    p.add_argument("--hidden", type=positive(int), default=None,
                   help=f"hidden size (default {d.hidden}, or the checkpoint's)")
    p.add_argument("--batch", type=positive(int), default=8, help="batch size (default 8)")
    p.add_argument("--seed", type=seed, default=d.seed,
                   help=f"seed of the initial weights and of the data (default {d.seed})")
    p.add_argument("--checkpoint", metavar="FOLDER", default=None,
                   help="a `bptt train` output folder: report its trained rnn.npz / gru.npz")
    loss = p.add_mutually_exclusive_group()
    loss.add_argument("--last-step-only", dest="every_step", action="store_false",
                      help="the loss train optimises: the answer read from h_T only, so "
                           "||dL/dh_t|| is purely what BPTT carries back (the default; the "
                           "decay is clearest)")
    loss.add_argument("--every-step", dest="every_step", action="store_true",
                      help="the same loss on the read-out of every step, averaged: each "
                           "||dL/dh_t|| then adds a direct term, which hides the decay")
    p.set_defaults(every_step=False)
    p.add_argument("--all-steps", action="store_true",
                   help=f"print every row (by default a table longer than "
                        f"{FULL_TABLE_UP_TO} steps shows step 1, about ten evenly spaced "
                        f"steps and the last {TAIL_ROWS}; the .npz always has every step)")
    p.add_argument("--jacobian", type=positive(int), nargs="?", const=JACOBIAN_STATES,
                   default=None, metavar="N",
                   help=f"also print sigma_max(dh_(t+1)/dh_t) for states 1..N (default N "
                        f"{JACOBIAN_STATES}); slow: the cost grows as N^2 (GRU, hidden 32, "
                        f"N = 50: ~30 s)")
    p.add_argument("--out", default=None,
                   help="output folder (default: a new runs/report-<task>-<time>)")


def run(args):
    d = TrainConfig()
    # before any model is built: an untrained model of --hidden 1000000 alone is terabytes
    _refuse_if_too_large(args, args.length or TrainConfig(task=args.task or d.task).length)
    models = load_models(args)  # every check before the output folder is made
    tasks = {cfg.task for _, _, cfg in models.values()}
    if len(tasks) > 1:
        raise UsageError(f"{_WHERE}: the checkpoints were trained on different tasks "
                         f"({', '.join(sorted(tasks))}); report one model at a time")
    task = tasks.pop()
    if args.length is None:
        saved = None if args.checkpoint is None else saved_length(pathlib.Path(args.checkpoint))
        args.length = saved or TrainConfig(task=task).length
        _refuse_if_too_large(args, args.length)
    for _, _, cfg in models.values():
        cfg.length = args.length
    if task == "adding" and args.length < 2:
        raise UsageError(f"{_WHERE}: the adding task needs --length 2 or more (one marked "
                         f"number in each half)")
    if args.jacobian is not None and args.jacobian < 2:
        raise UsageError(f"{_WHERE}: --jacobian needs at least 2 states, got {args.jacobian}")
    if args.jacobian is not None and args.length < 2:
        raise UsageError(f"{_WHERE}: --jacobian needs --length 2 or more")
    out = destination(args.out, f"report-{task}", _WHERE)
    print(f"task: {task}, length {args.length}, batch {args.batch}, seed {args.seed}; loss "
          f"{'on every step (averaged)' if args.every_step else 'on the last step only'}; "
          f"float64")
    print("each row t: ||dL/dh_t|| and the norm of step t's share of each parameter's "
          "gradient\n(delta_t s_(t-1)^T for W_hh, note 003); the shares add up to the gradient")
    with RunFolder(out, _WHERE) as folder:
        written, no_plot = _report_all(models, task, folder, args)
    if no_plot:
        print("\nmatplotlib is not installed: no plots (pip install matplotlib)")
    print(f"\nwritten to {out}/: {', '.join(written)}")
    return 0


def _refuse_if_too_large(args, length):
    """Refused before anything is built: more memory than the machine has, or more than a
    minute."""
    d = TrainConfig()
    cells, hidden = args.models or d.models, args.hidden or d.hidden
    sizes.refuse_if_too_large(_WHERE, cells, hidden, args.batch, length, itemsize=8,
                              inputs=d.symbols, training=False)
    seconds = time_budget.report_seconds(cells, length, hidden, args.batch, d.symbols,
                                         jacobian=args.jacobian)
    time_budget.refuse_if_too_slow(
        _WHERE, seconds, f"--length {length}" + ("" if args.jacobian is None else
                                                  f" and --jacobian {args.jacobian}")
        + f" (--hidden {hidden}, --batch {args.batch})")


def _report_all(models, task, folder, args):
    """Print each model's report and write its files into `folder`; returns (the file names
    written, whether plots were skipped for want of matplotlib)."""
    written, no_plot = [], False
    for cell, (model, source, cfg) in models.items():
        print(f"\n== {cell}: hidden {cfg.hidden}, {source}")
        report, loss, states = _report(model, cfg, args)
        print(_shown_rows(report.table(), args.length, args.all_steps))
        print(_decay_line(report, args.length))
        if args.jacobian is not None:
            print(_jacobian_table(loss, model, states, args))
        print(_sum_check(report, loss, model))
        report.save_npz(folder / f"{cell}_bptt.npz")
        written.append(f"{cell}_bptt.npz")
        try:
            report.plot(folder / f"{cell}_bptt.png", names=_weight_names(report),
                        title=f"{cell.upper()}, {task} task, T = {args.length}: "
                              f"each step's share of the gradient")
            written.append(f"{cell}_bptt.png")
        except ImportError:
            no_plot = True
    return written, no_plot


# ---- models ------------------------------------------------------------------------------
def load_models(args):
    """cell -> (float64 model, where its weights come from, TrainConfig of its task), from
    the parsed arguments; a bad choice or an unusable checkpoint is a UsageError."""
    if args.checkpoint is None:
        task = args.task or TrainConfig().task
        hidden = args.hidden or TrainConfig().hidden
        cfg = TrainConfig(task=task, length=args.length, hidden=hidden, seed=args.seed)
        # (length None is the task's default here; run() sets the final one)
        _, n_in, n_out, _, _ = task_setup(cfg)
        return {cell: (SequenceModel(cell, n_in, hidden, n_out, rng=args.seed).double(),
                       f"untrained (the initial weights of bptt train --seed {args.seed})", cfg)
                for cell in args.models or TrainConfig().models}
    folder = pathlib.Path(args.checkpoint)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise UsageError(f"{_WHERE}: --checkpoint {folder} {what}; pass the folder bptt train "
                         f"wrote (it holds rnn.npz and/or gru.npz)")
    cells = args.models or tuple(c for c in MODELS if (folder / f"{c}.npz").is_file())
    if not cells:
        trained.find(folder, _WHERE)  # says the folder holds neither
    return {cell: _load_one(cell, trained.find(folder, _WHERE, cell), args) for cell in cells}


def _load_one(cell, path, args):
    model, _, cfg = trained.load(path, _WHERE, cell)
    if args.task not in (None, cfg.task):
        raise UsageError(f"{_WHERE}: {path} was trained on the {cfg.task} task, not "
                         f"{args.task}; drop --task")
    if args.hidden not in (None, cfg.hidden):
        raise UsageError(f"{_WHERE}: {path} has hidden size {cfg.hidden}, not {args.hidden}; "
                         f"drop --hidden")
    cfg.seed = args.seed  # the length: run() sets it (the run's own, unless --length)
    return model, f"trained weights from {path}", cfg


# ---- the report --------------------------------------------------------------------------
def _report(model, cfg, args):
    """(BPTTReport, loss, hidden states) on one fresh batch of the task."""
    make, _, _, score, _ = task_setup(cfg)
    # the batch train's gradient-flow diagnostic draws from: fresh data, not a training batch
    xs, target = make(args.batch, np.random.default_rng(args.seed + 20_000))
    pred, hidden = model(xs.astype(np.float64))
    if args.every_step:
        steps = [score(model.out(hidden[t]), target)[0] for t in range(args.length)]
        loss = sum(steps[1:], steps[0]) / args.length
    else:
        loss, _ = score(pred, target)
    recurrent = {n: p for n, p in model.named_parameters() if n.startswith("rnn.")}
    return bptt_report(loss, recurrent, hidden), loss, step_states(hidden)


def _shown_rows(table, length, all_steps):
    """The table with every k-th row and the last few when it is longer than a screen."""
    lines = table.splitlines()
    if all_steps or length <= FULL_TABLE_UP_TO:
        return table
    every = math.ceil(length / 10)
    keep = {1, *range(every, length + 1, every), *range(length - TAIL_ROWS + 1, length + 1)}
    rows = [lines[t] for t in sorted(keep)]  # line t holds step t
    note = (f"(step 1, every {every} steps and the last {TAIL_ROWS} of {length}; "
            f"--all-steps prints all)")
    outside, decay = lines[length + 1:]
    return "\n".join([lines[0], *rows, outside, note, decay])


def _decay_line(report, length):
    norms = report.state_grad_norms
    if length < 2 or norms[-1] == 0:
        return "(one step or a zero gradient: no decay to measure)"
    ratio = norms[0] / norms[-1]
    rate = report.decay_rate
    line = f"||dL/dh_1|| / ||dL/dh_{length}|| = {ratio:.3g}"
    if report.verdict in ("vanishing", "exploding"):
        steps = abs(math.log(10) / math.log(rate))
        trend = "smaller" if rate < 1 else "larger"
        line += f": 10x {trend} every {steps:.3g} steps back"
    return line


def _jacobian_table(loss, model, states, args):
    from ..jacobians import jacobian_report
    n = min(args.jacobian, args.length)
    jac = jacobian_report(states[:n], loss, model, tol=JACOBIAN_TOL)
    lines = [f"\nJacobians of states 1..{n} (T below is {n}): sigma_k = largest singular "
             f"value of dh_(k+1)/dh_k (max over the batch); their product bounds the ratio",
             jac.table()]
    if args.every_step:
        lines.append("(with --every-step the loss also reads each h_k directly, so the "
                     "product does not bound the ratio)")
    return "\n".join(lines) + "\n"


def _sum_check(report, loss, model):
    """Max |shares summed - dL/dparam| over the reported parameters. Runs loss.backward(),
    so it comes after everything else that needs the graph."""
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters() if n in report.contributions}
    diff = max(np.abs(report.total(n) - g).max() for n, g in grads.items())
    largest = max(np.abs(g).max() for g in grads.values())
    return (f"sum check: steps' shares summed vs loss.backward(): max abs difference "
            f"{diff:.2g} (largest gradient entry {largest:.3g})")


def _weight_names(report):
    return [n for n in report.contributions if ".weight_" in n]

