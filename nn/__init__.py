"""nn: layers and models as plain forward code on autograd_core (no backward code here)."""
from . import checkpoint, diagnostics, jacobians, optim, tasks
from .bptt_report import BPTTReport, bptt_report
from .check_backward import BackwardReport, check_backward
from . import testing
from .learner_file import check_backward_file
from .checkpoint import load, save
from .clip import clip_grad_norm_, clip_grad_value_
from .init import manual_seed
from .jacobians import JacobianReport, jacobian_report, step_jacobian
from .layers import MLP, Embedding, Linear, ReLU, Sigmoid, Tanh
from .losses import (binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss,
                     sequence_cross_entropy)
from .models import RecurrentClassifier
from .module import Module, ModuleList, Parameter, Sequential
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .torch_bridge import from_torch, optimizer_to_torch, to_torch

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "Linear", "Embedding", "Tanh",
    "Sigmoid", "ReLU", "MLP", "RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell",
    "RecurrentClassifier", "cross_entropy", "nll_loss", "mse_loss",
    "binary_cross_entropy_with_logits", "sequence_cross_entropy", "manual_seed", "optim", "checkpoint", "save", "load",
    "diagnostics", "tasks", "bptt_report", "BPTTReport", "jacobians", "jacobian_report",
    "JacobianReport", "step_jacobian",
    "clip_grad_norm_", "clip_grad_value_", "to_torch", "from_torch", "optimizer_to_torch",
    "check_backward", "BackwardReport", "check_backward_file", "testing",
]
