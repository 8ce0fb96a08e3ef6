"""First-contact behaviour: a graph, a backward, the gradients a user expects."""
import numpy as np

import autograd_core as ag


def test_square_sum_gradient_is_two_x():
    x = ag.Tensor([1.0, -2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -4.0, 6.0])


def test_shared_weight_accumulates_over_uses():
    w = ag.Tensor(3.0, requires_grad=True)
    y = w * 2.0 + w * w  # dy/dw = 2 + 2w
    y.backward()
    assert w.grad.item() == 2.0 + 2 * 3.0
