"""Synthetic long-range tasks made in code (nothing is downloaded).

Both put the information the answer needs at the start of the sequence and ask for the answer
at the end, so the gradient that teaches it must travel back through every step: the
vanishing-gradient story of note 003.
"""
import numpy as np


def remember_first(batch, length, symbols=4, rng=None):
    """Inputs (length, batch, symbols) of random one-hot symbols; the target (batch,) is the
    FIRST symbol, to be named after the last step. Chance accuracy is 1/symbols."""
    _check("remember_first", batch=batch, length=length, symbols=symbols)
    rng = np.random.default_rng(rng)
    seq = rng.integers(0, symbols, size=(length, batch))
    xs = np.eye(symbols, dtype=np.float32)[seq]
    return xs, seq[0].copy()


def adding_problem(batch, length, rng=None):
    """Hochreiter & Schmidhuber's adding problem: inputs (length, batch, 2) hold a random value
    in [0, 1) and a marker; the target (batch,) is the sum of the two marked values (one in
    each half). Predicting the constant 1 gives a mean squared error of about 0.167."""
    _check("adding_problem", batch=batch, length=length)
    if length < 2:
        raise ValueError(f"adding_problem: length must be at least 2, got {length}")
    rng = np.random.default_rng(rng)
    values = rng.random((length, batch)).astype(np.float32)
    markers = np.zeros((length, batch), dtype=np.float32)
    half = length // 2
    first = rng.integers(0, half, size=batch)
    second = rng.integers(half, length, size=batch)
    cols = np.arange(batch)
    markers[first, cols] = 1
    markers[second, cols] = 1
    target = values[first, cols] + values[second, cols]
    return np.stack([values, markers], axis=-1), target.astype(np.float32)


def _check(where, **sizes):
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")
