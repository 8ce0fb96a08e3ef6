"""Overflow and underflow ignored for a few numpy calls, at a fraction of np.errstate's cost.

`with np.errstate(over="ignore")` builds numpy's floating-point error state anew on every
entry: about 1 us, more than the exp of a small array (sigmoid runs it on every call). The
state it builds depends only on the state in force, so it is built once per state in force and
set and reset through the context variable numpy keeps it in. A state with an error callback
(np.errstate(call=...)) is not kept, so that the callback is not kept alive. A numpy without
that variable (another major version) gets np.errstate itself.
"""
import numpy as np

try:
    from numpy._core._ufunc_config import _extobj_contextvar
    from numpy._core.umath import _make_extobj
except ImportError:  # pragma: no cover - numpy 1.x
    _extobj_contextvar = _make_extobj = None

_QUIET = {}  # the error state in force -> the same with overflow and underflow ignored


def quiet():
    """Ignore overflow and underflow from here (every other np.errstate setting stays in
    force) until `restore(token)` with the token returned; use as try/finally."""
    if _extobj_contextvar is None:  # pragma: no cover - numpy 1.x
        token = np.errstate(over="ignore", under="ignore")
        token.__enter__()
        return token
    now = _extobj_contextvar.get()
    quiet_state = _QUIET.get(now)  # the key keeps `now` alive: its identity is not reused
    if quiet_state is None:
        quiet_state = _make_extobj(over="ignore", under="ignore")
        if np.geterrcall() is None:  # a callback would be kept alive by the cache
            if len(_QUIET) > 32:  # states made by many distinct np.errstate(...) entries
                _QUIET.clear()
            _QUIET[now] = quiet_state
    return _extobj_contextvar.set(quiet_state)


def restore(token):
    """Undo the `quiet()` that returned `token`."""
    if _extobj_contextvar is None:  # pragma: no cover - numpy 1.x
        token.__exit__(None, None, None)
    else:
        _extobj_contextvar.reset(token)


def exp_quietly(e):
    """e = exp(e), in place (`e` a float ndarray), without a warning or an error where it
    overflows to inf or underflows to 0."""
    token = quiet()
    try:
        return np.exp(e, out=e)
    finally:
        restore(token)
