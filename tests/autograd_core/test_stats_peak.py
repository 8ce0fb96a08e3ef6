"""GraphStats.held_bytes and backward_peak_bytes: the memory a backward will need, replayed
without running it, checked by hand on small graphs and against tracemalloc on unrolls.

Run with -s to see the measured figures."""
import gc
import tracemalloc

import numpy as np
import pytest

import autograd_core as ag
import nn


def test_peak_of_a_known_graph():
    x = ag.Tensor(np.ones((2, 3)), requires_grad=True)        # 48 bytes
    w = ag.Tensor(np.ones((3, 4)), requires_grad=True)        # 96 bytes
    loss = ag.tanh(x @ w).sum()                               # matmul 64, tanh 64, sum 8
    s = ag.graph_stats(loss)
    assert s.held_bytes == s.bytes == 64 + 64 + 8
    # While tanh's rule runs: the outputs (136), the root's gradient (8, the base of sum's
    # broadcast view), tanh's incoming gradient (64) and its contribution (64): 272. The most
    # is at matmul's visit, w's only use, whose product is made there: the root (8), matmul's
    # output (64, dropped after the visit), its incoming gradient (64), x's gradient (48) and
    # w's (96).
    assert s.backward_peak_bytes == 8 + 64 + 64 + 48 + 96
    assert "backward peak 0.3 KiB = 0.1 KiB graph memory" in s.table()


def test_views_and_leaf_arrays_cost_nothing_and_saved_arrays_count():
    w = ag.Tensor(np.ones((4, 5)), requires_grad=True)
    y = ag.tanh(ag.transpose(ag.reshape(w, (5, 4))))          # views of a parameter, 160 bytes
    loss = ag.transpose(y).sum()                              # a view of y, then 8 bytes
    s = ag.graph_stats(loss)
    assert s.bytes == 160 * 4 + 8 and s.held_bytes == 160 + 8
    # reshaping a transposed array copies it: that output is its own memory
    s = ag.graph_stats(ag.reshape(ag.transpose(w), (20,)).sum())
    assert s.held_bytes == 160 + 8
    # softmax_cross_entropy saves the targets and its probabilities (buffers no output shares)
    logits = ag.Tensor(np.zeros((3, 4)), requires_grad=True)
    ce = ag.softmax_cross_entropy(logits, np.array([0, 1, 2])).sum()
    s = ag.graph_stats(ce)
    assert s.held_bytes == 3 * 8 + 8 + 3 * 8 + 3 * 4 * 8


def test_no_graph_no_backward_memory():
    s = ag.graph_stats(ag.Tensor([1.0, 2.0], requires_grad=True))
    assert (s.nodes, s.held_bytes, s.backward_peak_bytes) == (0, 0, 0)


def unroll(cell, T, hidden=64, batch=16, inputs=8, classes=10):
    model = nn.RecurrentClassifier(inputs, hidden, classes, cell=cell, rng=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    return model, rng.standard_normal((T, batch, inputs)), rng.integers(0, classes, (T, batch))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_peak_grows_linearly_with_the_unroll(cell):
    peaks, held = [], []
    for T in (10, 20, 40):
        model, xs, ys = unroll(cell, T)
        s = ag.graph_stats(model.loss(xs, ys))
        peaks.append(s.backward_peak_bytes)
        held.append(s.held_bytes)
        assert s.backward_peak_bytes > s.held_bytes
    assert peaks[2] - peaks[1] == pytest.approx(2 * (peaks[1] - peaks[0]), rel=0.02)
    assert held[2] - held[1] == pytest.approx(2 * (held[1] - held[0]), rel=0.02)


def rnn_loss(cell):
    model, xs, ys = unroll(cell, T=50)
    return lambda: model.loss(xs, ys)


def mlp_loss():
    """Wide tanh layers: the peak falls inside a rule's temporaries."""
    model = nn.MLP([100, 256, 256, 10], rng=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, y = ag.Tensor(rng.normal(size=(512, 100))), rng.integers(0, 10, 512)
    return lambda: nn.cross_entropy(model(x), y)


def measure(make_loss):
    """(GraphStats, bytes the forward left allocated, the most allocated during backward
    above that), from tracemalloc (numpy reports its buffers to it). The model and data are
    made before tracing starts, so what is traced is the graph and the gradients."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        loss = make_loss()
        stats = ag.graph_stats(loss)
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        gc.enable()
    return stats, before - start, peak - before


@pytest.mark.parametrize("case", ["rnn", "gru", "lstm", "mlp"])
def test_simulated_peak_matches_tracemalloc(case):
    """Unrolls of hidden 64, batch 16, T = 50, and an MLP, float64. The graph memory is
    compared with what the forward left allocated, the gradient part with the rise during
    backward, and the peak with the measured peak above the pre-forward baseline."""
    s, forward, rise = measure(mlp_loss() if case == "mlp" else rnn_loss(case))
    simulated_rise = s.backward_peak_bytes - s.held_bytes
    print(f"\n{case}: graph memory {s.held_bytes / 1024:.0f} KiB simulated, "
          f"{forward / 1024:.0f} KiB measured (graph_stats.bytes {s.bytes / 1024:.0f} KiB); "
          f"rise during backward {simulated_rise / 1024:.0f} KiB simulated, "
          f"{rise / 1024:.0f} KiB measured; peak {s.backward_peak_bytes / 1024:.0f} KiB "
          f"simulated, {(forward + rise) / 1024:.0f} KiB measured")
    # the measured side also holds the Tensor objects: a few percent
    assert s.held_bytes == pytest.approx(forward, rel=0.10)
    assert s.backward_peak_bytes == pytest.approx(forward + rise, rel=0.10)
    # the rise is the smaller part and the one the replay predicts (within 3% when written)
    assert simulated_rise == pytest.approx(rise, rel=0.15)
