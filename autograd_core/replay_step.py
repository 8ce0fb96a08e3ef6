"""A replayed call in the graph: one node whose inputs are the leaves that require grad and
whose rule runs the recorded graph's rules over the plan's shells (replay_plan.Plan), after
checking that the values they read are still this call's."""
import numpy as np

from . import engine
from .function import Memory, Op
from .versions import version_of, versions_of


class ReplayedStep(Op):
    """A replayed call as one node: its inputs are the leaves that require grad, its rule the
    recorded graph's rules run over the plan's shells. Not registered (it is no op a user
    calls); it declares what the tools that walk graphs read."""
    name = None  # set below: a named class would be registered in ag.ops_registry
    inputs = ("*leaves",)
    saves = ()
    view = False
    rule = "the recorded graph's rules, replayed"
    hazard = None
    memory = Memory()
    forward = None

    @staticmethod
    def backward(g, out, xp):
        if xp.recording:
            raise RuntimeError("replay: create_graph=True needs the eager graph; call the "
                               "function itself rather than its replay")
        return _replayed_gradients(g, out)[0]


def _replayed_backward(op, g, out, sweep):
    """The sweep's fast path for a replayed step: a leaf's gradient that the replayed sweep
    allocated, reaching a leaf with none yet, becomes the leaf's own (no copy is made for its
    .grad), as eager mode's do; the others go through the sweep's own adding."""
    acc, owned = sweep.acc, sweep.owned
    grads, fresh = _replayed_gradients(g, out)
    rest = list(grads)
    for k, (inp, gi, new) in enumerate(zip(out._inputs, grads, fresh)):
        if (new and type(gi) is np.ndarray and inp.requires_grad and inp not in acc
                and gi.shape == inp._data.shape):
            acc[inp] = gi
            owned.add(inp)
            rest[k] = None
    return rest


def _replayed_gradients(g, out):
    """The replayed sweep's (gradients, which of them it allocated), after the checks that
    the values it reads are still this call's."""
    plan, generation, (tensors, versions, read) = out._saved
    with plan.lock:
        if plan.generation != generation:
            raise RuntimeError("replay: a later call of the replayed function overwrote "
                               "the values this result's backward needs; call backward() "
                               "on each result before the next call")
        if versions_of(tensors) != versions:
            read = zip(tensors, versions)  # find the one, for the message
        for t, version in read:
            if version_of(t) != version:
                raise RuntimeError(
                    f"backward: the tensor {engine._describe(t)} read by the replayed "
                    f"step was modified in place after it was used (an optimizer step or "
                    f"an in-place op between forward and backward?). Recompute the "
                    f"forward, or modify a copy.")
        replaced = plan.replaced()
        if replaced is not None:  # its generated code runs the rule it was recorded with
            raise RuntimeError(
                f"backward: the rule (or kernel) of op {replaced.name!r} was replaced after "
                f"this replayed call ran its forward; its backward would run the old one. "
                f"Call the function again: replay records it anew with the rule now in place.")
        return plan.gradients(g)


ReplayedStep.name = "replay"
ReplayedStep.fast_path = (ReplayedStep.backward, _replayed_backward)
