"""Speed comparisons for autograd_core, printed as ratios measured in one run.

    ./dev.sh bench                  every benchmark
    ./dev.sh bench --only per_op    one of them
    ./dev.sh bench --quick          fewer repeats (a smoke run, not for quoting)

Each benchmark is a module of this package that exposes `NAME` (a short label) and
`run(quick=False)`, which returns a list of rows (dicts) that `__main__` prints as a table.
A row has `impl` (what was timed), `unit` and the measured columns; ratio rows use unit "x".
To add a benchmark, write the module and list it in `MODULES` below.
"""
import os

# numpy and torch read these when they are first imported: one thread everywhere, so the
# ratios compare single-core work. (`__main__` also applies threadpoolctl when it exists, for
# the case where numpy was imported before this package.)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
del _var

# The benchmark modules, in the order they run; the one place to list new ones. mlp, rnn and
# gru time a training step against torch and the lean hand-written numpy of numpy_reference;
# bptt_report measures how the per-step report grows with the length; unroll prints how the
# cost of a long unroll grows with its length.
MODULES = (
    "per_op",
    "mlp",
    "rnn",
    "gru",
    "bptt_report",
    "unroll",
)
