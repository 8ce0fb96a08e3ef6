"""Overflow and underflow ignored for a few numpy calls, at a fraction of np.errstate's cost.

`with np.errstate(over="ignore")` builds numpy's floating-point error state anew on every
entry: about 1 us, more than the exp of a small array (sigmoid runs it on every call). The
state it builds depends only on the state in force, so it is built once per state in force and
set and reset through the context variable numpy keeps it in. A state with an error callback
(np.errstate(call=...)) is not kept, so that the callback is not kept alive. A numpy without
that variable, or where it no longer behaves as used here (checked once at import), gets
np.errstate itself.
"""
import numpy as np


def _numpy_error_state():
    """numpy's error-state variable and state maker, or (None, None) where this numpy has
    no such private names or they no longer behave as this module uses them."""
    try:
        from numpy._core._ufunc_config import _extobj_contextvar as variable
        from numpy._core.umath import _make_extobj as make
        token = variable.set(make(over="ignore", under="ignore"))
        try:
            works = np.geterr()["over"] == "ignore"
        finally:
            variable.reset(token)
        return (variable, make) if works else (None, None)
    except Exception:  # pragma: no cover - another numpy: np.errstate serves  # noqa: BLE001
        return None, None


_extobj_contextvar, _make_extobj = _numpy_error_state()

_QUIET = {}  # the error state in force -> the same with overflow and underflow ignored


def quiet():
    """Ignore overflow and underflow from here (every other np.errstate setting stays in
    force) until `restore(token)` with the token returned; use as try/finally."""
    if _extobj_contextvar is None:  # another numpy (see _numpy_error_state)
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
    if _extobj_contextvar is None:
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
