"""Writes docs/bptt_report.png: how much each of T = 50 steps contributes to the gradient of
weight_hh_l0 (note 003: delta_t s_{t-1}^T) when only the last step has a loss, for an untrained
RNN and an untrained GRU. Nothing is trained. Step 1 has no point on the log scale: with
h_0 = 0 its share delta_1 h_0^T is exactly zero.

    python docs/make_bptt_plot.py
"""
import pathlib

import numpy as np

import autograd_core as ag
import nn
from nn.plots import log_plot

T, BATCH, INPUTS, HIDDEN, CLASSES, SEED = 50, 8, 4, 16, 3, 0
OUT = pathlib.Path(__file__).resolve().parent / "bptt_report.png"


def report_for(cell):
    rng = np.random.default_rng(SEED)
    model = nn.RecurrentClassifier(INPUTS, HIDDEN, CLASSES, cell=cell, rng=SEED).double()
    xs = ag.Tensor(rng.normal(size=(T, BATCH, INPUTS)))
    targets = rng.integers(0, CLASSES, (T, BATCH))
    logits, hidden, _ = model(xs)
    loss = nn.sequence_cross_entropy(logits, targets, step_weights=np.eye(T)[-1])
    return nn.bptt_report(loss, model, hidden)


def main():
    steps = np.arange(1, T + 1)
    curves = {}
    for cell in ("rnn", "gru"):
        report = report_for(cell)
        curves[f"{cell.upper()} (decay {report.decay_rate:.3f}/step, {report.verdict})"] = (
            steps, report.contribution_norms["rnn.weight_hh_l0"])
        print(f"{cell}: decay rate {report.decay_rate:.4f} per step back, {report.verdict}")
    log_plot(curves, OUT, "time step t", "||contribution of step t to dL/dW_hh||",
             f"Per-step share of dL/dW_hh, loss on step {T} only (untrained, seed {SEED})")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
