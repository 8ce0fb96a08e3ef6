"""What every subcommand shares: the one-line usage error and the argument types.

Each type refuses what the jobs cannot use (a negative seed, a NaN learning rate) while the
arguments are parsed, so a bad request ends in one line before anything runs or is written.
"""
import argparse
import math

MAX_SEED = 2**63 - 1  # numpy's generators take any non-negative integer; keep it printable


class UsageError(Exception):
    """Bad arguments, an unusable output folder or a request too large for this machine: the
    command prints the one line and exits with code 2."""


def _number(kind, text):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive(kind):
    """An int or float greater than 0 (floats also finite)."""
    def parse(text):
        value = _number(kind, text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def non_negative_float(text):
    """A finite float >= 0 (for --clip, where 0 means no clipping)."""
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def seed(text):
    """A random seed: an integer from 0 to 2**63 - 1."""
    value = _number(int, text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63 - 1, got {text}")
    return value


def at_most(kind, limit, why):
    """A positive number no larger than `limit`; `why` ends the message when it is."""
    base = positive(kind)

    def parse(text):
        value = base(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"at most {limit}, got {text}: {why}")
        return value
    return parse


def model_list(choices):
    """Comma-separated names, each one of `choices`."""
    def parse(text):
        models = tuple(m.strip() for m in text.split(",") if m.strip())
        unknown = [m for m in models if m not in choices]
        if not models or unknown:
            raise argparse.ArgumentTypeError(f"unknown model {', '.join(unknown) or text!r}; "
                                             f"choose from {', '.join(choices)}")
        return models
    return parse
