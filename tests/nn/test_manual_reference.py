"""The hand-derived reference (nn/manual.py) against central finite differences, float64.

The independent forwards below are written per sample in the notes' column-vector form
(S_t = f(U x_t + W S_{t-1} + b_a)), so they share no code with the reference.
"""
import numpy as np
import pytest

from nn.manual import (ManualResult, MLPResult, gru_forward_backward, mlp_forward_backward,
                       rnn_forward_backward)

EPS = 1e-6


# ----------------------------------------------------------------------------- helpers
def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


ACT = {"tanh": np.tanh, "sigmoid": sig, "relu": lambda a: np.maximum(a, 0.0), None: lambda a: a}


def log_softmax(c):
    c = c - c.max()
    return c - np.log(np.exp(c).sum())


def fd_grad(f, params, key):
    """Central differences of the scalar f(params) w.r.t. every entry of params[key]."""
    p = {k: v.copy() for k, v in params.items()}
    out = np.empty_like(p[key])
    for idx in np.ndindex(out.shape):
        orig = p[key][idx]
        p[key][idx] = orig + EPS
        fp = f(p)
        p[key][idx] = orig - EPS
        fm = f(p)
        p[key][idx] = orig
        out[idx] = (fp - fm) / (2 * EPS)
    return out


def assert_fd_close(analytic, numeric, what):
    assert analytic.shape == numeric.shape, what
    diff = np.linalg.norm(analytic - numeric)
    scale = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    assert diff <= 1e-6 * max(scale, 1e-3), f"{what}: relative error {diff / max(scale, 1e-300)}"
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=what)


def mlp_params(rng, sizes):
    p = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        p[f"layers.{i}.weight"] = rng.normal(0, 0.7, (n_out, n_in))
        p[f"layers.{i}.bias"] = rng.normal(0, 0.3, n_out)
    return p


def seq_params(rng, I, H, C, gates):
    return {"rnn.weight_ih_l0": rng.normal(0, 0.6, (gates * H, I)),
            "rnn.weight_hh_l0": rng.normal(0, 0.6, (gates * H, H)),
            "rnn.bias_ih_l0": rng.normal(0, 0.3, gates * H),
            "rnn.bias_hh_l0": rng.normal(0, 0.3, gates * H),
            "out.weight": rng.normal(0, 0.6, (C, H)), "out.bias": rng.normal(0, 0.3, C)}


def seq_data(rng, T, B, I, C, H, with_h0):
    xs = rng.normal(size=(T, B, I))
    targets = rng.integers(0, C, size=(T, B))
    w = rng.uniform(0.2, 1.5, size=T)
    h0 = rng.normal(0, 0.5, (B, H)) if with_h0 else None
    return xs, targets, w, h0


# ----------------------------------------------------------------------------- independent forwards
def mlp_ref_loss(p, x, y, activation, loss, output_activation):
    n_layers = len(p) // 2
    total = 0.0
    for b in range(x.shape[0]):
        a = x[b]
        for i in range(n_layers):
            f = ACT[activation if i < n_layers - 1 else output_activation]
            a = f(p[f"layers.{i}.weight"] @ a + p[f"layers.{i}.bias"])
        total += 0.5 * np.sum((y[b] - a) ** 2) if loss == "mse" else -log_softmax(a)[y[b]]
    return total / x.shape[0]


def rnn_cell(p, x, h, nonlinearity):
    b_a = p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"]
    return ACT[nonlinearity](p["rnn.weight_ih_l0"] @ x + p["rnn.weight_hh_l0"] @ h + b_a)


def gru_cell(p, x, h, variant):
    (Wxr, Wxz, Wxh), (Whr, Whz, Whh) = (np.split(p[k], 3) for k in ("rnn.weight_ih_l0",
                                                                    "rnn.weight_hh_l0"))
    (bir, biz, bih), (bhr, bhz, bhh) = (np.split(p[k], 3) for k in ("rnn.bias_ih_l0",
                                                                    "rnn.bias_hh_l0"))
    z = sig(Whz @ h + Wxz @ x + biz + bhz)
    r = sig(Whr @ h + Wxr @ x + bir + bhr)
    if variant == "notes":
        h_cand = np.tanh(Whh @ (r * h) + Wxh @ x + bih + bhh)
        return (1 - z) * h + z * h_cand
    n = np.tanh(Wxh @ x + bih + r * (Whh @ h + bhh))
    return (1 - z) * n + z * h


