"""softplus(x) = log(1 + exp(x)), the smooth relu: one op, one file.

This file is the whole recipe for adding an op (see the README, "Adding an op"): the class
declares what its rule reads and the rest of what the engine needs to know, `backward` is the
derivative, `forward` the array kernel that `ag.replay` runs, the function is the forward (its
checks, then the same kernel), and `__all__` makes it `ag.softplus`. The test row is
in tests/autograd_core/test_ops_table.py.
"""
import numpy as np

from ..function import Memory, Op, as_tensor, record
from .unary import float_array, log1p_exp_minus_abs, sigmoid, sigmoid_array

__all__ = ["softplus"]


class Softplus(Op):
    """d softplus(x) = sigmoid(x)."""
    name = "softplus"
    inputs = ("x",)  # the role of each input tensor
    saves = ("x",)  # what backward reads: the input x (an in-place change of it then raises)
    view = False  # the output is a new array, not a view of x
    rule = "d softplus(x) = sigmoid(x) g"  # what trace_backward prints
    hazard = None  # no values that overflow or stop the gradient (it is finite everywhere)
    memory = Memory(temporaries=1)  # backward holds sigmoid(x) beside its result

    @staticmethod
    def forward(out, x):  # the output again from x's array: what ag.replay runs
        return softplus_array(x)

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]
        if xp.recording:  # create_graph: the derivative as a recorded function of x
            return (g * sigmoid(x),)
        return (g * sigmoid_array(x._data),)


def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): no overflow for large x, no loss of
    the value for very negative x (as torch.nn.functional.softplus)."""
    x = as_tensor(x)
    return record(Softplus, softplus_array(x._data), (x,))


def softplus_array(x):
    xd = float_array(x)
    return np.maximum(xd, 0) + log1p_exp_minus_abs(xd)
