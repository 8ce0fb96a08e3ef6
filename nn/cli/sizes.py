"""Refuse, before anything is allocated, a run that cannot fit in this machine's memory.

`--hidden 1000000` or `--batch 100000000` would otherwise fail minutes later with a
MemoryError (or be killed); an estimate from the sizes is enough to say so at once.
"""
import os

from .arguments import UsageError

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# Bytes of the recorded graph per step, per sample and per hidden unit, in units of the
# item size: measured with ag.graph_stats(loss).backward_peak_bytes on the training job's
# models (RNN ~6.2, GRU ~22.5), rounded up.
GRAPH_ARRAYS_PER_UNIT = {"rnn": 7, "gru": 24, "lstm": 30}


def parameters(cell, inputs, hidden, outputs=None):
    """Parameter count of the job's model: a one-layer recurrent layer and a linear read-out."""
    outputs = inputs if outputs is None else outputs
    return GATES[cell] * hidden * (inputs + hidden + 2) + (hidden + 1) * outputs


def estimate(cell, hidden, batch, length, itemsize, inputs, training=True):
    """Peak bytes of one forward and backward of the job's model (and, when training, of the
    gradients and Adam's two moments; for a report, of every step's share of each weight)."""
    n = parameters(cell, inputs, hidden)
    graph = GRAPH_ARRAYS_PER_UNIT[cell] * length * batch * hidden + length * batch * inputs
    per_param = 4 if training else 2 + length  # report: the per-step shares of every weight
    return (graph + per_param * n) * itemsize


def available():
    """Bytes of memory available to a new allocation, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human(nbytes):
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.3g} {unit}"
        nbytes /= 1000


def refuse_if_too_large(where, cells, hidden, batch, length, itemsize, inputs, training=True,
                        limit=None):
    """A UsageError naming the estimate when the largest of `cells` needs more memory than is
    available (`limit`, by default what the machine has free)."""
    limit = available() if limit is None else limit
    if limit is None:
        return
    need, cell = max((estimate(c, hidden, batch, length, itemsize, inputs, training), c)
                     for c in cells)
    if need > limit:
        raise UsageError(f"{where}: --hidden {hidden}, --batch {batch}, --length {length} "
                         f"would need about {human(need)} of memory ({cell.upper()}), more than "
                         f"the {human(limit)} available; choose smaller sizes")
