"""Anomaly mode: find the op that produced the first NaN or Inf, and where it was recorded.

    with ag.detect_anomaly():
        loss = model(x)
        loss.backward()      # AnomalyError naming the op whose derivative made a NaN/Inf,
                             # with the line of user code that recorded that op

The forward stack of each recorded op is kept only while anomaly mode is on (it costs a
traceback per op), so ordinary runs pay nothing for it. Per thread, like grad mode.
"""
import functools
import os
import traceback

import numpy as np

from .grad_mode import _state


class AnomalyError(RuntimeError):
    """A NaN or Inf appeared in a gradient (or, when asked, in a forward value)."""


class detect_anomaly:
    """Context manager (and decorator): check every gradient the backward sweep produces and
    raise AnomalyError at the first NaN or Inf; with `check_forward=True` also check every
    op's forward output."""

    def __init__(self, check_forward=False):
        self.check_forward = bool(check_forward)
        self._prev = []

    def __enter__(self):
        self._prev.append((_state.anomaly, _state.anomaly_forward))
        _state.anomaly, _state.anomaly_forward = True, self.check_forward
        return self

    def __exit__(self, *exc):
        _state.anomaly, _state.anomaly_forward = self._prev.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_forward):
                return fn(*args, **kwargs)
        return wrapper


def is_anomaly_enabled():
    return _state.anomaly


# Frames inside the engine and nn are skipped to show the user's own line.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OWN_FILES = tuple(os.path.join(_ROOT, p) + os.sep for p in ("autograd_core", "nn"))


def remember(out):
    """Keep where `out` was recorded (called by `record` in anomaly mode only)."""
    frames = traceback.extract_stack()[:-2]
    out._origin = frames
    if _state.anomaly_forward:
        data = out._data
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise AnomalyError(f"anomaly: the forward of {out._op.name} produced "
                               f"{_what(data)} (output shape {data.shape})"
                               f"{_scope(out)}\n{_origin_text(out)}")


def _what(arr):
    return "nan" if np.isnan(arr).any() else "inf"


def _scope(t):
    return f", in time step {t._step}" if t._step is not None else ""


def _origin_text(t):
    frames = getattr(t, "_origin", None)
    if not frames:
        return "(recorded before anomaly mode was on: no forward trace)"
    user = [f for f in frames if not os.path.abspath(f.filename).startswith(_OWN_FILES)]
    shown = (user or frames)[-4:]
    return "the op was recorded at:\n" + "".join(traceback.format_list(shown)).rstrip()


def check_gradient(t, k, g):
    """Raise if the gradient `g` that the rule of `t` produced for input k is not finite."""
    arr = g._data if hasattr(g, "_data") else np.asarray(g)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        inp = t._inputs[k]
        label = f" '{inp.name}'" if inp.name else ""
        raise AnomalyError(
            f"anomaly: the backward of {t._op.name} produced {_what(arr)} in the gradient of "
            f"its input {k}{label} (shape {tuple(inp.shape)}){_scope(t)}\n{_origin_text(t)}")
