"""Gradient flow over time (nn.diagnostics): ||dL/dh_t|| per step read from the engine's own
backward, against the hand-derived reference of nn.manual and against what note 003 predicts
(geometric decay for small recurrent weights, growth for large ones, a GRU keeping it)."""
import sys

import numpy as np
import pytest

import autograd_core as ag
import nn
from nn.diagnostics import decay_rate, gradient_flow, plot_gradient_flow, step_states
from nn.manual import gru_forward_backward, rnn_forward_backward

PNG = b"\x89PNG\r\n\x1a\n"


def make(cell, T, *, H=8, I=4, C=3, B=2, seed=0, scale=None, ortho=None, xscale=1.0, **kw):
    """A float64 RecurrentClassifier and data. `scale` multiplies weight_hh_l0; `ortho=a`
    sets it to a * (random orthogonal matrix) with zero recurrent biases, so that with tiny
    inputs (tanh' = 1) every step back multiplies ||dL/dh|| by exactly a."""
    rng = np.random.default_rng(seed)
    model = nn.RecurrentClassifier(I, H, C, cell=cell, rng=seed, **kw).double()
    with ag.no_grad():
        if scale is not None:
            model.rnn.weight_hh_l0.mul_(scale)
        if ortho is not None:
            q, _ = np.linalg.qr(rng.normal(size=(H, H)))
            model.rnn.weight_hh_l0.copy_(ortho * q)
            model.rnn.bias_ih_l0.mul_(0.0)
            model.rnn.bias_hh_l0.mul_(0.0)
    xs = xscale * rng.normal(size=(T, B, I))
    return model, xs, rng.integers(0, C, (T, B))


def last_step_only(T):
    return np.eye(T)[-1]       # loss on the last step: only the BPTT part reaches h_1..h_{T-1}


# ----------------------------------------------------------------------------- note 003
def test_rnn_small_weights_decay_exactly_geometrically():
    T = 12
    model, xs, ys = make("rnn", T, ortho=0.5, xscale=1e-5)
    norms = gradient_flow(model, xs, ys, step_weights=last_step_only(T))
    assert norms.shape == (T,) and np.all(norms > 0)
    assert np.all(np.diff(norms) > 0)              # decreasing going back from T
    np.testing.assert_allclose(norms[:-1] / norms[1:], 0.5, rtol=1e-3)
    assert decay_rate(norms) == pytest.approx(0.5, rel=1e-3)


def test_rnn_scaled_down_weights_vanish():
    T = 12
    model, xs, ys = make("rnn", T, scale=0.1)
    norms = gradient_flow(model, xs, ys, step_weights=last_step_only(T))
    rate = decay_rate(norms)
    assert rate < 0.1
    assert np.all(np.diff(norms) > 0)
    assert norms[0] < 1e-10 * norms[-1]
    # The fitted factor is the per-step ratio: the average one within 5 %, each within 2x.
    assert (norms[0] / norms[-1]) ** (1 / (T - 1)) == pytest.approx(rate, rel=0.05)
    ratios = norms[:-1] / norms[1:]
    assert np.all((ratios > rate / 2) & (ratios < 2 * rate))


def test_gru_keeps_the_gradient_far_larger_than_rnn():
    T = 20
    w = last_step_only(T)
    rnn, xs, ys = make("rnn", T, scale=0.1)
    gru, _, _ = make("gru", T)
    n_rnn = gradient_flow(rnn, xs, ys, step_weights=w)
    n_gru = gradient_flow(gru, xs, ys, step_weights=w)
    assert n_gru[0] > 100 * n_rnn[0]
    assert n_gru[0] / n_gru[-1] > 100 * n_rnn[0] / n_rnn[-1]
    assert decay_rate(n_gru) > 2 * decay_rate(n_rnn)
    assert np.all(n_gru[:-1] > n_rnn[:-1])          # larger at every step before T


def test_rnn_large_weights_explode_and_clipping_bounds_them():
    T = 12
    model, xs, ys = make("rnn", T, ortho=2.0, xscale=1e-5)
    w = last_step_only(T)
    norms = gradient_flow(model, xs, ys, step_weights=w)
    assert np.all(np.diff(norms) < 0)              # growing going back from T
    np.testing.assert_allclose(norms[:-1] / norms[1:], 2.0, rtol=1e-3)
    assert decay_rate(norms) > 1 and decay_rate(norms) == pytest.approx(2.0, rel=1e-3)

    model.loss(xs, ys, step_weights=w).backward()
    params = list(model.parameters())
    before = [p.grad.numpy().copy() for p in params]
    expected = np.sqrt(sum(np.sum(g ** 2) for g in before))
    total = nn.clip_grad_norm_(params, max_norm=1.0)
    assert total == pytest.approx(expected, rel=1e-12) and total > 100
    after = np.sqrt(sum(np.sum(p.grad.numpy() ** 2) for p in params))
    assert after <= 1.0 and after == pytest.approx(1.0, rel=1e-5)
    for p, g in zip(params, before):               # same direction, one common factor
        np.testing.assert_allclose(p.grad.numpy(), g / (total + 1e-6), rtol=1e-12)