def seq_ref(p, xs, targets, w, h0, cell, bump=None):
    """Loss and hidden states, one sample at a time; bump[t] (B, H) is added to h_t."""
    T, B, _ = xs.shape
    H = p["rnn.weight_hh_l0"].shape[1]
    hidden, loss = np.empty((T, B, H)), 0.0
    for b in range(B):
        h = np.zeros(H) if h0 is None else h0[b]
        for t in range(T):
            h = cell(p, xs[t, b], h)
            if bump is not None:
                h = h + bump[t, b]
            hidden[t, b] = h
            c = p["out.weight"] @ h + p["out.bias"]
            loss += w[t] * -log_softmax(c)[targets[t, b]] / B
    return loss, hidden


def check_sequence_result(run, cell, p, xs, targets, w, h0):
    """Everything a ManualResult promises, against FD and the independent forward."""
    res = run(p, xs, targets, step_weights=w, h0=h0)
    assert isinstance(res, ManualResult)
    ref_loss, ref_hidden = seq_ref(p, xs, targets, w, h0, cell)
    assert res.loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(res.hidden, ref_hidden, rtol=1e-12, atol=1e-12)
    assert set(res.grads) == set(p) == set(res.step_grads)
    loss_of = lambda q: run(q, xs, targets, step_weights=w, h0=h0).loss  # noqa: E731
    for k in p:
        assert_fd_close(res.grads[k], fd_grad(loss_of, p, k), k)
        assert res.step_grads[k].shape == (xs.shape[0],) + p[k].shape
        np.testing.assert_allclose(res.step_grads[k].sum(axis=0), res.grads[k],
                                   rtol=0, atol=1e-12, err_msg=k)
    bump = np.zeros_like(ref_hidden)
    loss_bumped = lambda q: seq_ref(p, xs, targets, w, h0, cell, q["bump"])[0]  # noqa: E731
    assert_fd_close(res.dL_dh, fd_grad(loss_bumped, {"bump": bump}, "bump"), "dL_dh")
    # Closed form at the last step: dL/dh_T = w_T (y^_T - y_T) V / B (only the direct path).
    T, B, _ = xs.shape
    logits = res.hidden[-1] @ p["out.weight"].T + p["out.bias"]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[np.arange(B), targets[-1]] -= 1.0
    np.testing.assert_allclose(res.dL_dh[-1], w[-1] * probs @ p["out.weight"] / B,
                               rtol=1e-12, atol=1e-14)
    return res


# ----------------------------------------------------------------------------- MLP
MLP_CONFIGS = [("mse", None), ("mse", "tanh"), ("mse", "sigmoid"), ("cross_entropy", None),
               ("cross_entropy", "tanh")]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("loss,output_activation", MLP_CONFIGS)
@pytest.mark.parametrize("sizes,B", [([3, 4, 2], 1), ([2, 5, 3, 4], 3), ([3, 2], 2)])
def test_mlp_matches_finite_differences(activation, loss, output_activation, sizes, B):
    rng = np.random.default_rng(len(sizes) * 100 + B)
    p = mlp_params(rng, sizes)
    x = rng.normal(size=(B, sizes[0]))
    y = rng.normal(size=(B, sizes[-1])) if loss == "mse" else rng.integers(0, sizes[-1], B)
    kw = dict(activation=activation, loss=loss, output_activation=output_activation)
    res = mlp_forward_backward(p, x, y, **kw)
    assert isinstance(res, MLPResult)
    value, grads = res
    assert value == pytest.approx(mlp_ref_loss(p, x, y, **kw), rel=1e-12)
    assert list(grads) == list(p)
    for k in p:
        fd = fd_grad(lambda q: mlp_forward_backward(q, x, y, **kw).loss, p, k)
        assert_fd_close(grads[k], fd, k)


