"""The eager sweep's step of a unary elementwise op adds its rule's result without a shape
check (the node's gradient has the node's shape, which is its input's): around broadcasting,
0-d values and hooks, the gradients stay those of the general path, bit for bit."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core.tensor import Tensor

UNARY = ["add_scalar", "exp", "log", "mul_scalar", "neg", "relu", "rsub_scalar", "sigmoid",
         "tanh"]


def _apply(name, x):
    return {"add_scalar": lambda: x + 1.5, "exp": lambda: ag.exp(x), "log": lambda: ag.log(x),
            "mul_scalar": lambda: x * 0.75, "neg": lambda: -x, "relu": lambda: ag.relu(x),
            "rsub_scalar": lambda: 2.0 - x, "sigmoid": lambda: ag.sigmoid(x),
            "tanh": lambda: ag.tanh(x)}[name]()


def _run(name, shape, dtype):
    rng = np.random.default_rng(len(name))
    a = Tensor(rng.uniform(1.5, 3.0, shape).astype(dtype), requires_grad=True)
    b_shape = {(3, 1): (3, 4), (): (4,), (1,): (4,)}[shape]
    b = Tensor(rng.uniform(0.5, 2.0, b_shape).astype(dtype), requires_grad=True)
    u = _apply(name, a)  # a (3, 1) or () node, its gradient summed back from a broadcast
    assert u._op.name == name
    seen = []
    u.register_hook(lambda g: seen.append(g.shape))
    v = _apply(name, u * b)  # broadcast against b
    (v * v).sum().backward()
    return a.grad.numpy(), b.grad.numpy(), seen


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("shape", [(3, 1), (), (1,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_steps_give_the_general_paths_bits(name, shape, dtype):
    ops = [op for op in ag.ops_registry.values()
           if op.batch == "elementwise" and len(op.inputs) == 1]
    got = _run(name, shape, dtype)
    kept = {op: op.__dict__["sweep_step"] for op in ops}
    try:
        for op in ops:
            op.sweep_step = None
        want = _run(name, shape, dtype)
    finally:
        for op, step in kept.items():
            op.sweep_step = step
    for a, b in zip(got[:2], want[:2]):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert got[2] == want[2] == [shape]  # the hook saw the node's own shape


def test_a_hook_cannot_hand_a_unary_node_another_shape():
    x = Tensor(np.ones((2, 1)), requires_grad=True)
    y = ag.tanh(x)
    y.register_hook(lambda g: np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="shape"):
        (y * Tensor(np.ones((2, 3)))).sum().backward()
