"""Reproducible initialisation: every layer takes `rng` (a numpy Generator or an int seed);
without it, layers draw from one global generator that `manual_seed` resets."""
import numpy as np

_global_rng = np.random.default_rng()


def manual_seed(seed):
    """Reset the global generator, so a script that builds its models in the same order gets
    the same weights every run."""
    global _global_rng
    _global_rng = np.random.default_rng(seed)


def get_rng(rng=None):
    if rng is None:
        return _global_rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got "
                        f"{type(rng).__name__}")
    return rng


def uniform(shape, bound, rng, dtype):
    """U(-bound, bound), the initialisation torch uses for Linear and recurrent layers."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)