def test_mlp_linear_output_closed_form():
    """One linear layer, mse: delta^(L) = -(y - a) (f' = 1), dE/dW = mean_b delta a^(0)^T."""
    rng = np.random.default_rng(7)
    p = mlp_params(rng, [3, 2])
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    value, grads = mlp_forward_backward(p, x, y)
    a = x @ p["layers.0.weight"].T + p["layers.0.bias"]
    assert value == pytest.approx(0.5 * np.sum((y - a) ** 2) / 4, rel=1e-14)
    np.testing.assert_allclose(grads["layers.0.weight"], (a - y).T @ x / 4, rtol=1e-13)
    np.testing.assert_allclose(grads["layers.0.bias"], (a - y).mean(axis=0), rtol=1e-13)


# ----------------------------------------------------------------------------- RNN and GRU
SEQ_SHAPES = [(1, 1, False), (3, 2, True), (4, 1, True), (2, 3, False)]  # (T, B, with_h0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("T,B,with_h0", SEQ_SHAPES)
def test_rnn_matches_finite_differences(nonlinearity, T, B, with_h0):
    rng = np.random.default_rng(10 * T + B)
    I, H, C = 3, 4, 3
    p = seq_params(rng, I, H, C, gates=1)
    xs, targets, w, h0 = seq_data(rng, T, B, I, C, H, with_h0)
    run = lambda *a, **k: rnn_forward_backward(*a, nonlinearity=nonlinearity, **k)  # noqa: E731
    cell = lambda q, x, h: rnn_cell(q, x, h, nonlinearity)  # noqa: E731
    res = check_sequence_result(run, cell, p, xs, targets, w, h0)
    np.testing.assert_array_equal(res.grads["rnn.bias_ih_l0"], res.grads["rnn.bias_hh_l0"])


@pytest.mark.parametrize("variant", ["notes", "torch"])
@pytest.mark.parametrize("T,B,with_h0", SEQ_SHAPES)
def test_gru_matches_finite_differences(variant, T, B, with_h0):
    rng = np.random.default_rng(20 * T + B)
    I, H, C = 2, 3, 4
    p = seq_params(rng, I, H, C, gates=3)
    xs, targets, w, h0 = seq_data(rng, T, B, I, C, H, with_h0)
    run = lambda *a, **k: gru_forward_backward(*a, variant=variant, **k)  # noqa: E731
    cell = lambda q, x, h: gru_cell(q, x, h, variant)  # noqa: E731
    res = check_sequence_result(run, cell, p, xs, targets, w, h0)
    g_ih, g_hh = res.grads["rnn.bias_ih_l0"], res.grads["rnn.bias_hh_l0"]
    if variant == "notes":   # b_ih and b_hh enter only as b_r, b_z, b_h sums
        np.testing.assert_array_equal(g_ih, g_hh)
        assert g_ih is not g_hh
    else:                    # torch: equal for r, z; the n rows differ (r multiplies b_hn)
        np.testing.assert_array_equal(g_ih[:2 * H], g_hh[:2 * H])
        assert not np.allclose(g_ih[2 * H:], g_hh[2 * H:])


def test_default_step_weights_and_h0_are_ones_and_zeros():
    rng = np.random.default_rng(3)
    p = seq_params(rng, 2, 3, 2, gates=3)
    xs, targets = rng.normal(size=(3, 2, 2)), rng.integers(0, 2, (3, 2))
    a = gru_forward_backward(p, xs, targets)
    b = gru_forward_backward(p, xs, targets, step_weights=np.ones(3), h0=np.zeros((2, 3)))
    assert a.loss == b.loss
    for k in p:
        np.testing.assert_array_equal(a.grads[k], b.grads[k])


