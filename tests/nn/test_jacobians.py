"""nn.jacobians: sigma_max(dh_{t+1}/dh_t) by power iteration on engine VJPs, against the SVD of
the exact Jacobian (one VJP per output unit), and note 003's bound on the gradient decay."""
import numpy as np
import pytest

import autograd_core as ag
import nn
from nn.diagnostics import step_states
from nn.jacobians import JacobianReport, jacobian_report, step_jacobian
from nn.losses import sequence_cross_entropy

CELLS = {"rnn-tanh": ("rnn", {}), "gru-notes": ("gru", {"variant": "notes"}),
         "gru-torch": ("gru", {"variant": "torch"})}


def run(kind, T=4, B=1, H=4, I=3, C=3, seed=0, hh_scale=2.0, last_step_only=True):
    """A float64 RecurrentClassifier (W_hh scaled up, so the steps do not all shrink), its
    loss and its per-step states."""
    cell, kw = CELLS[kind]
    rng = np.random.default_rng(seed)
    model = nn.RecurrentClassifier(I, H, C, cell=cell, rng=rng, **kw).double()
    with ag.no_grad():
        model.rnn.weight_hh_l0.mul_(hh_scale)
    logits, hidden, _ = model(ag.Tensor(rng.normal(size=(T, B, I))),
                              ag.Tensor(rng.normal(0, 0.5, (1, B, H))))
    weights = np.eye(T)[-1] if last_step_only else None
    loss = sequence_cross_entropy(logits, rng.integers(0, C, (T, B)), weights)
    return model, loss, hidden


def exact_sigmas(states):
    return np.array([np.linalg.svd(step_jacobian(b, a), compute_uv=False)[0]
                     for a, b in zip(states, states[1:])])


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("B,H", [(1, 3), (2, 5)])
def test_power_iteration_matches_exact_largest_singular_value(kind, B, H):
    model, loss, hidden = run(kind, B=B, H=H, seed=B * 10 + H)
    report = jacobian_report(hidden, loss, model)
    assert isinstance(report, JacobianReport)
    exact = exact_sigmas(step_states(hidden))
    np.testing.assert_allclose(report.sigma, exact, rtol=1e-6)
    assert report.converged.all() and report.sigma_per_sample.shape == (3, B)
    np.testing.assert_array_equal(report.sigma, report.sigma_per_sample.max(axis=1))
    full = jacobian_report(hidden, per_sample=False)           # the whole (B*H)^2 matrix
    np.testing.assert_allclose(full.sigma, exact, rtol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_step_jacobian_is_the_rnn_formula():
    """For S_t = tanh(net_t): dS_t/dS_{t-1} = diag(1 - S_t^2) W per sample, zero across
    samples (block-diagonal in the batch)."""
    model, _, hidden = run("rnn-tanh", B=2, H=3)
    states = step_states(hidden)
    w = model.rnn.weight_hh_l0.numpy()
    h = states[2].numpy()
    jac = step_jacobian(states[2], states[1])
    want = np.zeros((6, 6))
    for b in range(2):
        want[3 * b:3 * b + 3, 3 * b:3 * b + 3] = (1 - h[b] ** 2)[:, None] * w
    np.testing.assert_allclose(jac, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("B", [1, 2])
def test_observed_ratio_stays_under_running_product(kind, B):
    """Loss on the last step only: dL/dh_k = J_k^T ... J_{T-1}^T dL/dh_T, so
    ||dL/dh_k|| / ||dL/dh_T|| <= prod_{j>=k} sigma_j (note 003)."""
    T = 6
    model, loss, hidden = run(kind, T=T, B=B, seed=3 + B)
    report = jacobian_report(hidden, loss, model)
    assert report.running_product[-1] == report.observed_ratio[-1] == 1.0
    np.testing.assert_allclose(report.running_product[:-1],
                               np.cumprod(report.sigma[::-1])[::-1], rtol=1e-12)
    assert np.all(report.observed_ratio <= report.running_product * (1 + 1e-9))


def test_note003_bound_for_tanh_rnn():
    """J = diag(tanh') W_hh with |tanh'| <= 1: sigma_t <= beta_W = ||W_hh||_2 and the running
    product <= beta_W^(T-k)."""
    T = 6
    model, loss, hidden = run("rnn-tanh", T=T, B=2, seed=8)
    report = jacobian_report(hidden, loss, model)
    beta = np.linalg.norm(model.rnn.weight_hh_l0.numpy(), 2)
    assert report.beta_w == pytest.approx(beta, rel=1e-12)
    np.testing.assert_allclose(report.note_bound, beta ** np.arange(T - 1, -1, -1), rtol=1e-12)
    assert np.all(report.sigma <= beta * (1 + 1e-9))
    assert np.all(report.observed_ratio <= report.running_product * (1 + 1e-9))
    assert np.all(report.running_product <= report.note_bound * (1 + 1e-9))
    lines = report.table().splitlines()
    assert len(lines) == T + 1 and "beta_W^(T-k)" in lines[0]


def test_gru_has_no_note003_bound_and_no_ratio_without_loss():
    model, _, hidden = run("gru-notes")
    report = jacobian_report(hidden, model=model)
    assert report.beta_w is None and report.note_bound is None
    assert report.observed_ratio is None
    assert "-" in report.table().splitlines()[1]


def test_graph_kept():
    model, loss, hidden = run("gru-torch")
    jacobian_report(hidden, loss, model)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    model, loss, hidden = run("rnn-tanh", T=4, B=2)
    states = step_states(hidden)
    _, _, other = run("rnn-tanh", T=4, B=2, seed=1)
    with pytest.raises(ValueError, match="hidden states 0 and 1 are not consecutive: recorded "
                                         "in steps 0 and 2"):
        jacobian_report([states[0], states[2]])
    with pytest.raises(ValueError, match="hidden state 1 does not depend on hidden state 0"):
        jacobian_report([states[0], step_states(other)[1]])
    with pytest.raises(ValueError, match="hidden state 0 is not in a recorded graph"):
        jacobian_report([states[0].detach(), states[1]])
    with pytest.raises(ValueError, match="at least two consecutive hidden states, got 1"):
        jacobian_report(states[:1])
    with pytest.raises(TypeError, match="hidden state 1 must be a Tensor"):
        jacobian_report([states[0], states[1].numpy()])
    with pytest.raises(ValueError, match="loss must be a scalar"):
        jacobian_report(states, loss=hidden)


def test_model_without_step_scopes():
    rng = np.random.default_rng(0)
    w = nn.Parameter(rng.normal(size=(3, 3)))
    h1 = ag.tanh(ag.Tensor(rng.normal(size=(2, 3))) @ w)
    h2 = ag.tanh(h1 @ w)
    with pytest.raises(ValueError, match=r"model without step scopes.*ag\.step_scope\(t\)"):
        jacobian_report([h1, h2])
