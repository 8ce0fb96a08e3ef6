"""autograd_core: a small reverse-mode automatic differentiation engine on numpy.

    import autograd_core as ag
    x = ag.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    x.grad            # Tensor([2., 4.])
"""
__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

import numpy as _np

from .tensor import Tensor  # noqa: I001  (must come first: the ops import it)
from .anomaly import AnomalyError, HazardWarning, detect_anomaly, is_anomaly_enabled
from .engine import backward, grad, node_vjp
from .observers import SweepObserver
from .function import REGISTRY as ops_registry, Memory, Op, as_tensor as _as_tensor, record
from .grad_mode import (current_step, enable_grad, is_grad_enabled, no_grad, set_grad_enabled,
                        step_scope)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .graph import walk_graph
from .paths import count_paths
from .replayer import Replay, ReplayWarning, replay
from .trace import BackwardTrace, trace_backward
from .stats import GraphGrowthMonitor, GraphGrowthWarning, GraphStats, graph_stats
from .viz import GraphTooLargeError, render, to_dot
from .malloc_tuning import tune_malloc
from .gc_tuning import tune_gc
from .ops import PUBLIC as _OPS

globals().update(_OPS)  # ag.add, ag.exp, ag.softplus, ...: every op module's __all__


def as_tensor(value):
    """`value` as a Tensor: a Tensor is returned as it is, anything else is wrapped without
    a copy where numpy allows (as np.asarray / torch.as_tensor)."""
    return _as_tensor(value)


def tensor(data, requires_grad=False, dtype=None, name=None):
    """Same as Tensor(...)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, name=name)


def zeros(shape, dtype="float32", requires_grad=False):
    return Tensor(_np.zeros(shape, dtype=dtype), requires_grad=requires_grad)


def ones(shape, dtype="float32", requires_grad=False):
    return Tensor(_np.ones(shape, dtype=dtype), requires_grad=requires_grad)


__all__ = [
    "Tensor", "tensor", "as_tensor", "zeros", "ones",
    "backward", "grad", "SweepObserver", "node_vjp",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "step_scope", "current_step",
    "gradcheck", "gradgradcheck", "GradcheckError",
    "Op", "Memory", "record", "ops_registry",
    "detect_anomaly", "is_anomaly_enabled", "AnomalyError", "HazardWarning",
    "walk_graph", "count_paths", "graph_stats", "GraphStats", "GraphGrowthMonitor",
    "GraphGrowthWarning", "trace_backward", "BackwardTrace", "to_dot", "render",
    "GraphTooLargeError", "tune_malloc", "tune_gc", "replay", "Replay", "ReplayWarning",
] + sorted(_OPS)
