"""graph_stats and the graph-growth warning (a hidden state never detached)."""
import warnings

import numpy as np
import pytest

import autograd_core as ag
import nn


def test_counts_nodes_leaves_arrays_and_bytes_of_a_known_graph():
    x = ag.Tensor(np.ones((2, 3)), requires_grad=True)        # 48 bytes
    w = ag.Tensor(np.ones((3, 4)), requires_grad=True)        # 96 bytes
    y = ag.tanh(x @ w)                                        # matmul (64), tanh (64)
    loss = y.sum()                                            # sum (8)
    s = ag.graph_stats(loss)
    assert (s.nodes, s.leaves, s.arrays) == (3, 2, 3)
    assert s.bytes == 64 + 64 + 8
    assert s.by_op == {"matmul": {"nodes": 1, "bytes": 64}, "tanh": {"nodes": 1, "bytes": 64},
                       "sum": {"nodes": 1, "bytes": 8}}
    assert s.by_step == {None: {"nodes": 3, "bytes": 136}}
    assert "3 nodes, 2 leaves" in s.table()


def test_per_step_counts_of_an_unrolled_gru_are_equal_across_steps():
    model = nn.RecurrentClassifier(3, 4, 3, cell="gru", rng=0)
    xs = np.random.default_rng(0).random((5, 2, 3)).astype(np.float32)
    s = ag.graph_stats(model.loss(xs, np.zeros((5, 2), int)))
    steps = [s.by_step[t] for t in range(5)]
    assert all(row == steps[0] for row in steps) and steps[0]["nodes"] > 5
    assert sum(row["nodes"] for row in s.by_step.values()) == s.nodes


def test_freed_graph_is_a_clear_error():
    x = ag.Tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="graph_stats: the graph .* was freed"):
        ag.graph_stats(loss)


def _iterations(detach, n=5):
    model = nn.RecurrentClassifier(3, 4, 3, cell="rnn", rng=0)
    xs = np.random.default_rng(0).random((4, 2, 3)).astype(np.float32)
    monitor, h = ag.GraphGrowthMonitor(patience=2), None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(n):
            logits, _, h = model(xs, h)
            if detach:
                h = h.detach()
            loss = nn.sequence_cross_entropy(logits, np.zeros((4, 2), int))
            monitor.check(loss)
            loss.backward(retain_graph=True)
    return monitor.history, [w for w in caught if issubclass(w.category, ag.GraphGrowthWarning)]


def test_growth_monitor_warns_when_the_state_is_never_detached():
    history, warned = _iterations(detach=False)
    assert all(b > a for a, b in zip(history, history[1:]))
    assert len(warned) == 3 and "h = h.detach()" in str(warned[0].message)


def test_growth_monitor_is_quiet_with_detach():
    history, warned = _iterations(detach=True)
    assert len(set(history)) == 1 and not warned