@pytest.mark.parametrize("which", ["rnn", "gru"])
def test_note000_weighted_loss_is_weighted_sum_of_steps(which):
    """Note 000: L = 0.1 L_1 + 0.1 L_2 + 0.8 L_3, and its gradient is the same mix of the
    per-step-only gradients (runs with weights (1,0,0), (0,1,0), (0,0,1))."""
    rng = np.random.default_rng(0)
    I, H, C, B = 3, 4, 5, 2
    gates, run = (1, rnn_forward_backward) if which == "rnn" else (3, gru_forward_backward)
    p = seq_params(rng, I, H, C, gates)
    xs, targets = rng.normal(size=(3, B, I)), rng.integers(0, C, (3, B))
    mix = (0.1, 0.1, 0.8)
    weighted = run(p, xs, targets, step_weights=mix)
    singles = [run(p, xs, targets, step_weights=np.eye(3)[k]) for k in range(3)]
    # L_k computed separately, straight from the definition: batch-mean cross-entropy of step k.
    logits = weighted.hidden @ p["out.weight"].T + p["out.bias"]
    L = [np.mean([-log_softmax(logits[k, b])[targets[k, b]] for b in range(B)]) for k in range(3)]
    for k in range(3):
        assert singles[k].loss == pytest.approx(L[k], rel=1e-13)
    assert weighted.loss == pytest.approx(0.1 * L[0] + 0.1 * L[1] + 0.8 * L[2], rel=1e-13)
    for k in p:
        mixed = sum(m * s.grads[k] for m, s in zip(mix, singles))
        np.testing.assert_allclose(weighted.grads[k], mixed, rtol=1e-12, atol=1e-15, err_msg=k)
    # Steps after k do not feed L_k: with weights (1, 0, 0) the errors at h_2, h_3 are zero.
    np.testing.assert_array_equal(singles[0].dL_dh[1:], 0.0)
    assert np.all(singles[0].dL_dh[0] != 0.0)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    p = seq_params(rng, 2, 3, 2, gates=1)
    before = {k: v.copy() for k, v in p.items()}
    res = rnn_forward_backward(p, rng.normal(size=(2, 1, 2)), np.zeros((2, 1), dtype=int))
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])
        assert res.grads[k] is not p[k]


