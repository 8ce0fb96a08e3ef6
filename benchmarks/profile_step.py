"""Run autograd_core's training step of one benchmark workload repeatedly, for a profiler.

    .venv/bin/python -m cProfile -s tottime -m benchmarks.profile_step gru
    .venv/bin/python -m cProfile -s tottime -m benchmarks.profile_step gru --variant torch
    .venv/bin/python -m cProfile -s tottime -m benchmarks.profile_step mlp --steps 2000

Not a benchmark (it is not in MODULES): the same workloads as `mlp`, `rnn` and `gru`
(float32, one thread), a few untimed warm-up steps, then `--steps` forward + backward steps
with the gradients forgotten before each, as in training. Note that cProfile does not see
numpy's ufuncs and matmul as separate entries: their time counts in the Python function that
called them (the op's forward, the rule's backward, or the engine's sweep for accumulations).
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step")
    parser.add_argument("model", choices=("mlp", "rnn", "gru"))
    parser.add_argument("--variant", default="notes", choices=("notes", "torch"),
                        help="GRU form (gru only)")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)

    import numpy as np

    import autograd_core as ag
    import nn

    from . import _steps, mlp

    if args.model == "mlp":
        rng = np.random.default_rng(mlp.SEED)
        model = nn.MLP(list(mlp.SIZES), activation="tanh", rng=rng)
        x = ag.Tensor(rng.standard_normal((mlp.BATCH, mlp.SIZES[0])).astype(np.float32))
        y = rng.integers(0, mlp.SIZES[-1], mlp.BATCH)

        def loss():
            return nn.cross_entropy(model(x), y)
    else:
        kwargs = {"variant": args.variant} if args.model == "gru" else {}
        model, _, xs, targets = _steps.sequence_task(args.model, **kwargs)
        xt = ag.Tensor(xs)

        def loss():
            return model.loss(xt, targets)

    for _ in range(3):
        model.zero_grad()
        loss().backward()
    for _ in range(args.steps):
        model.zero_grad()
        loss().backward()


if __name__ == "__main__":
    main()