# ----------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("cell, reference, kw", [
    ("rnn", rnn_forward_backward, {}),
    ("gru", gru_forward_backward, {"variant": "notes"}),
    ("gru", gru_forward_backward, {"variant": "torch"}),
])
@pytest.mark.parametrize("weights", ["none", "random", "last"])
def test_matches_hand_derived_dL_dh(cell, reference, kw, weights):
    T, B, H = 7, 3, 5
    model, xs, ys = make(cell, T, H=H, B=B, seed=3, **kw)
    rng = np.random.default_rng(4)
    w = {"none": None, "random": rng.uniform(0.1, 2.0, T), "last": last_step_only(T)}[weights]
    h0 = rng.normal(0, 0.5, (B, H))
    params = {k: np.asarray(v, np.float64) for k, v in model.state_dict().items()}
    ref = reference(params, xs, ys, step_weights=w, h0=h0, **kw)
    expected = np.linalg.norm(ref.dL_dh.reshape(T, -1), axis=1)
    got = gradient_flow(model, xs, ys, step_weights=w, h0=h0[None])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=0)
    # ... and without h0 (zeros), against the reference's default.
    ref0 = reference(params, xs, ys, step_weights=w, **kw)
    np.testing.assert_allclose(gradient_flow(model, xs, ys, step_weights=w),
                               np.linalg.norm(ref0.dL_dh.reshape(T, -1), axis=1), rtol=1e-10)


def test_state_gradient_norms_helper_agrees():
    from nn.diagnostics import state_gradient_norms
    model, xs, ys = make("gru", 5, seed=2)
    logits, hidden, _ = model(xs)
    loss = nn.sequence_cross_entropy(logits, ys)
    ref = gru_forward_backward({k: np.asarray(v) for k, v in model.state_dict().items()}, xs, ys)
    np.testing.assert_allclose(state_gradient_norms(loss, hidden),
                               np.linalg.norm(ref.dL_dh.reshape(5, -1), axis=1), rtol=1e-10)


def test_leaves_parameter_grads_untouched():
    model, xs, ys = make("gru", 5)
    gradient_flow(model, xs, ys)
    assert all(p.grad is None for p in model.parameters())
    model.loss(xs, ys).backward()
    before = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    gradient_flow(model, xs, ys, step_weights=last_step_only(5))
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad.numpy(), before[n])


def test_step_states():
    model, xs, ys = make("gru", 4)
    _, hidden, final = model(xs)
    hs = step_states(hidden)
    assert len(hs) == 4 and [h.name for h in hs] == ["h"] * 4
    assert [h.step for h in hs] == [0, 1, 2, 3]
    for t, h in enumerate(hs):
        np.testing.assert_array_equal(h.numpy(), hidden.numpy()[t])
    np.testing.assert_array_equal(hs[-1].numpy(), final.numpy()[0])
    rnn = nn.RNN(4, 3, batch_first=True, rng=0)
    out, _ = rnn(np.ones((2, 5, 4)))
    hs = step_states(out)
    assert len(hs) == 5 and hs[0].shape == (2, 3)
    np.testing.assert_array_equal(hs[2].numpy(), out.numpy()[:, 2])
    with pytest.raises(ValueError, match="step_states"):
        step_states(ag.tanh(ag.Tensor(np.ones(3), requires_grad=True)))
    with ag.no_grad():
        out, _ = rnn(np.ones((2, 5, 4)))
    with pytest.raises(ValueError, match="step_states"):
        step_states(out)


def test_decay_rate():
    norms = 3.0 * 0.7 ** (9 - np.arange(10))            # C r^(T - t)
    assert decay_rate(norms) == pytest.approx(0.7, rel=1e-12)
    assert decay_rate(3.0 * 1.5 ** (4 - np.arange(5))) == pytest.approx(1.5, rel=1e-12)
    with_zero = norms.copy()
    with_zero[0] = 0.0
    assert decay_rate(with_zero) == pytest.approx(0.7, rel=1e-12)
    with pytest.raises(ValueError, match="two non-zero"):
        decay_rate([0.0, 0.0, 1.0])


# ----------------------------------------------------------------------------- the plot
def test_plot_gradient_flow_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    T = 6
    rnn, xs, ys = make("rnn", T, scale=0.1)
    gru, _, _ = make("gru", T)
    w = last_step_only(T)
    curves = {"rnn": gradient_flow(rnn, xs, ys, step_weights=w),
              "gru": gradient_flow(gru, xs, ys, step_weights=w),
              "with a zero": np.array([0.0, 1e-3, 1e-2, 0.1, 1.0, 1.0])}
    path = tmp_path / "flow.png"
    assert plot_gradient_flow(curves, path) == path
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000


def test_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="matplotlib"):
        plot_gradient_flow({"a": [1.0, 0.5]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    model, xs, ys = make("rnn", 3)                     # the diagnostic itself needs no plots
    norms = gradient_flow(model, xs, ys)
    assert norms.shape == (3,) and np.all(norms > 0)
