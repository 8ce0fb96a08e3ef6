"""Losses, computed through log_softmax (stable) where probabilities are involved."""
import numpy as np

import autograd_core as ag

REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss, reduction, where, denominator=None):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if denominator is None else loss.sum() / denominator
    raise ValueError(f"{where}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _onehot(target, scores, axis):
    """Integer class indices as a one-hot array shaped like `scores` (classes on `axis`)."""
    return np.moveaxis(np.eye(scores.shape[axis], dtype=scores.dtype)[target], -1, axis)


def _checked_class_targets(where, target, scores, axis):
    """Integer class indices for `scores` (classes on `axis`), with named errors."""
    target = np.asarray(target.data if isinstance(target, ag.Tensor) else target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{where}: class targets must be integers, got dtype {target.dtype}")
    classes = scores.shape[axis]
    expected = scores.shape[:axis] + scores.shape[axis + 1:]
    if target.shape != expected:
        raise ValueError(f"{where}: target shape {target.shape} does not match input shape "
                         f"{scores.shape} without its class axis {axis} ({expected})")
    if target.size and (target.min() < 0 or target.max() >= classes):
        raise IndexError(f"{where}: target class out of range [0, {classes}) (min "
                         f"{target.min()}, max {target.max()})")
    return target


def nll_loss(log_probs, target, reduction="mean", weight=None, axis=-1):
    """Negative log-likelihood of integer class `target` under `log_probs` (classes on `axis`,
    the last by default). `weight` (C,) weights each class; the mean is then the weighted mean,
    as torch.nn.functional.nll_loss."""
    log_probs = ag.as_tensor(log_probs)
    return _nll("nll_loss", log_probs, target, reduction, weight,
                _class_axis("nll_loss", axis, max(log_probs.ndim, 1)))


def _check_reduction(where, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _class_axis(where, axis, ndim):
    if not -ndim <= axis < ndim:
        raise ValueError(f"{where}: axis {axis} is out of range for an input of {ndim} "
                         f"dimension{'s' if ndim != 1 else ''}")
    return axis % ndim


def _checked_weight(where, weight, classes):
    w = np.asarray(weight)
    if w.shape != (classes,):
        raise ValueError(f"{where}: weight must have shape ({classes},), got {w.shape}")
    return w


def _refuse_an_empty_mean(where, reduction, scores, axis):
    """The mean over no examples is undefined: refused (once the targets are known to fit)."""
    if reduction == "mean" and 0 in scores.shape[:axis] + scores.shape[axis + 1:]:
        raise ValueError(f"{where}: the mean over an empty batch is undefined (input of shape "
                         f"{scores.shape}); use reduction='sum' or 'none'")


def _nll(where, log_probs, target, reduction, weight, axis, checked=False):
    """-sum(log_probs * onehot(target)) reduced; `checked`: the caller has checked the targets
    and the weight (before recording anything)."""
    if not checked:
        _check_reduction(where, reduction)
        target = _checked_class_targets(where, target, log_probs, axis)
        if weight is not None:
            weight = _checked_weight(where, weight, log_probs.shape[axis])
    onehot = _onehot(target, log_probs, axis)
    if weight is None:
        return _reduce(-(log_probs * onehot).sum(axis=axis), reduction, where)
    picked = weight.astype(log_probs.dtype, copy=False)[target]
    loss = -(log_probs * onehot).sum(axis=axis) * picked
    return _reduce(loss, reduction, where, denominator=float(picked.sum()))


def cross_entropy(logits, target, reduction="mean", weight=None, axis=-1):
    """Softmax cross-entropy of `logits` (classes on `axis`, the last by default).

    `target` holds integer class indices (shape of logits without the class axis) or class
    probabilities (shape of logits). Computed as -log_softmax, so logits of any size are safe.
    """
    logits = ag.as_tensor(logits)
    if logits.ndim == 0:
        raise ValueError("cross_entropy: logits need a class axis, got a 0-d tensor")
    axis = _class_axis("cross_entropy", axis, logits.ndim)
    _check_reduction("cross_entropy", reduction)
    target_arr = target.data if isinstance(target, ag.Tensor) else np.asarray(target)
    if weight is None and axis == logits.ndim - 1 and target_arr.dtype.kind in "iu":
        if not target_arr.size and target_arr.shape == logits.shape[:-1]:
            _refuse_an_empty_mean("cross_entropy", reduction, logits, axis)
        try:  # its checks are this function's: targets are checked once, not twice
            if reduction == "mean" and logits.ndim == 2:  # a batch: one node
                return ag.mean_softmax_cross_entropy(logits, target_arr)
            return _reduce(ag.softmax_cross_entropy(logits, target_arr), reduction,
                           "cross_entropy")
        except (ValueError, IndexError) as error:
            failed = error
        _checked_class_targets("cross_entropy", target_arr, logits, axis)  # names this call
        raise failed
    # the targets and the weight are checked before anything is recorded
    probabilities = target_arr.dtype.kind == "f"
    if not probabilities:
        target_arr = _checked_class_targets("cross_entropy", target_arr, logits, axis)
    elif target_arr.shape != logits.shape:
        raise ValueError(f"cross_entropy: probability targets must have the logits' shape "
                         f"{logits.shape}, got {target_arr.shape}")
    if weight is not None:
        weight = _checked_weight("cross_entropy", weight, logits.shape[axis])
    _refuse_an_empty_mean("cross_entropy", reduction, logits, axis)
    log_probs = ag.log_softmax(logits, axis=axis)
    if probabilities:
        terms = log_probs * target
        if weight is not None:
            terms = terms * np.expand_dims(weight.astype(logits.dtype, copy=False),
                                           tuple(range(1, logits.ndim - axis)))
        return _reduce(-terms.sum(axis=axis), reduction, "cross_entropy")
    return _nll("cross_entropy", log_probs, target_arr, reduction, weight, axis, checked=True)


def sequence_cross_entropy(logits, targets, step_weights=None):
    """L = sum_t w_t L_t for logits (T, B, C) and integer targets (T, B), with L_t the
    batch-mean cross-entropy at step t. `step_weights` (T,) defaults to all ones; note 000's
    question is `step_weights=(0.1, 0.1, 0.8)`. One call, one graph."""
    logits = ag.as_tensor(logits)
    if logits.ndim != 3:
        raise ValueError(f"sequence_cross_entropy: logits must be (T, B, C), got "
                         f"{tuple(logits.shape)}")
    per_step = cross_entropy(logits, targets, reduction="none").mean(axis=1)
    per_step.name = "L"  # the notes' L_t; the notes-level drawing shows one per step
    if step_weights is None:
        return per_step.sum()
    w = np.asarray(step_weights, dtype=logits.dtype)
    if w.shape != (logits.shape[0],):
        raise ValueError(f"sequence_cross_entropy: step_weights must have shape "
                         f"({logits.shape[0]},) (one per time step), got {w.shape}")
    return (per_step * ag.Tensor(w, name="step_weights")).sum()


def mse_loss(input, target, reduction="mean"):
    """Mean squared error, as torch.nn.functional.mse_loss."""
    input, target = ag.as_tensor(input), ag.as_tensor(target)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape "
                         f"{target.shape} differ")
    diff = input - target
    return _reduce(diff * diff, reduction, "mse_loss")


def binary_cross_entropy_with_logits(logits, target, reduction="mean", pos_weight=None):
    """-[y log σ(x) + (1 - y) log(1 - σ(x))], computed as max(x, 0) - x y + log(1 + e^-|x|)
    (never overflows). `pos_weight` multiplies the positive term, as in torch."""
    logits, target = ag.as_tensor(logits), ag.as_tensor(target)
    if logits.shape != target.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: logits shape {logits.shape} and "
                         f"target shape {target.shape} differ")
    # -log σ(x) = max(-x, 0) + log(1 + e^-|x|); maximum splits its gradient at the tie x = 0,
    # which makes the derivative of the (smooth) sum exact there too.
    softplus_neg = ag.maximum(-logits, 0.0) + ag.log(1 + ag.exp(-ag.abs(logits)))
    if pos_weight is None:
        loss = (1 - target) * logits + softplus_neg
    else:
        pw = ag.as_tensor(np.asarray(pos_weight, dtype=logits.dtype))
        loss = (1 - target) * logits + (1 + (pw - 1) * target) * softplus_neg
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")
