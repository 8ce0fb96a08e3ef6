"""`ag.replay(fn)`: record one call of a training-step function, then run later calls with
arguments of the same shapes and dtypes from the recorded graph, without building a new one.

    step = ag.replay(lambda xs, ys: model.loss(xs, ys))
    loss = step(xs, ys)        # the first two calls: eager, and recorded
    loss.backward()
    loss = step(xs3, ys3)      # later calls: replayed
    loss.backward()            # parameters' .grad as eager mode gives them

A replayed call runs the ops' declared forward kernels (`Op.forward`) over a list fixed at
recording time, writing into private copies of the recorded nodes ("shells"); its result is
one node whose backward runs the ops' own rules over those shells, newest first, with the
sweep's fast paths. It skips what eager mode pays per node: making and stamping tensors,
collecting and sorting the graph, claiming it, the per-node version checks (the leaves it read
are checked once instead). Once the graph is confirmed, what the forward and the backward
decide per node (a kernel's arity, a rule's path, where its gradients go) is decided once, in
generated code (replay_codegen.py), and the copies of an op that a loop over time steps
recorded run as one call on stacked operands where nothing stands in the way (see
batching.py: the input projections of all steps, the output layer and loss of all steps, an
accumulating `loss = loss + l_t`), and a weight that many products read is copied once per
call into the memory order the BLAS multiplies faster (see replay_layout.py); values and
gradients then differ from eager mode's only by the rounding of a different order of summation.

What it cannot replay runs eagerly and says why once (a ReplayWarning):
- arguments of a new shape, dtype or layout (recorded again, up to MAX_PLANS signatures),
  Python arguments of a new value, arguments it cannot key (anything but tensors, arrays,
  numbers, strings, None and tuples/lists of them);
- a function that reads a value of the graph while it runs (`.item()`, `bool()`,
  `.tolist()`: its control flow may depend on values);
- a graph that is not the same when the second call is recorded again: another sequence of
  ops, an array an op saved (a mask, an index) that changed although it is no argument, or
  a tensor made inside the function with other values (a random mask);
- an array from outside the function that an op saved (targets held by a closure) changed
  in place since it was recorded: the call records again;
- an op that saved part of an argument that is not one contiguous block;
- an op without a forward kernel, a hook or retain_grad() inside the function;
- grad mode off, anomaly mode on (its messages need the eager graph), a result that is not
  one tensor depending on something that requires grad.
So a call is replayed from the third on. Float arguments that do not require grad reach the
function as tensors that do (so that what is computed from them is recorded); integer and
bool arguments, and views into them, are bound where an op saved them. What it cannot see:
numpy computed inside the function from its arguments' raw arrays, and Python names the
function reads (a closure's targets rebound to a new array rather than changed in place),
both of which the second recording catches only when they changed between the first two
calls; pass such things as arguments. A replayed call checks the version of every tensor it
read before its backward, so an in-place change that no rule reads, which eager mode lets
pass, raises there too. A replayed result supports backward() and grad() but not
create_graph=True, and a call's result must be differentiated before the next call (later
calls overwrite the shells: the backward then raises); threads sharing a replayed function
take turns. Eager mode stays the default, and the one graphs and traces see.
"""
import warnings

from .grad_mode import _state
from .replay_arguments import Refused, describe, probe, signature
from .replay_plan import Plan

__all__ = ["replay", "Replay", "ReplayWarning"]

MAX_PLANS = 8  # signatures recorded per function before new ones just run eagerly


class ReplayWarning(UserWarning):
    """A call of a replayed function ran eagerly; the message says why."""


def replay(fn, batch=True):
    """`fn`, recorded on its first call and replayed on later calls with arguments of the same
    shapes and dtypes (see this module). Usable as a decorator. With `batch=False` the copies
    of an op that a loop recorded run one by one, as recorded: values and gradients are then
    eager mode's to the last bit (batching sums some terms in another order)."""
    return Replay(fn, batch)


class Replay:
    """A function recorded once per argument signature and replayed after (see `replay`)."""

    def __init__(self, fn, batch=True):
        self.fn, self.batch = fn, batch
        self.plans = {}  # signature -> Plan, or the reason it was refused (a str)
        self._said = set()

    def __call__(self, *args):
        if not _state.enabled:
            return self._eager("grad mode is off", args)
        if _state.anomaly:
            return self._eager("anomaly mode is on (its messages need the eager graph)", args)
        try:
            key = signature(args)
        except Refused as why:
            return self._eager(str(why), args)
        plan = self.plans.get(key)
        changed = None
        if isinstance(plan, Plan):
            changed = plan.changed(args)
            if changed:  # something it reads from outside is not as recorded: record again
                self._say(f"{changed}; recording again")
            elif plan.confirmed:
                return plan.run(args)
            else:  # the second call: recorded again, and replayed only if nothing changed
                out, second = _record(self.fn, args)
                why = second if isinstance(second, str) else plan.differs(second)
                if why:
                    self.plans[key] = why
                    self._say(why)
                else:
                    second.confirm(self.batch)
                    self.plans[key] = second
                return out
        elif plan is not None:
            return self._eager(plan, args)
        if changed is None and len(self.plans) >= MAX_PLANS:  # (a changed plan is replaced)
            return self._eager(f"more than {MAX_PLANS} argument signatures", args)
        if self.plans and changed is None:  # (a changed plan said why already)
            self._say(f"new argument shapes, dtypes or values {describe(key)}; recording again")
        out, plan = _record(self.fn, args)
        self.plans[key] = plan
        if not isinstance(plan, Plan):
            self._say(plan)
        return out

    def __repr__(self):
        """What each argument signature met so far gets: replayed, recorded once (the next
        call records it again, to confirm), or run eagerly and why."""
        name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        states = []
        for key, plan in list(self.plans.items()):  # (a copy: another thread may add one)
            if not isinstance(plan, Plan):
                state = f"runs eagerly: {plan}"
            elif plan.confirmed:
                state = "replayed"
            else:
                state = "recorded once; the next call records it again to confirm the graph"
            states.append(f"\n  {describe(key)}: {state}")
        return (f"Replay({name}, batch={self.batch}"
                + ("".join(states) + "\n)" if states else "; no signature recorded yet)"))

    def _eager(self, why, args):
        self._say(why)
        return self.fn(*args)

    def _say(self, why):
        if why not in self._said:
            self._said.add(why)
            warnings.warn(f"replay of {getattr(self.fn, '__name__', 'a function')}: {why}; "
                          f"this call runs eagerly", ReplayWarning, stacklevel=3)


# ---- recording ----------------------------------------------------------------------------
class _Recorder:
    """What a recording call shows that its graph alone does not (set in `_state.recorder`)."""

    def __init__(self):
        self.constants = {}  # node -> the non-differentiated arguments before they were copied
        self.value_read = None

    def saw_constants(self, out, saved):
        self.constants[out] = saved

    def read(self, t, what):
        if t.requires_grad and self.value_read is None:
            self.value_read = what


def _record(fn, args):
    """Run `fn` eagerly with a recorder watching: (its result, a Plan or why not)."""
    probed = tuple(probe(a) for a in args)
    recorder = _Recorder()
    previous, _state.recorder = _state.recorder, recorder
    try:
        out = fn(*probed)
    finally:
        _state.recorder = previous
    try:
        plan = Plan(out, args, probed, recorder)
    except Refused as why:
        return out, str(why)
    return out, plan
