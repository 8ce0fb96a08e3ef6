"""nn.bptt_report: per-step contributions to each shared parameter (note 003, eq. 5, 6, 8) from
one reverse sweep, against the hand-derived step_grads of nn.manual, float64.

"agree" means max |report - reference| / max |reference| below 1e-10; the per-step parts plus
the outside-steps part must give the engine's own gradient to 1e-12.
"""
import sys

import numpy as np
import pytest

import autograd_core as ag
import nn
from nn.bptt_report import BPTTReport, bptt_report, classify
from nn.diagnostics import step_states
from nn.losses import sequence_cross_entropy
from nn.manual import gru_forward_backward, rnn_forward_backward

PNG = b"\x89PNG\r\n\x1a\n"
NOTE000_WEIGHTS = (0.1, 0.1, 0.8)          # note 000's L = 0.1 L_1 + 0.1 L_2 + 0.8 L_3
# kind -> (cell, layer keyword arguments, reference, reference keyword arguments)
KINDS = {
    "rnn-tanh": ("rnn", {"nonlinearity": "tanh"}, rnn_forward_backward, {"nonlinearity": "tanh"}),
    "rnn-relu": ("rnn", {"nonlinearity": "relu"}, rnn_forward_backward, {"nonlinearity": "relu"}),
    "gru-notes": ("gru", {"variant": "notes"}, gru_forward_backward, {"variant": "notes"}),
    "gru-torch": ("gru", {"variant": "torch"}, gru_forward_backward, {"variant": "torch"}),
}


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    diff, scale = np.max(np.abs(got - want)), np.max(np.abs(want))
    return diff / scale if scale > 0 else diff


