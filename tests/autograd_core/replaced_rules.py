"""Helpers of the tests that put an op's rule in place and hold replay to eager mode."""
import numpy as np

import autograd_core as ag


def same_bits(got, want):
    """Gradient arrays equal bit for bit (dtype, shape, bytes)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert g.tobytes() == w.tobytes(), np.abs(g - w).max()


def close(got, want, rtol=1e-10, atol=1e-12):
    """Gradient arrays equal to rounding (a batched replay sums in another order)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def scaled_rule(op, factor=3.0):
    """op's rule in place now, every gradient times factor, as a staticmethod to put in its
    place."""
    rule = op.backward

    def scaled(g, out, xp):
        return tuple(None if r is None else factor * r for r in rule(g, out, xp))
    return staticmethod(scaled)


def loop_sum(xs, u, w, v):
    """h_t = tanh(x_t U + h W), loss = sum of (h_t V).sum() (float64): grouped products, fused
    additions and a flattened chain when replay batches it."""
    h = ag.zeros((xs.shape[1], w.shape[0]), dtype=np.float64)
    loss = 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ u + h @ w)
        loss = loss + (h @ v).sum()
    return loss


def cross_entropy_loop(targets):
    """loop_sum with a per-step batch-mean cross-entropy of h_t V against targets[t]
    (nn.cross_entropy: mean_softmax_cross_entropy) in place of the sums."""
    import nn

    def loop_cross_entropy(xs, u, w, v):
        h = ag.zeros((xs.shape[1], w.shape[0]), dtype=np.float64)
        loss = 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(xs[t] @ u + h @ w)
            loss = loss + nn.cross_entropy(h @ v, targets[t])
        return loss
    return loop_cross_entropy


def loop_squares(xs, u, w):
    """h_t = tanh(x_t U + h W), loss = sum of (h_t * h_t).sum() (float64): no output layer."""
    h = ag.zeros((xs.shape[1], w.shape[0]), dtype=np.float64)
    loss = 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ u + h @ w)
        loss = loss + (h * h).sum()
    return loss
