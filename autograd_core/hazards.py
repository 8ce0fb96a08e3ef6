"""Hazard checks: values an op received that are about to make an Inf or NaN, or that let
almost no gradient through. Each op class names its check in `hazard` (see autograd_core.Op);
anomaly mode's `warn_hazards=True` runs it on every recorded op. A check takes the output
tensor and returns a message, or None when all is well."""
import numpy as np

TINY = 1e-30  # log and division hazards: |x| at or below this
SATURATED_SHARE = 0.99  # tanh / sigmoid hazard: more than this share of units saturated
SATURATION_MARGIN = 0.01  # a unit is saturated within this distance of an asymptote


def _overflow_limit(dtype):
    return float(np.log(np.finfo(dtype).max))


def _overflow(exponent, limit, what):
    """`what` overflows where the natural-log `exponent` of the result exceeds `limit`."""
    over = exponent > limit
    if not over.any():
        return None
    return (f"{what} overflows for {int(over.sum())} of {over.size} values (the log of the "
            f"result reaches {float(exponent[over].max()):.4g}, above {limit:.4g})")


def exp_overflow(out):
    return _overflow(out.inputs[0].data, _overflow_limit(out.data.dtype),
                     f"exp in {out.data.dtype}")


def rpow_overflow(out):
    c = out.saved
    if not c > 0:
        return None
    x = out.inputs[0].data
    return _overflow(x * np.log(c), _overflow_limit(out.data.dtype),
                     f"{c!r} ** x in {out.data.dtype}")


def pow_scalar_overflow(out):
    c = out.saved
    x = out.inputs[0].data
    return _overflow(c * np.log(np.abs(x)), _overflow_limit(out.data.dtype),
                     f"x ** {c!r} in {out.data.dtype}")


def pow_overflow(out):
    a, b = (t.data for t in out.inputs)
    return _overflow(b * np.log(np.abs(a)), _overflow_limit(out.data.dtype),
                     f"a ** b in {out.data.dtype}")


def _tiny(divisor, what):
    hit = np.abs(divisor) <= TINY
    if not hit.any():
        return None
    return (f"{what} with {int(hit.sum())} of {hit.size} divisors at |x| <= {TINY:g} "
            f"(smallest |x| {float(np.abs(divisor[hit]).min()):.3g}): the quotient and its "
            f"derivative blow up")


def log_near_zero(out):
    x = out.inputs[0].data
    hit = x <= TINY
    if not hit.any():
        return None
    return (f"log of {int(hit.sum())} of {hit.size} values at or below {TINY:g} (smallest "
            f"{float(x[hit].min()):.3g}): log is -inf at 0 and nan below, and its derivative "
            f"1/x exceeds {1 / TINY:g}")


def divisor_near_zero(out):
    return _tiny(out.inputs[1].data, "a / b")


def constant_divisor_near_zero(out):
    c = out.saved
    return f"division by the constant {c!r}" if abs(c) <= TINY else None


def reciprocal_near_zero(out):
    return _tiny(out.inputs[0].data, f"{out.saved!r} / x")


def _saturation(out, saturated, what, rule):
    y = out.data
    if y.size == 0:
        return None
    share = np.count_nonzero(saturated(y)) / y.size
    if share <= SATURATED_SHARE:
        return None
    return (f"{what} has {share:.1%} of its {y.size} units saturated ({rule}): almost no "
            f"gradient flows back through it")


def tanh_saturated(out):
    edge = 1 - SATURATION_MARGIN
    return _saturation(out, lambda y: np.abs(y) > edge, "tanh",
                       f"|tanh| > {edge:g}, derivative < {1 - edge * edge:.2g}")


def sigmoid_saturated(out):
    lo, hi = SATURATION_MARGIN, 1 - SATURATION_MARGIN
    return _saturation(out, lambda s: (s < lo) | (s > hi), "sigmoid",
                       f"outside [{lo:g}, {hi:g}], derivative < {lo * hi:.2g}")
