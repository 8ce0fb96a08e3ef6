"""Anomaly mode: find the op that produced the first NaN or Inf, and where it was recorded.

    with ag.detect_anomaly():
        loss = model(x)
        loss.backward()      # AnomalyError naming the op whose derivative made a NaN/Inf,
                             # the time step, the parameters it read, and the line of user
                             # code that recorded that op

The forward stack of each recorded op is kept only while anomaly mode is on (it costs a
traceback per op), so ordinary runs pay nothing for it. Per thread, like grad mode.
"""
import functools
import os
import threading
import traceback
import warnings
import weakref

import numpy as np

from .grad_mode import _state, sync_recording


class AnomalyError(RuntimeError):
    """A NaN or Inf appeared in a gradient (or, when asked, in a forward value)."""


class HazardWarning(UserWarning):
    """An op received values that are about to make an Inf or NaN, or that let almost no
    gradient through (see `detect_anomaly(warn_hazards=True)`)."""


class _AnomalyState(threading.local):
    names = None  # {tensor: name} from detect_anomaly(params=...)
    hazards_warned = None  # keys warned in this block; None while hazard checks are off


_local = _AnomalyState()


class detect_anomaly:
    """Context manager (and decorator): check every gradient the backward sweep produces and
    raise AnomalyError at the first NaN or Inf. The message names the op, the time step it
    was recorded in (inside `ag.step_scope`), the parameters it read and the user's line.

    - `check_forward=True`: also check every op's forward output. Views (transpose, reshape,
      getitem, swapaxes, broadcast_to) only pass on values they were given and are not
      reported; the first op that computes with a non-finite parameter is, and the message
      says that the parameter already holds nan or inf.
    - `params`: a Module, a dict or (name, tensor) pairs naming the parameters, as for
      `trace_backward(params=...)`. Without it the parameters' own `name` is used: nn
      modules name their parameters after `named_parameters()` ('rnn.weight_hh_l0'), so
      `params=model` matters only for parameters named otherwise (a name the user set, a
      tensor shared between models). Where both name a tensor, `params` wins. A parameter
      is a leaf that requires grad and has a name, or a tensor named in `params`; inputs
      that are views of one (through transpose, reshape, getitem, swapaxes, broadcast_to)
      count as reading it. A nested block without `params` keeps the outer block's names.
    - `warn_hazards=True`: warn (HazardWarning) when an op receives values that are about
      to make an Inf or NaN, or that stop the gradient, before it happens:
        exp, and c ** x, x ** c, a ** b, of arguments whose result overflows the dtype
          (exp(x) for x > log(finfo(dtype).max): 88.7 in float32, 709.8 in float64);
        log of values at or below 1e-30 (log(0) = -inf, the derivative 1/x is > 1e30);
        div, x / c and c / x by values with |x| <= 1e-30;
        tanh and sigmoid with more than 99% of their units saturated, a unit being
          saturated when its output is within 0.01 of an asymptote (|tanh| > 0.99, where
          the derivative is below 0.02, 2% of its peak; sigmoid < 0.01 or > 0.99, where it
          is below 0.0099, 4% of its peak).
      Only recorded ops are checked (an input requires grad, grad mode is on). Each hazard
      warns once per detect_anomaly block for each (op, user's line, line that called the
      op): a 50-step loop or a recurrent layer's 50 time steps give one warning, for the
      first step where it happened. The warning is attributed to the user's line, and its
      message gives the op, the time step, the parameters read and the recording stack.
    """

    def __init__(self, check_forward=False, warn_hazards=False, params=None):
        self.check_forward = bool(check_forward)
        self.warn_hazards = bool(warn_hazards)
        if params is not None and not hasattr(params, "named_parameters") \
                and not isinstance(params, dict):
            params = list(params)  # pairs may be an iterator; a decorator enters many times
        self.params = params
        self._prev = []

    def __enter__(self):
        self._prev.append((_state.anomaly, _state.anomaly_forward, _local.names,
                           _local.hazards_warned))
        names = _local.names
        if self.params is not None:
            from .viz import param_names  # viz imports the engine, which imports this module
            names = param_names(self.params)
        _state.anomaly, _state.anomaly_forward = True, self.check_forward
        sync_recording()
        _local.names = names
        _local.hazards_warned = set() if self.warn_hazards else None
        return self

    def __exit__(self, *exc):
        (_state.anomaly, _state.anomaly_forward, _local.names,
         _local.hazards_warned) = self._prev.pop()
        sync_recording()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_forward, self.warn_hazards, self.params):
                return fn(*args, **kwargs)
        return wrapper


def is_anomaly_enabled():
    return _state.anomaly


