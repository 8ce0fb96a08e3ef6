"""exp in place with overflow and underflow ignored, at a fraction of np.errstate's cost.

`with np.errstate(over="ignore")` builds numpy's floating-point error state anew on every
entry: about 1 us, more than the exp of a small array (sigmoid runs it on every call). The
state it builds depends only on the state in force, so it is built once per state in force
and set and reset through the context variable numpy keeps it in. A numpy without that
variable (another major version) gets np.errstate itself.
"""
import numpy as np

try:
    from numpy._core._ufunc_config import _extobj_contextvar
    from numpy._core.umath import _make_extobj
except ImportError:  # pragma: no cover - numpy 1.x
    _extobj_contextvar = _make_extobj = None

_QUIET = {}  # the error state in force -> the same with overflow and underflow ignored


def exp_quietly(e):
    """e = exp(e), in place (`e` a float ndarray), without a warning or an error where it
    overflows to inf or underflows to 0; every other setting of np.errstate stays in force."""
    if _extobj_contextvar is None:  # pragma: no cover - numpy 1.x
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(e, out=e)
    now = _extobj_contextvar.get()
    quiet = _QUIET.get(now)  # the key keeps `now` alive: its identity is not reused
    if quiet is None:
        if len(_QUIET) > 32:  # states made by many distinct np.errstate(...) entries
            _QUIET.clear()
        quiet = _QUIET[now] = _make_extobj(over="ignore", under="ignore")
    token = _extobj_contextvar.set(quiet)
    try:
        return np.exp(e, out=e)
    finally:
        _extobj_contextvar.reset(token)
