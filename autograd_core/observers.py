"""Watching the reverse sweep: the public observer interface, and anomaly mode's observer."""
import numpy as np

from .anomaly import check_gradient
from .grad_mode import _state


class SweepObserver:
    """Watches a reverse sweep: pass one to `backward(..., observer=)` or `grad(...,
    observer=)`. Anomaly mode, `trace_backward` and `nn.bptt_report` are observers.

    `node(tensor, grad, sent)` is called once per node the sweep visits, newest first:
    `tensor` is the node (its `op`, `inputs`, `step`, `name`), `grad` the gradient it
    received (an ndarray; a Tensor under create_graph), and `sent` a list of
    (input position, input tensor, contribution), each contribution already summed to the
    input's shape, before any is added in; the arrays are read-only views (copy one to keep
    it past the call: the sweep may add into it later). Raising stops the backward.

    While an observer that sees contributions watches, every contribution is computed by
    the op's plain rule (the fast paths that stack a shared weight's products are off), so
    each one is seen. An observer with `contributions = False` sees only what each node
    receives (`sent` is None, and `node` is called before the rule runs): the sweep then
    runs as fast as unwatched."""

    contributions = True

    def node(self, tensor, grad, sent):
        pass


class AnomalyObserver(SweepObserver):
    """Anomaly mode's check of every contribution (see detect_anomaly)."""

    def node(self, tensor, grad, sent):
        for k, _, gi in sent:
            check_gradient(tensor, k, gi)


def read_only(a):
    """A read-only view of an array an observer is shown (the sweep still adds into it)."""
    if type(a) is not np.ndarray:
        return a
    view = a.view()
    view.flags.writeable = False
    return view


def observers_for(observer):
    found = [AnomalyObserver()] if _state.anomaly else []
    if observer is not None:
        found.append(observer)
    return found
