"""`bptt bench`: the speed comparisons of benchmarks/, which live in the source tree.

The benchmarks are not part of the installed package (they compare against PyTorch and a
hand-written numpy reference, and are run from a clone), so from an installed package this
command says so instead of running.
"""
import pathlib
import subprocess
import sys

from .arguments import UsageError

HELP = "run the speed comparisons (ratios in one run; needs the source tree)"
DESCRIPTION = ("Time the engine against hand-written numpy and PyTorch eager (when installed) "
               "and print the ratio tables. The benchmarks ship with the source tree (a clone "
               "of the repository), not with an installed package.")
EPILOG = "examples:\n  bptt bench\n  bptt bench --quick --only per_op"


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only this benchmark (repeatable)")


def source_tree():
    """The repository root holding nn/ and benchmarks/, or None for an installed package."""
    root = pathlib.Path(__file__).resolve().parents[2]
    # pyproject.toml too: site-packages may hold some other distribution's `benchmarks`
    if (root / "pyproject.toml").is_file() and (root / "benchmarks" / "__main__.py").is_file():
        return root
    return None


def run(args):
    root = source_tree()
    if root is None:
        raise UsageError("bptt bench: the benchmarks are in the source tree, not in the "
                         "installed package; clone the repository and run ./dev.sh bench there")
    extra = (["--quick"] if args.quick else []) + sum((["--only", n] for n in args.only), [])
    return subprocess.call([sys.executable, "-m", "benchmarks", *extra], cwd=root)