# Frames inside the engine and nn are skipped to show the user's own line.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENGINE_DIR = os.path.join(_ROOT, "autograd_core") + os.sep
_OWN_FILES = (_ENGINE_DIR, os.path.join(_ROOT, "nn") + os.sep)

# id(tensor) -> (weak reference to it, the stack that recorded it), anomaly mode only; the entry
# goes with the tensor. (Keyed by id: tensors compare elementwise, so no WeakKeyDictionary.)
_origins = {}


def _forget(key):
    return lambda ref: _origins.pop(key, None)


def _origin(t):
    entry = _origins.get(id(t))
    return entry[1] if entry is not None and entry[0]() is t else None


def remember(out):
    """Keep where `out` was recorded (called by `record` in anomaly mode only); warn about
    hazards and check the forward value when asked."""
    frames = traceback.extract_stack()[:-2]
    _origins[id(out)] = (weakref.ref(out, _forget(id(out))), frames)
    if _local.hazards_warned is not None:
        _check_hazards(out, frames)
    if _state.anomaly_forward and not out.op.view:  # a view only passes values on
        data = out.data
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise AnomalyError(f"anomaly: the forward of {out.op.name} produced "
                               f"{_what(data)} (output shape {data.shape})"
                               f"{_scope(out)}{_params_text(out)}\n{_origin_text(out)}")


def _what(arr):
    return "nan" if np.isnan(arr).any() else "inf"


def _scope(t):
    return f", in time step {t.step}" if t.step is not None else ""


def _param_label(t):
    """'name' for a parameter or a view of one (with the view ops), else None."""
    names = _local.names or {}
    base, path = t, []
    while True:
        name = names.get(base)
        if name is None and base.op is None and base.requires_grad:
            name = base.name
        if name:
            break
        if base.op is None or not base.op.view or not _intact(base):
            return None
        path.append(base.op.name)
        base = base.inputs[0]
    notes = [f"through {' of '.join(path)}"] if path else []
    data = base.data
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        notes.append(f"which already holds {_what(data)}")
    return f"'{name}'" + (f" ({'; '.join(notes)})" if notes else "")


def _intact(t):
    """Whether t's recorded inputs are still there (not freed by a backward)."""
    try:
        return bool(t.inputs)
    except RuntimeError:
        return False


def _params_text(t):
    labels = []
    for inp in t.inputs:
        label = _param_label(inp)
        if label is not None and label not in labels:
            labels.append(label)
    if not labels:
        return ""
    return f", reading parameter{'s' if len(labels) > 1 else ''} {', '.join(labels)}"


def _user_frames(frames):
    return [f for f in frames if not os.path.abspath(f.filename).startswith(_OWN_FILES)]


def _origin_text(t):
    frames = _origin(t)
    if not frames:
        return "(recorded before anomaly mode was on: no forward trace)"
    shown = (_user_frames(frames) or frames)[-4:]
    return "the op was recorded at:\n" + "".join(traceback.format_list(shown)).rstrip()


def check_gradient(t, k, g):
    """Raise if the gradient `g` that the rule of `t` produced for input k is not finite."""
    arr = np.asarray(g)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        inp = t.inputs[k]
        label = f" '{inp.name}'" if inp.name else ""
        raise AnomalyError(
            f"anomaly: the backward of {t.op.name} produced {_what(arr)} in the gradient of "
            f"its input {k}{label} (shape {tuple(inp.shape)}){_scope(t)}{_params_text(t)}"
            f"{_forward_hint(t)}\n{_origin_text(t)}")


def _forward_hint(t):
    """Point at check_forward when the op's own values were already not finite."""
    for arr in (t.data, *(i.data for i in t.inputs)):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            return (f"; its forward values already held {_what(arr)}: "
                    f"detect_anomaly(check_forward=True) finds the op that made them")
    return ""


def _check_hazards(out, frames):
    check = out.op.hazard
    if check is None or out.data.dtype.kind != "f":
        return
    with np.errstate(all="ignore"):
        problem = check(out)
    if problem is None:
        return
    user = _user_frames(frames)
    # the line that called the op: the last frame outside the engine (may be inside nn)
    caller = [f for f in frames if not os.path.abspath(f.filename).startswith(_ENGINE_DIR)]
    where = (user or frames)[-1]
    called = (caller or frames)[-1]
    key = (out.op.name, where.filename, where.lineno, called.filename, called.lineno)
    if key in _local.hazards_warned:
        return
    _local.hazards_warned.add(key)
    message = (f"hazard at {out.op.name}{_scope(out)}{_params_text(out)}: {problem}. Later "
               f"{out.op.name} hazards from this line are not reported again in this "
               f"detect_anomaly block.\n{_origin_text(out)}")
    warnings.warn_explicit(message, HazardWarning, where.filename, where.lineno or 0)
