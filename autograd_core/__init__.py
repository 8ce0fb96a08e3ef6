"""autograd_core: a small reverse-mode automatic differentiation engine on numpy.

    import autograd_core as ag
    x = ag.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    x.grad            # Tensor([2., 4.])
"""
__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

import numpy as _np

from ._malloc import MALLOC_TUNED  # noqa: F401  (see _malloc.py)

from .tensor import Tensor  # noqa: I001  (must come first: the ops import it)
from .anomaly import AnomalyError, HazardWarning, detect_anomaly, is_anomaly_enabled
from .engine import backward, grad
from .function import REGISTRY as ops_registry, Op
from .grad_mode import (current_step, enable_grad, is_grad_enabled, no_grad, set_grad_enabled,
                        step_scope)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .graph import walk_graph
from .paths import count_paths
from .trace import BackwardTrace, trace_backward
from .stats import GraphGrowthMonitor, GraphGrowthWarning, GraphStats, graph_stats
from .viz import GraphTooLargeError, render, to_dot
from .ops.arithmetic import add, div, maximum, minimum, mul, neg, pow, sub, where
from .ops.indexing import getitem, scatter
from .ops.joining import concatenate, split, stack
from .ops.linalg import addmm, linear, matmul
from .ops.reductions import (log_softmax, logsumexp, max, mean, min, softmax,
                             softmax_cross_entropy, sum)
from .ops.shape import (astype, broadcast_to, expand_dims, reshape, squeeze, sum_to, swapaxes,
                        transpose)
from .ops.unary import abs, clip, exp, log, relu, sigmoid, sqrt, tanh


def tensor(data, requires_grad=False, dtype=None, name=None):
    """Same as Tensor(...)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, name=name)


def zeros(shape, dtype="float32", requires_grad=False):
    return Tensor(_np.zeros(shape, dtype=dtype), requires_grad=requires_grad)


def ones(shape, dtype="float32", requires_grad=False):
    return Tensor(_np.ones(shape, dtype=dtype), requires_grad=requires_grad)


__all__ = [
    "Tensor", "tensor", "zeros", "ones", "backward", "grad", "no_grad", "enable_grad",
    "set_grad_enabled", "is_grad_enabled", "step_scope", "current_step", "gradcheck", "gradgradcheck", "GradcheckError",
    "Op", "ops_registry", "detect_anomaly", "is_anomaly_enabled", "AnomalyError",
    "HazardWarning",
    "walk_graph", "count_paths", "graph_stats", "GraphStats", "GraphGrowthMonitor", "GraphGrowthWarning",
    "trace_backward", "BackwardTrace", "to_dot", "render", "GraphTooLargeError",
    "add", "sub", "mul", "div", "neg", "pow", "maximum", "minimum", "where",
    "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "clip",
    "sum", "mean", "max", "min", "logsumexp", "softmax", "log_softmax", "softmax_cross_entropy", "matmul",
    "addmm", "linear",
    "reshape", "transpose", "swapaxes", "expand_dims", "squeeze", "broadcast_to", "sum_to",
    "astype", "concatenate", "stack", "split", "getitem", "scatter",
]
