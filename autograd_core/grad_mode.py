"""Grad mode: whether new operations are recorded. Per thread, like PyTorch's."""
import functools
import threading

class _ThreadState(threading.local):
    enabled = True  # class defaults: every new thread starts with grad mode on
    step = None  # the time step that new nodes are recorded in (see step_scope)
    anomaly = False  # see anomaly.detect_anomaly
    anomaly_forward = False
    recorder = None  # while ag.replay records a call (see replayer._Recorder)
    # What function.record reads, one thread-local read per op (each costs ~40 ns): None
    # while grad mode is off, else (step, anomaly). Every change of the three goes through
    # sync_recording.
    recording = (None, False)


_state = _ThreadState()


def sync_recording():
    """Bring `_state.recording` in line with `enabled`, `step` and `anomaly`."""
    s = _state
    s.recording = (s.step, s.anomaly) if s.enabled else None


def is_grad_enabled():
    """True when operations on tensors that require grad are recorded (the default)."""
    return _state.enabled


def _set_enabled(value):
    _state.enabled = bool(value)
    sync_recording()


class set_grad_enabled:
    """Context manager (and decorator) that sets grad mode for the current thread."""

    def __init__(self, mode=True):
        self.mode = bool(mode)
        self._prev = []

    def __enter__(self):
        self._prev.append(is_grad_enabled())
        _set_enabled(self.mode)
        return self

    def __exit__(self, *exc):
        _set_enabled(self._prev.pop())
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(self.mode):
                return fn(*args, **kwargs)

        return wrapper


class no_grad(set_grad_enabled):
    """`with no_grad():` (or `@no_grad` / `@no_grad()`) records nothing: results never
    require grad."""

    def __new__(cls, fn=None):
        if fn is not None:  # used as a bare decorator: @no_grad
            return cls()(fn)
        return super().__new__(cls)

    def __init__(self, fn=None):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Turns recording back on inside a `no_grad` block (also a decorator)."""

    def __new__(cls, fn=None):
        if fn is not None:
            return cls()(fn)
        return super().__new__(cls)

    def __init__(self, fn=None):
        super().__init__(True)


class step_scope:
    """`with ag.step_scope(t):` marks the nodes recorded inside as belonging to time step t.
    Recurrent layers enter one per step; graph export groups each step in a cluster and the
    BPTT diagnostics read it. Scopes nest (the inner one wins) and are per thread."""

    __slots__ = ("step", "_prev")

    def __init__(self, step):
        self.step = step

    def __enter__(self):
        self._prev = _state.step
        _state.step = self.step
        sync_recording()
        return self

    def __exit__(self, *exc):
        _state.step = self._prev
        sync_recording()
        return False


def current_step():
    """The step of the innermost active step_scope in this thread, or None."""
    return _state.step
