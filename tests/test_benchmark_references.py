"""The benchmarks' references compute what they stand beside: the lean eager engine
(benchmarks/lean_engine.py) gives the MLP's loss and gradients of the hand-written numpy floor
and of autograd_core, in float64."""
import numpy as np
import pytest

import autograd_core as ag
import nn
from benchmarks import lean_engine, numpy_reference


@pytest.mark.parametrize("sizes, batch", [((5, 7, 3), 4), ((6, 8, 8, 4), 3), ((3, 2), 1)])
def test_the_lean_engine_gives_the_floors_and_autograd_cores_mlp_gradients(sizes, batch):
    rng = np.random.default_rng(len(sizes) + batch)
    model = nn.MLP(list(sizes), activation="tanh", rng=rng, dtype=np.float64)
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    x = rng.standard_normal((batch, sizes[0]))
    y = rng.integers(0, sizes[-1], batch)

    params = {k: lean_engine.Node(v.copy()) for k, v in state.items()}
    for _ in range(2):  # a second step starts again from .grad = None
        for p in params.values():
            p.grad = None
        loss = lean_engine.mlp_loss(params, lean_engine.Node(x), y, len(sizes) - 1)
        loss.backward()

    want_loss, want = numpy_reference.mlp_loss_grad(state, x, y)
    ours = nn.cross_entropy(model(ag.Tensor(x)), y)
    ours.backward()
    grads = dict(model.named_parameters())
    assert loss.item() == pytest.approx(float(want_loss), rel=1e-12)
    assert loss.item() == pytest.approx(ours.item(), rel=1e-12)
    for name, p in params.items():
        np.testing.assert_allclose(p.grad, want[name], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), rtol=1e-10, atol=1e-12)