@pytest.mark.parametrize("kind", ["rnn-tanh", "rnn-relu", "gru-torch"])
def test_matches_torch(kind):
    """torch.nn.RNN and torch.nn.GRU compute the same forms (GRU: variant="torch")."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    T, B, I, H, C = 4, 2, 3, 5, 3
    p = seq_params(rng, I, H, C, gates=3 if kind == "gru-torch" else 1)
    xs, targets, w, h0 = seq_data(rng, T, B, I, C, H, with_h0=True)
    if kind == "gru-torch":
        res = gru_forward_backward(p, xs, targets, step_weights=w, h0=h0, variant="torch")
        rnn = torch.nn.GRU(I, H).double()
    else:
        res = rnn_forward_backward(p, xs, targets, step_weights=w, h0=h0, nonlinearity=kind[4:])
        rnn = torch.nn.RNN(I, H, nonlinearity=kind[4:]).double()
    out = torch.nn.Linear(H, C).double()
    owner = {k: (rnn if k.startswith("rnn.") else out, k.split(".", 1)[1]) for k in p}
    with torch.no_grad():
        for k, (mod, name) in owner.items():
            getattr(mod, name).copy_(torch.from_numpy(p[k]))
    hidden, _ = rnn(torch.from_numpy(xs), torch.from_numpy(h0)[None])
    logits = out(hidden)
    loss = sum(w[t] * torch.nn.functional.cross_entropy(logits[t], torch.from_numpy(targets[t]))
               for t in range(T))
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(res.hidden, hidden.detach().numpy(), rtol=1e-12, atol=1e-14)
    for k, (mod, name) in owner.items():
        np.testing.assert_allclose(res.grads[k], getattr(mod, name).grad.numpy(),
                                   rtol=1e-10, atol=1e-13, err_msg=k)


# ----------------------------------------------------------------------------- error messages
def _seq_args(gates=1, T=3, B=2, I=2, H=3, C=4):
    rng = np.random.default_rng(1)
    return seq_params(rng, I, H, C, gates), rng.normal(size=(T, B, I)), np.zeros((T, B), int)


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


def _replace(d, key, value):
    return {**d, key: value}


P1, XS, TG = _seq_args()
P3 = _seq_args(gates=3)[0]
RNN, GRU = rnn_forward_backward, gru_forward_backward
SEQ_ERRORS = [
    (RNN, (_without(P1, "rnn.bias_hh_l0"), XS, TG), {},
     r"rnn_forward_backward: missing parameter\(s\) \['rnn.bias_hh_l0'\]"),
    (RNN, (_without(P1, "out.weight"), XS, TG), {}, r"missing parameter 'out.weight'"),
    (RNN, ({**P1, "extra": np.zeros(1)}, XS, TG), {}, r"unexpected parameter\(s\) \['extra'\]"),
    (RNN, (_replace(P1, "rnn.weight_ih_l0", np.zeros((3, 5))), XS, TG), {},
     r"'rnn.weight_ih_l0' has shape \(3, 5\), expected \(3, 2\)"),
    (GRU, (P1, XS, TG), {},
     r"gru_forward_backward: parameter 'rnn.weight_ih_l0' has shape \(3, 2\), expected \(9, 2\)"),
    (RNN, (P1, XS, TG[:2]), {}, r"xs has T=3 steps .* targets have shape \(2, 2\)"),
    (GRU, (P3, XS, TG[:, :1]), {}, r"targets have shape \(3, 1\), expected \(3, 2\)"),
    (RNN, (P1, XS, TG + 4), {}, r"targets must lie in \[0, 4\)"),
    (RNN, (P1, XS, TG.astype(float)), {}, r"integer class indices"),
    (RNN, (P1, XS[0], TG), {}, r"xs has shape \(2, 2\), expected \(T, B, I\)"),
    (RNN, (P1, XS, TG), {"step_weights": [1.0, 1.0]},
     r"rnn_forward_backward: step_weights has shape \(2,\), expected \(3,\)"),
    (GRU, (P3, XS, TG), {"step_weights": np.ones(4)}, r"step_weights has shape \(4,\)"),
    (GRU, (P3, XS, TG), {"h0": np.zeros(3)}, r"h0 has shape \(3,\), expected \(2, 3\)"),
    (RNN, (P1, XS, TG), {"nonlinearity": "sigmoid"}, r"nonlinearity must be one of"),
    (GRU, (P3, XS, TG), {"variant": "lstm"}, r"variant must be one of"),
]


@pytest.mark.parametrize("func,args,kwargs,match", SEQ_ERRORS)
def test_sequence_errors(func, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        func(*args, **kwargs)


MP = mlp_params(np.random.default_rng(2), [3, 4, 2])
X, Y = np.zeros((2, 3)), np.zeros((2, 2))
CE = {"loss": "cross_entropy"}
MLP_ERRORS = [
    ((_without(MP, "layers.1.bias"), X, Y), {},
     r"mlp_forward_backward: missing parameter\(s\) \['layers.1.bias'\]"),
    (({"layers.1.weight": np.zeros((2, 4))}, X, Y), {}, r"missing parameter 'layers.0.weight'"),
    ((_replace(MP, "layers.1.weight", np.zeros((2, 5))), X, Y), {},
     r"'layers.1.weight' has shape \(2, 5\), expected \(2, 4\)"),
    ((_replace(MP, "layers.0.bias", np.zeros(3)), X, Y), {},
     r"'layers.0.bias' has shape \(3,\), expected \(4,\)"),
    ((MP, np.zeros((2, 5)), Y), {}, r"x has shape \(2, 5\), expected \(B, 3\)"),
    ((MP, X, np.zeros((2, 3))), {}, r"y has shape \(2, 3\), expected \(2, 2\) for 'mse'"),
    ((MP, X, np.array([0, 2])), CE, r"targets must lie in \[0, 2\)"),
    ((MP, X, np.zeros(3, int)), CE, r"targets have shape \(3,\), expected \(2,\)"),
    ((MP, X, Y), {"activation": "gelu"}, r"activation must be one of"),
    ((MP, X, Y), {"loss": "nll"}, r"loss must be one of"),
]


@pytest.mark.parametrize("args,kwargs,match", MLP_ERRORS)
def test_mlp_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mlp_forward_backward(*args, **kwargs)
