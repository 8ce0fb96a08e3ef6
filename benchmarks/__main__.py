"""`python -m benchmarks [--only NAME] [--quick] [--list]`: run the benchmarks, print tables."""
import os

# Before numpy or torch is imported anywhere: one thread (the package __init__, which runs
# first under `python -m`, sets the same; repeated here so this file stands on its own).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import autograd_core as ag  # noqa: E402

from . import MODULES  # noqa: E402
from ._common import machine_info  # noqa: E402


def _load():
    """{NAME: module} for every module listed in MODULES, in order."""
    found = {}
    for mod_name in MODULES:
        mod = importlib.import_module(f"{__package__}.{mod_name}")
        found[getattr(mod, "NAME", mod_name)] = mod
    return found


def _one_thread():
    """threadpoolctl's limit where it is installed (covers a numpy imported earlier)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _cell(value, unit):
    if value is None:
        return "-"
    if isinstance(value, float):
        if unit == "x":
            return f"{value:.2f}x"
        a = abs(value)
        return f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}"
    return str(value)


def format_table(rows):
    """Rows (dicts) as an aligned text table; columns in order of first appearance."""
    columns = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    cells = [[_cell(row.get(c), row.get("unit")) for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows)
               for c in columns]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (may be repeated or comma-separated)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer warm-ups and repeats: a smoke run, not for quoting")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    ag.tune_malloc()  # as the `bptt` command does: the engine's speed as users run it
    ag.tune_gc()

    modules = _load()
    if args.list:
        for name, mod in modules.items():
            print(f"{name:12s} {getattr(mod, 'TITLE', '')}")
        return 0
    selected = list(modules)
    if args.only:
        wanted = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in modules]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; "
                         f"known: {', '.join(modules)}")
        selected = [n for n in selected if n in wanted]

    width = max(len(k) for k, _ in machine_info())
    for key, value in machine_info():
        print(f"{key.ljust(width)}  {value}")
    if args.quick:
        print("(--quick: fewer repeats; do not quote these numbers)")

    failed = []
    with _one_thread():
        for name in selected:
            mod = modules[name]
            print(f"\n== {name}: {getattr(mod, 'TITLE', '')}")
            t0 = time.perf_counter()
            try:
                rows = mod.run(quick=args.quick)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            print(format_table(rows))
            print(f"({time.perf_counter() - t0:.1f} s; medians of repeated runs, "
                  f"ratios from this run)")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
