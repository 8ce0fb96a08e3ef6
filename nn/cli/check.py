"""`bptt check`: the engine's gradients against the hand-derived formulas of the notes
(nn.compare and nn.manual), parameter by parameter; exit 1 if any differs."""
from ..compare import DEFAULT_MODELS, DTYPES, MODELS, compare, format_table
from . import check_mine
from .arguments import UsageError, model_list, seed

HELP = "engine gradients vs the hand-derived formulas"
DESCRIPTION = ("Compare the engine's gradients with the hand-derived formulas of the notes "
               "(nn.manual), parameter by parameter; exit 1 if any difference exceeds its "
               "tolerance.")
EPILOG = ("examples:\n  bptt check\n  bptt check --models rnn --perturb rnn.weight_hh_l0   "
          "(shows a failure)\n  bptt check --mine my_backward.py --model gru --steps 5   "
          "(your own backward)")


def add_arguments(p):
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--models", type=model_list(MODELS), default=DEFAULT_MODELS,
                   help=f"comma-separated, from {', '.join(MODELS)} "
                        f"(default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float64",
                   help="the engine's float type (default float64)")
    p.add_argument("--perturb", metavar="NAME", default=None,
                   help="add a small error to the engine gradient of parameter NAME "
                        "(or MODEL:NAME) to show that the check fails")
    check_mine.add_arguments(p, seed=False)


def run(args):
    """Print the comparison table; 0 when all agree, 1 otherwise."""
    if args.mine is not None or args.model is not None or args.steps is not None:
        return check_mine.run(args)  # bptt check --mine FILE.py: a learner's backward
    try:
        rows = compare(seed=args.seed, models=args.models, dtype=DTYPES[args.dtype],
                       perturb=args.perturb)
    except ValueError as exc:  # an unknown --perturb name
        raise UsageError(f"bptt check: {exc}") from None
    print(format_table(rows))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"\n{len(bad)} of {len(rows)} differences exceed their tolerance: "
              + ", ".join(f"{r.model} {r.parameter}" for r in bad))
        return 1
    print(f"\nall {len(rows)} differences within tolerance")
    return 0
