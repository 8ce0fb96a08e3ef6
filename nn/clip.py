"""Gradient clipping, the remedy of source note 003 for exploding gradients (as
torch.nn.utils.clip_grad_norm_ / clip_grad_value_). Gradients are changed in place."""
import math

import numpy as np

import autograd_core as ag

from autograd_core import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters, where):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = []
    for p in parameters:
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: expected Tensors (parameters), got {type(p).__name__}")
        if p.grad is not None:
            grads.append(p.grad)
    return grads


def _norm_type(norm_type):
    if isinstance(norm_type, str):
        if norm_type.lower() not in ("inf", "infinity"):
            raise ValueError(f"clip_grad_norm_: norm_type must be a number or 'inf', got "
                             f"{norm_type!r}")
        return math.inf
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 (or inf), got {norm_type}")
    return norm_type


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of `parameters` (a Tensor or an iterable; those without a gradient
    are skipped) so that their total `norm_type`-norm, taken over all of them as one vector,
    is at most `max_norm`. Returns the total norm before clipping, as a float.

    As torch: the factor is max_norm / (total + 1e-6), applied when it is below 1, so the
    clipped norm is just under max_norm. `norm_type` may be math.inf (or "inf"): the largest
    absolute value. With error_if_nonfinite, a nan or infinite total raises RuntimeError."""
    max_norm = float(max_norm)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    norm_type = _norm_type(norm_type)
    grads = _grads(parameters, "clip_grad_norm_")
    if not grads:
        return 0.0
    arrays = [np.asarray(g.numpy(), dtype=np.float64) for g in grads]
    if norm_type == math.inf:
        total = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in arrays)
    else:
        norms = np.array([np.linalg.norm(a.ravel(), ord=norm_type) if a.size else 0.0
                          for a in arrays])
        total = float(np.linalg.norm(norms, ord=norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is {total}, so they cannot be clipped; set "
                           f"error_if_nonfinite=False to go on anyway")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also scales when the total is nan, as torch does
        with ag.no_grad():
            for g in grads:
                g.mul_(coef)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient of `parameters` element-wise into [-clip_value, clip_value]."""
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    with ag.no_grad():
        for g in _grads(parameters, "clip_grad_value_"):
            g.copy_(np.clip(g.numpy(), -clip_value, clip_value))
