"""Refuse, before anything runs, a job that cannot finish within a minute.

`train --steps 1000000000` would otherwise run for months behind a progress bar, and `report
--length 500000` for many minutes. The estimates below are lower bounds: per-step costs
measured on a lightly loaded 2-core x86 machine (one BLAS thread), rounded down, so only a
job that surely takes longer than LIMIT_SECONDS is refused; a busier or slower machine takes
longer than estimated, never less.
"""
from .arguments import UsageError
from .sizes import GATES

LIMIT_SECONDS = 60

# Seconds per training step and time step at tiny sizes (the engine's per-op work: forward,
# backward, the optimizer and the periodic report); measured 20 us (RNN), 95 us (GRU).
TRAIN_STEP_SECONDS = {"rnn": 15e-6, "gru": 70e-6, "lstm": 80e-6}
# Seconds per time step of `bptt report` (forward, report, the sum check's backward);
# measured 0.35 ms (RNN) and 0.8 ms (GRU) at 1,000 and 2,000 steps.
REPORT_STEP_SECONDS = {"rnn": 2e-4, "gru": 5e-4, "lstm": 6e-4}
# Seconds per multiply-add of the matrix products (batch x gates*hidden x (hidden + inputs),
# forward and backward): measured 1.1e-10 to 6e-10 from hidden 32 to 256.
MULTIPLY_ADD_SECONDS = 1e-10
# `report --jacobian N` grows as N^2: N = 50 took 30 s (GRU, hidden 32).
JACOBIAN_SECONDS = 30 / 50 ** 2 / 2


def step_seconds(per_step, cell, hidden, batch, inputs):
    return per_step[cell] + MULTIPLY_ADD_SECONDS * batch * GATES[cell] * hidden * (hidden +
                                                                                   inputs)


def train_seconds(cells, steps, seeds, length, hidden, batch, inputs):
    """A lower bound of `bptt train`'s time."""
    return steps * seeds * length * sum(step_seconds(TRAIN_STEP_SECONDS, c, hidden, batch,
                                                     inputs) for c in cells)


def report_seconds(cells, length, hidden, batch, inputs, jacobian=None):
    """A lower bound of `bptt report`'s time."""
    seconds = length * sum(step_seconds(REPORT_STEP_SECONDS, c, hidden, batch, inputs)
                           for c in cells)
    return seconds + (0 if jacobian is None else len(cells) * JACOBIAN_SECONDS * jacobian ** 2)


def refuse_if_too_slow(where, seconds, what):
    """A UsageError when `seconds` (a lower bound) is over the limit; `what` names the
    sizes that decide it."""
    if seconds > LIMIT_SECONDS:
        raise UsageError(f"{where}: {what} would take at least {_duration(seconds)} on this "
                         f"machine, more than the {LIMIT_SECONDS} s a run may take; choose "
                         f"smaller sizes")


def _duration(seconds):
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.0f} s"
