"""How `nn.bptt_report` grows with the sequence length, against one plain backward.

The GRU of `bptt train` (hidden 32, batch 8, the adding task, float64, as `bptt report` runs
it) at lengths T, 2T, 4T. The report is one reverse sweep plus the carrying of each step's
share down to the parameters, so both it and loss.backward() should grow linearly: each
doubling of the length about doubles the time (ratio near 2; a quadratic cost gives 4).
Reported: milliseconds per length, the growth from the length before, and report / backward.
"""
import statistics
import time

import numpy as np

from nn.bptt_report import bptt_report
from nn.cli.training import SequenceModel, TrainConfig, task_setup

NAME = "bptt_report"
TITLE = "bptt_report's growth with the length T (GRU, hidden 32, batch 8, float64)"

LENGTHS = (500, 1000, 2000)
QUICK_LENGTHS = (200, 400, 800)
HIDDEN, BATCH = 32, 8


def _case(length):
    cfg = TrainConfig(task="adding", length=length, hidden=HIDDEN)
    make, n_in, n_out, score, _ = task_setup(cfg)
    model = SequenceModel("gru", n_in, HIDDEN, n_out, rng=0).double()
    xs, target = make(BATCH, np.random.default_rng(0))
    xs = xs.astype(np.float64)

    def forward():
        pred, hidden = model(xs)
        return score(pred, target)[0], hidden
    return model, forward


def _median_seconds(setup, fn, repeats):
    times = []
    for _ in range(repeats):
        state = setup()  # the forward pass, not timed
        t0 = time.perf_counter()
        fn(*state)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick=False):
    lengths, repeats = (QUICK_LENGTHS, 1) if quick else (LENGTHS, 3)
    report_ms, backward_ms = {}, {}
    for length in lengths:
        model, forward = _case(length)
        report_ms[length] = 1e3 * _median_seconds(
            forward, lambda loss, hidden: bptt_report(loss, model, hidden), repeats)
        backward_ms[length] = 1e3 * _median_seconds(
            forward, lambda loss, hidden: loss.backward(), repeats)
    rows = []
    for name, ms in (("bptt_report", report_ms), ("loss.backward()", backward_ms)):
        rows.append({"impl": name, "unit": "ms", **{f"T={t}": ms[t] for t in lengths}})
    for name, ms in (("bptt_report", report_ms), ("loss.backward()", backward_ms)):
        growth = {f"T={t}": ms[t] / ms[prev] for prev, t in zip(lengths, lengths[1:])}
        rows.append({"impl": f"{name}: growth from T/2", "unit": "x", **growth})
    rows.append({"impl": "bptt_report / loss.backward()", "unit": "x",
                 **{f"T={t}": report_ms[t] / backward_ms[t] for t in lengths}})
    return rows
