"""The public observer of the reverse sweep (ag.SweepObserver)."""
import numpy as np
import pytest

import autograd_core as ag


def _rnn_loss(rng, T=6):
    w = ag.Tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True)
    u = ag.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    xs = ag.Tensor(rng.standard_normal((T, 2, 3)))
    h, states = ag.Tensor(np.zeros((2, 4))), []
    for t in range(T):
        with ag.step_scope(t):
            h = ag.tanh(ag.linear(h, w, ag.linear(xs[t], u)))
        states.append(h)
    return (h * h).sum(), [w, u], states


class Received(ag.SweepObserver):
    contributions = False

    def __init__(self):
        self.seen = {}

    def node(self, tensor, grad, sent):
        assert sent is None
        self.seen[tensor] = np.array(grad)


class Everything(ag.SweepObserver):
    def __init__(self):
        self.rows = []

    def node(self, tensor, grad, sent):
        self.rows.append((tensor, np.array(grad), [(k, i, np.array(g)) for k, i, g in sent]))


def test_an_observer_of_what_nodes_receive_leaves_the_gradients_and_fast_paths_alone(
        monkeypatch):
    rng = np.random.default_rng(0)
    loss, params, states = _rnn_loss(rng)
    plain = ag.grad(loss, params + states, retain_graph=True)
    calls = []
    from autograd_core.ops import linalg
    real = linalg.Linear.backward_split
    monkeypatch.setattr(linalg.Linear, "backward_split",
                        staticmethod(lambda g, out: calls.append(1) or real(g, out)))
    watcher = Received()
    watched = ag.grad(loss, params + states, retain_graph=True, observer=watcher)
    assert calls, "the stacked weight products ran while the observer watched"
    for a, b in zip(plain, watched):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for h, g in zip(states, plain[2:]):  # what each state received is its gradient
        np.testing.assert_allclose(watcher.seen[h], g.numpy(), rtol=1e-12)
    assert len(watcher.seen) == sum(not t.is_leaf for t in ag.walk_graph(loss))


def test_an_observer_of_contributions_sees_each_one_summed_to_its_input():
    rng = np.random.default_rng(1)
    loss, params, states = _rnn_loss(rng)
    grads = ag.grad(loss, params, retain_graph=True)
    obs = Everything()
    ag.grad(loss, params, retain_graph=True, observer=obs)
    totals = {id(p): np.zeros(p.shape) for p in params}
    for tensor, g, sent in obs.rows:
        assert g.shape == tensor.shape
        for k, inp, gi in sent:
            assert inp is tensor.inputs[k] and gi.shape == inp.shape
            if id(inp) in totals:
                totals[id(inp)] += gi
    for p, g in zip(params, grads):  # the contributions to a leaf add up to its gradient
        np.testing.assert_allclose(totals[id(p)], g.numpy(), rtol=1e-12)


def test_an_observer_that_raises_stops_the_backward_and_leaves_grad_untouched():
    class Stop(ag.SweepObserver):
        def node(self, tensor, grad, sent):
            raise KeyboardInterrupt

    rng = np.random.default_rng(2)
    loss, params, _ = _rnn_loss(rng)
    with pytest.raises(KeyboardInterrupt):
        loss.backward(observer=Stop())
    assert all(p.grad is None for p in params)
    loss.backward()  # nothing was freed: the graph still runs
    assert all(p.grad is not None for p in params)