def make_case(kind, T=3, B=2, I=3, H=4, C=3, seed=0, weights=NOTE000_WEIGHTS):
    """A float64 RecurrentClassifier with random weights, data, and its reference pass."""
    cell, layer_kw, reference, ref_kw = KINDS[kind]
    rng = np.random.default_rng(seed)
    model = nn.RecurrentClassifier(I, H, C, cell=cell, rng=rng, **layer_kw).double()
    params = {k: rng.normal(0, 0.8 / np.sqrt(H), v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(params)
    xs, targets = rng.normal(size=(T, B, I)), rng.integers(0, C, (T, B))
    h0 = rng.normal(0, 0.5, (B, H))
    ref = reference(params, xs, targets, step_weights=weights, h0=h0, **ref_kw)
    return model, (ag.Tensor(xs), targets, np.asarray(weights), ag.Tensor(h0[None])), ref


def loss_and_states(model, data):
    xs, targets, weights, h0 = data
    logits, hidden, _ = model(xs, h0)
    return sequence_cross_entropy(logits, targets, weights), hidden


def engine_grads(model, loss):
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------- against the notes
@pytest.mark.parametrize("kind", KINDS)
def test_note_examples_match_reference_step_grads(kind):
    """Note 000's 3-step RNN and note 001's GRU (both forms) with L = 0.1 L_1 + 0.1 L_2 +
    0.8 L_3: the recurrent parameters' share of step t is the reference's step_grads[t]
    (delta_t s_{t-1}^T, delta_t x_t^T, delta_t). RecurrentClassifier applies its output layer
    to all steps at once, outside the step scopes, so out.* lands in outside_steps, equal to
    the reference's per-step terms summed."""
    model, data, ref = make_case(kind)
    loss, hidden = loss_and_states(model, data)
    report = bptt_report(loss, model, hidden)
    assert isinstance(report, BPTTReport)
    np.testing.assert_array_equal(report.steps, [0, 1, 2])
    for name in ref.step_grads:
        if name.startswith("rnn."):
            assert rel_err(report.contributions[name], ref.step_grads[name]) < 1e-10, name
            np.testing.assert_array_equal(report.outside_steps[name], 0.0)
        else:
            np.testing.assert_array_equal(report.contributions[name], 0.0)
            assert rel_err(report.outside_steps[name], ref.step_grads[name].sum(axis=0)) < 1e-10
        norms = np.linalg.norm(report.contributions[name].reshape(3, -1), axis=1)
        np.testing.assert_allclose(report.contribution_norms[name], norms, rtol=1e-14)
    want = np.linalg.norm(ref.dL_dh.reshape(3, -1), axis=1)   # total dL/dh_t per step
    assert rel_err(report.state_grad_norms, want) < 1e-10


@pytest.mark.parametrize("kind", KINDS)
def test_output_layer_inside_steps_is_booked_per_step(kind):
    """Run the output layer and each L_t inside step t's scope: then out.* is split per step
    too, exactly as the reference's step_grads (dL_t/dV = (y^_t - y_t) ⊗ S_t under step t),
    and nothing is left outside the steps."""
    model, (xs, targets, weights, h0), ref = make_case(kind, T=4, weights=(0.3, -0.2, 1.0, 0.7))
    hidden, _ = model.rnn(xs, h0)
    states = step_states(hidden)
    terms = []
    for t, h in enumerate(states):
        with ag.step_scope(h.step):
            terms.append(nn.cross_entropy(model.out(h), targets[t]) * weights[t])
    loss = ag.stack(terms).sum()
    report = bptt_report(loss, model, states)
    for name in ref.step_grads:
        assert rel_err(report.contributions[name], ref.step_grads[name]) < 1e-10, name
        np.testing.assert_array_equal(report.outside_steps[name], 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_parts_sum_to_the_full_gradient(kind):
    model, data, _ = make_case(kind, T=7, B=3, seed=4, weights=np.linspace(-0.5, 2.0, 7))
    loss, hidden = loss_and_states(model, data)
    report = bptt_report(loss, model, hidden)
    for name, full in engine_grads(model, loss).items():
        assert rel_err(report.total(name), full) < 1e-12, name


@pytest.mark.parametrize("cell,kw", [("rnn", {"num_layers": 2}), ("lstm", {}),
                                     ("gru", {"num_layers": 2, "variant": "torch"})])
def test_parts_sum_for_stacked_layers_and_lstm(cell, kw):
    """A second layer's input projection reads the first layer's steps: each step's share is
    carried down to the parameters and stops there, so nothing is counted twice."""
    rng = np.random.default_rng(2)
    model = nn.RecurrentClassifier(3, 4, 3, cell=cell, rng=rng, **kw).double()
    logits, hidden, _ = model(ag.Tensor(rng.normal(size=(5, 2, 3))))
    loss = sequence_cross_entropy(logits, rng.integers(0, 3, (5, 2)))
    report = bptt_report(loss, model, hidden)
    for name, full in engine_grads(model, loss).items():
        assert rel_err(report.total(name), full) < 1e-12, name
    assert all(np.any(report.contributions[n] != 0) for n in report.contributions
               if n.startswith("rnn."))


def vjp_elements(monkeypatch, cell, T, **kw):
    """Elements of every gradient the report hands to the engine's rules, for a model of
    length T: the work of carrying each step's share down to the parameters."""
    import nn.step_split
    seen = []
    real = ag.node_vjp

    def counting(node, grad):
        seen.append(np.size(grad))
        return real(node, grad)
    monkeypatch.setattr(nn.step_split.ag, "node_vjp", counting)
    rng = np.random.default_rng(0)
    model = nn.RecurrentClassifier(3, 4, 3, cell=cell, rng=rng, **kw).double()
    logits, hidden, _ = model(ag.Tensor(rng.normal(size=(T, 2, 3))))
    bptt_report(sequence_cross_entropy(logits, rng.integers(0, 3, (T, 2))), model, hidden)
    monkeypatch.setattr(nn.step_split.ag, "node_vjp", real)
    return sum(seen)


@pytest.mark.parametrize("cell,kw", [("rnn", {}), ("gru", {}), ("lstm", {}),
                                     ("gru", {"num_layers": 2, "variant": "torch"})])
def test_carrying_the_shares_is_linear_in_the_length(monkeypatch, cell, kw):
    """Each step's share of the input projection of all steps stays a block of its own rows
    on the way down: twice the length is twice the work (it was four times, a full-size
    array per step)."""
    short, long = (vjp_elements(monkeypatch, cell, T, **kw) for T in (40, 80))
    assert 1.9 < long / short < 2.1


def test_steps_reading_columns_give_the_same_shares():
    """A projection the steps read by columns (p[:, t]) is carried at full size, a
    projection read by rows (p[t]) as blocks: the shares are the same."""
    rng = np.random.default_rng(3)
    T, B, I, H = 6, 2, 3, 4
    x = rng.normal(size=(T, B, I))
    params = {"w_ih": ag.Tensor(rng.normal(size=(I, H)), requires_grad=True),
              "w_hh": ag.Tensor(rng.normal(size=(H, H)) / 2, requires_grad=True)}

    def report(by_rows):
        xs = x if by_rows else x.swapaxes(0, 1).copy()
        flat = ag.Tensor(xs.reshape(-1, I))
        proj = ag.matmul(flat, params["w_ih"]).reshape(xs.shape[:2] + (H,))
        h, states = ag.Tensor(np.zeros((B, H))), []
        for t in range(T):
            with ag.step_scope(t):
                h = ag.tanh(ag.linear(h, params["w_hh"].T, proj[t] if by_rows else proj[:, t]))
            states.append(h)
        return bptt_report((h * h).sum(), params, states)

    rows, columns = report(True), report(False)
    for name in params:
        assert rel_err(rows.contributions[name], columns.contributions[name]) < 1e-12, name
    assert np.all(np.abs(rows.contributions["w_ih"]).reshape(T, -1).max(axis=1) > 0)


def test_grads_untouched_graph_kept_and_inputs_equivalent():
    model, data, _ = make_case("gru-notes")
    loss, hidden = loss_and_states(model, data)
    by_output = bptt_report(loss, model, hidden)
    by_list = bptt_report(loss, dict(model.named_parameters()), step_states(hidden))
    assert all(p.grad is None for p in model.parameters())
    for name in by_output.contributions:
        np.testing.assert_array_equal(by_output.contributions[name],
                                      by_list.contributions[name])
    np.testing.assert_array_equal(by_output.state_grad_norms, by_list.state_grad_norms)
    loss.backward()                                 # the graph survived both reports
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------- decay and verdict
def scaled_rnn(T, factor, seed=0, H=6):
    """An RNN whose W_hh is `factor` x an orthogonal matrix, zero biases and tiny inputs
    (tanh' = 1): every step back multiplies ||dL/dh|| by `factor`. Loss on the last step."""
    rng = np.random.default_rng(seed)
    model = nn.RecurrentClassifier(3, H, 3, cell="rnn", rng=rng).double()
    with ag.no_grad():
        model.rnn.weight_hh_l0.copy_(factor * np.linalg.qr(rng.normal(size=(H, H)))[0])
        model.rnn.bias_ih_l0.mul_(0.0)
        model.rnn.bias_hh_l0.mul_(0.0)
    logits, hidden, _ = model(ag.Tensor(1e-6 * rng.normal(size=(T, 2, 3))))
    loss = sequence_cross_entropy(logits, rng.integers(0, 3, (T, 2)), np.eye(T)[-1])
    return bptt_report(loss, model, hidden)


@pytest.mark.parametrize("factor,verdict", [(0.5, "vanishing"), (1.0, "stable"),
                                            (1.5, "exploding")])
def test_decay_rate_and_verdict(factor, verdict):
    report = scaled_rnn(10, factor)
    assert report.decay_rate == pytest.approx(factor, rel=1e-3)
    assert report.verdict == verdict
    np.testing.assert_allclose(report.state_grad_norms[:-1] / report.state_grad_norms[1:],
                               factor, rtol=1e-3)


def test_classify_thresholds():
    assert classify(0.89) == "vanishing" and classify(0.9) == "stable"
    assert classify(1.1) == "stable" and classify(1.11) == "exploding"
    assert classify(float("nan")) == "undetermined"
    assert classify(0.95, vanishing_below=0.99) == "vanishing"


def test_single_step_is_undetermined():
    model, data, _ = make_case("rnn-tanh", T=1, weights=(1.0,))
    loss, hidden = loss_and_states(model, data)
    report = bptt_report(loss, model, hidden)
    assert np.isnan(report.decay_rate) and report.verdict == "undetermined"
    assert report.contributions["rnn.weight_hh_l0"].shape == (1, 4, 4)


# ----------------------------------------------------------------------------- output
def test_table_save_and_plot(tmp_path):
    model, data, _ = make_case("rnn-tanh")
    loss, hidden = loss_and_states(model, data)
    report = bptt_report(loss, model, hidden)
    lines = report.table().splitlines()
    assert "||dL/dh_t||" in lines[0] and "rnn.weight_hh_l0" in lines[0]
    assert [line.split()[0] for line in lines[1:4]] == ["1", "2", "3"]
    assert float(lines[2].split()[1]) == pytest.approx(report.state_grad_norms[1], rel=1e-4)
    assert lines[4].split()[0] == "outside" and report.verdict in lines[5]

    path = report.save_npz(tmp_path / "report.npz")
    with np.load(path) as saved:
        np.testing.assert_array_equal(saved["state_grad_norms"], report.state_grad_norms)
        np.testing.assert_array_equal(saved["contributions/rnn.weight_hh_l0"],
                                      report.contributions["rnn.weight_hh_l0"])
        np.testing.assert_array_equal(saved["outside_steps/out.bias"],
                                      report.outside_steps["out.bias"])
        assert str(saved["verdict"]) == report.verdict

    png = report.plot(tmp_path / "report.png", names=["rnn.weight_hh_l0"])
    assert png.read_bytes()[:8] == PNG


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    model, data, _ = make_case("rnn-tanh")
    loss, hidden = loss_and_states(model, data)
    report = bptt_report(loss, model, hidden)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        report.plot(tmp_path / "report.png")


# ----------------------------------------------------------------------------- bad input
def unscoped_rnn(rng, T=3):
    """h_t = tanh(x_t W^T + h_{t-1} U^T) written out with no step scopes."""
    w = nn.Parameter(rng.normal(size=(4, 3)))
    u = nn.Parameter(rng.normal(size=(4, 4)))
    h, states = ag.Tensor(np.zeros((2, 4))), []
    for t in range(T):
        h = ag.tanh(ag.Tensor(rng.normal(size=(2, 3))) @ w.T + h @ u.T)
        states.append(h)
    return {"w": w, "u": u}, states


def test_bad_input_errors():
    model, data, _ = make_case("rnn-tanh")
    loss, hidden = loss_and_states(model, data)
    states = step_states(hidden)
    _, other_hidden = loss_and_states(model, data)

    with pytest.raises(ValueError, match="hidden state 1 .* is not in the loss's graph"):
        bptt_report(loss, model, [states[0], step_states(other_hidden)[1], states[2]])
    with pytest.raises(ValueError, match=r"loss must be a scalar .*shape \(3, 2, 3\)"):
        bptt_report(model(data[0], data[3])[0], model, states)
    with pytest.raises(ValueError, match="hidden_states is empty"):
        bptt_report(loss, model, [])
    with pytest.raises(ValueError, match=r"step\(s\) \[2\] but no hidden state from them"):
        bptt_report(loss, model, states[:2])
    with pytest.raises(ValueError, match="time order"):
        bptt_report(loss, model, [states[1], states[0], states[2]])
    with pytest.raises(ValueError, match="both recorded in step 1"):
        bptt_report(loss, model, [states[0], states[1], states[1], states[2]])
    with pytest.raises(TypeError, match="params must be a Module or a dict"):
        bptt_report(loss, list(model.parameters()), states)
    with pytest.raises(TypeError, match="'rnn.weight_hh_l0' must be a leaf Tensor"):
        bptt_report(loss, {"rnn.weight_hh_l0": model.rnn.weight_hh_l0.T}, states)
    with pytest.raises(TypeError, match="loss must be a Tensor"):
        bptt_report(1.0, model, states)


def test_model_without_step_scopes():
    params, states = unscoped_rnn(np.random.default_rng(0))
    loss = (states[-1] ** 2).sum()
    with pytest.raises(ValueError, match=r"model without step scopes.*ag\.step_scope\(t\)"):
        bptt_report(loss, params, states)


def test_parameter_the_loss_does_not_use():
    """Zeros by default (a Module may hold parameters a loss does not use); an error on
    request."""
    model, data, _ = make_case("rnn-tanh")
    loss, hidden = loss_and_states(model, data)
    spare = nn.Parameter(np.ones((2, 2)))
    params = dict(model.named_parameters(), spare=spare)
    report = bptt_report(loss, params, hidden)
    np.testing.assert_array_equal(report.contributions["spare"], np.zeros((3, 2, 2)))
    np.testing.assert_array_equal(report.outside_steps["spare"], np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"does not depend on parameter\(s\) \['spare'\]"):
        bptt_report(loss, params, hidden, allow_unused=False)
