"""`bptt train`: the main job (nn/cli/training.py) from the command line."""
import sys

from . import sizes, time_budget, training
from .arguments import UsageError, model_list, non_negative_float, positive, seed
from .run_folder import RunFolder, destination
from .training import MODELS, OPTIMIZERS, TASK_DEFAULTS, TASKS, TrainConfig

HELP = "train an RNN and a GRU on a long-range task"
DESCRIPTION = ("Train a vanilla RNN and a GRU on a synthetic long-range task and compare them: "
               "losses, accuracy, gradient norm per time step, checkpoints and plots.")
EPILOG = ("examples:\n  bptt train\n  bptt train --seeds 5\n  bptt train --length 100 --steps 1500"
          "\n  bptt train --task remember --models gru --out runs/mine")


def add_arguments(p):
    d = TrainConfig()
    p.add_argument("--models", type=model_list(MODELS), default=d.models,
                   help=f"comma-separated, from {', '.join(MODELS)} (default rnn,gru)")
    p.add_argument("--task", choices=TASKS, default=d.task,
                   help="adding: sum of two marked numbers; remember: name the first symbol "
                        f"(default {d.task})")
    p.add_argument("--length", type=positive(int), default=None,
                   help=f"sequence length T (default {_per_task('length')})")
    p.add_argument("--hidden", type=positive(int), default=d.hidden,
                   help=f"hidden size (default {d.hidden})")
    p.add_argument("--steps", type=positive(int), default=d.steps,
                   help=f"training steps (default {d.steps})")
    p.add_argument("--batch", type=positive(int), default=d.batch,
                   help=f"batch size (default {d.batch})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help=f"(default {d.optimizer})")
    p.add_argument("--lr", type=positive(float), default=None,
                   help=f"learning rate (default {_per_task('lr')})")
    p.add_argument("--clip", type=non_negative_float, default=d.clip,
                   help=f"clip the gradient norm to this value, 0 for none (default {d.clip})")
    p.add_argument("--seed", type=seed, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--seeds", type=positive(int), default=d.seeds,
                   help="train each model this many times, with seeds SEED, SEED+1, ...; "
                        f"the table and plots show the spread (default {d.seeds})")
    p.add_argument("--out", default=None,
                   help="output folder (default: a new runs/train-<task>-<time>)")


def _per_task(name):
    return ", ".join(f"{d[name]} for {task}" for task, d in TASK_DEFAULTS.items())


def config(args):
    """The TrainConfig of the parsed arguments, after every check that needs more than one."""
    cfg = TrainConfig(models=args.models, task=args.task, length=args.length,
                      hidden=args.hidden, steps=args.steps, batch=args.batch,
                      optimizer=args.optimizer, lr=args.lr, clip=args.clip, seed=args.seed,
                      seeds=args.seeds)
    if cfg.task == "adding" and cfg.length < 2:
        raise UsageError(f"bptt train: the adding task needs --length 2 or more (one marked "
                         f"number in each half), got {cfg.length}")
    inputs = cfg.symbols if cfg.task == "remember" else 2
    sizes.refuse_if_too_large("bptt train", cfg.models, cfg.hidden, cfg.batch, cfg.length,
                              itemsize=4, inputs=inputs)
    seconds = time_budget.train_seconds(cfg.models, cfg.steps, cfg.seeds, cfg.length,
                                        cfg.hidden, cfg.batch, inputs)
    time_budget.refuse_if_too_slow(
        "bptt train", seconds, f"--steps {cfg.steps} x --seeds {cfg.seeds} of --length "
                               f"{cfg.length} (--hidden {cfg.hidden}, --batch {cfg.batch})")
    return cfg


def run(args):
    cfg = config(args)
    out = destination(args.out, f"train-{cfg.task}", "bptt train")  # before anything is made
    print(f"task: {cfg.task}, length {cfg.length}; models {', '.join(cfg.models)}, hidden "
          f"{cfg.hidden}; {cfg.steps} steps of batch {cfg.batch}, {cfg.optimizer} lr {cfg.lr}, "
          f"clip {cfg.clip}; seed {cfg.seed}"
          + (f" to {cfg.seed + cfg.seeds - 1}" if cfg.seeds > 1 else ""))
    with RunFolder(out, "bptt train") as folder:
        rows, baseline, plots = training.run(cfg, folder, sys.stdout)
    print(f"\nresults (fresh data; baseline: {baseline})")
    print(table(rows))
    print(f"\nwritten to {out}/: {', '.join(f'{m}.npz' for m in cfg.models)} (checkpoints), "
          f"history.npz, config.json{''.join(', ' + p for p in plots)}")
    return 0


def table(rows):
    """Summary rows (dicts with the same keys) as an aligned text table."""
    header = list(rows[0])
    cells = [[f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in header]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
