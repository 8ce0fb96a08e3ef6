"""The engine's gradients of the nn models against the hand-derived reference (nn/manual.py).

float64 throughout; "agree" means max |engine - reference| below 1e-10 * max |reference| plus
an absolute part of 100 float64 epsilons times the largest gradient of the case (at least 1):
a gradient that is a small difference of large terms (a relu RNN with dead units) cannot be
held to a relative 1e-10 of itself. The reference itself is held to finite
differences in test_manual_reference.py; the gradchecks at the end hold every nn module to them,
so a mistake shared by the engine and the reference cannot hide.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import autograd_core as ag
import nn
from nn.losses import sequence_cross_entropy
from nn.manual import gru_forward_backward, mlp_forward_backward, rnn_forward_backward

REL = 1e-10
ABS = 100 * np.finfo(np.float64).eps  # times the case's scale (see the module docstring)
# kind -> (cell, layer keyword arguments, reference function, reference keyword arguments)
KINDS = {
    "rnn-tanh": ("rnn", {"nonlinearity": "tanh"}, rnn_forward_backward, {"nonlinearity": "tanh"}),
    "rnn-relu": ("rnn", {"nonlinearity": "relu"}, rnn_forward_backward, {"nonlinearity": "relu"}),
    "gru-notes": ("gru", {"variant": "notes"}, gru_forward_backward, {"variant": "notes"}),
    "gru-torch": ("gru", {"variant": "torch"}, gru_forward_backward, {"variant": "torch"}),
}


def rel_err(engine, reference):
    engine, reference = np.asarray(engine, np.float64), np.asarray(reference, np.float64)
    assert engine.shape == reference.shape
    diff, scale = np.max(np.abs(engine - reference)), np.max(np.abs(reference))
    return diff / scale if scale > 0 else (0.0 if diff == 0 else np.inf)


def assert_close(engine, reference, what, rel=REL, scale=None):
    """|engine - reference| <= rel * max|reference| + ABS * scale, scale defaulting to
    max(1, max|reference|)."""
    engine, reference = np.asarray(engine, np.float64), np.asarray(reference, np.float64)
    assert engine.shape == reference.shape
    size = float(np.max(np.abs(reference))) if reference.size else 0.0
    scale = max(1.0, size) if scale is None else scale
    diff = float(np.max(np.abs(engine - reference))) if reference.size else 0.0
    assert diff <= rel * size + ABS * scale, (
        f"{what}: max difference {diff:.3g} > {rel:g} * {size:.3g} + {ABS:.3g} * {scale:.3g}")


def assert_grads(engine, reference, what="", rel=REL):
    assert set(engine) == set(reference)
    scale = max([1.0] + [float(np.max(np.abs(g))) for g in reference.values() if np.size(g)])
    for name in reference:
        assert_close(engine[name], reference[name], f"{what} {name}", rel, scale)


# ----------------------------------------------------------------------------- set-up helpers
def make_case(kind, T, B, I, H, C, seed, scale=0.8, with_h0=True):
    """A float64 RecurrentClassifier with random weights, and data for it."""
    cell, layer_kw, _, _ = KINDS[kind]
    rng = np.random.default_rng(seed)
    model = nn.RecurrentClassifier(I, H, C, cell=cell, rng=rng, **layer_kw).double()
    params = {k: rng.normal(0, scale / np.sqrt(H), v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(params)
    xs = rng.normal(size=(T, B, I))
    targets = rng.integers(0, C, (T, B))
    weights = rng.uniform(-0.5, 2.0, T)                   # random per-step weights
    h0 = rng.normal(0, 0.5, (B, H)) if with_h0 else np.zeros((B, H))
    return model, params, xs, targets, weights, h0


def reference(kind, params, xs, targets, weights, h0):
    _, _, fb, ref_kw = KINDS[kind]
    return fb(params, xs, targets, step_weights=weights, h0=h0, **ref_kw)


def engine_grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def unroll(model, xs, h0):
    """The same layer, one step at a time: each h_t is one node that both the loss and h_{t+1}
    read, so its gradient is the TOTAL dL/dh_t (direct path plus the paths through later steps).
    The layer's stacked output is a different node: see test_stacked_output_sees_direct_path."""
    h, hs = ag.Tensor(h0[None]), []
    for t in range(xs.shape[0]):
        h_t = model.rnn(ag.Tensor(xs[t:t + 1]), h)[1][0]
        h_t.retain_grad()
        hs.append(h_t)
        h = h_t[None]
    return hs, model.out(ag.stack(hs))


def step_losses(logits, targets):
    """L_t, t = 1..T, each the batch-mean cross-entropy at step t, shape (T,)."""
    return nn.cross_entropy(logits, targets, reduction="none").mean(axis=1)


sizes = dict(B=st.integers(1, 4), I=st.integers(1, 4), H=st.integers(1, 5), C=st.integers(2, 4),
             seed=st.integers(0, 2 ** 32 - 1))


# ----------------------------------------------------------------------------- MLP
@settings(max_examples=40)
@given(activation=st.sampled_from(["tanh", "sigmoid", "relu"]),
       loss=st.sampled_from(["mse", "cross_entropy"]),
       widths=st.lists(st.integers(1, 6), min_size=2, max_size=5), B=st.integers(1, 6),
       seed=st.integers(0, 2 ** 32 - 1))
@example(activation="tanh", loss="mse", widths=[1, 1], B=1, seed=0)
def test_mlp_engine_equals_reference(activation, loss, widths, B, seed):
    rng = np.random.default_rng(seed)
    if loss == "cross_entropy" and widths[-1] < 2:
        widths = widths[:-1] + [2]
    model = nn.MLP(widths, activation=activation, rng=rng).double()
    params = {k: rng.normal(0, 0.8, v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(params)
    x = rng.normal(size=(B, widths[0]))
    y = rng.normal(size=(B, widths[-1])) if loss == "mse" else rng.integers(0, widths[-1], B)
    out = model(ag.Tensor(x))
    if loss == "mse":           # batch mean of E = 1/2 ||y - a||^2 (notes 002, 004)
        value = nn.mse_loss(out, ag.Tensor(y), reduction="sum") * (0.5 / B)
    else:
        value = nn.cross_entropy(out, y)
    ref = mlp_forward_backward(params, x, y, activation=activation, loss=loss)
    assert_close(value.item(), ref.loss, "loss")
    assert_grads(engine_grads(model, value), ref.grads, f"MLP {activation} {loss}")


@pytest.mark.parametrize("output_activation", ["sigmoid", "tanh", "relu"])
def test_mlp_output_activation_gives_the_notes_f_prime_of_z_L(output_activation):
    """Notes 002 and 004: a^(L) = f(z^(L)), delta^(L) = -(y - a^(L)) * f'(z^(L))."""
    rng = np.random.default_rng(7)
    model = nn.MLP([3, 4, 2], activation="sigmoid", output_activation=output_activation,
                   rng=rng).double()
    params = dict(model.state_dict())
    x, y = rng.normal(size=(5, 3)), rng.uniform(size=(5, 2))
    out = model(ag.Tensor(x))
    a_1 = 1 / (1 + np.exp(-(x @ params["layers.0.weight"].T + params["layers.0.bias"])))
    z_L = a_1 @ params["layers.1.weight"].T + params["layers.1.bias"]
    expected = {"sigmoid": 1 / (1 + np.exp(-z_L)), "tanh": np.tanh(z_L),
                "relu": np.maximum(z_L, 0)}[output_activation]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    value = nn.mse_loss(out, ag.Tensor(y), reduction="sum") * (0.5 / 5)
    ref = mlp_forward_backward(params, x, y, activation="sigmoid", loss="mse",
                               output_activation=output_activation)
    assert_close(value.item(), ref.loss, "loss")
    assert_grads(engine_grads(model, value), ref.grads, f"MLP output {output_activation}")
    assert "output_activation" in repr(model)
    with pytest.raises(ValueError, match="unknown output_activation 'softmax'"):
        nn.MLP([2, 2], output_activation="softmax")


def test_mlp_batch_gradient_is_mean_of_sample_gradients():
    """Note 002: mini-batch SGD averages the per-sample gradients of the batch."""
    rng = np.random.default_rng(3)
    model = nn.MLP([3, 5, 4, 2], activation="sigmoid", rng=rng).double()
    x, y = rng.normal(size=(6, 3)), rng.integers(0, 2, 6)
    full = engine_grads(model, nn.cross_entropy(model(ag.Tensor(x)), y))
    per_sample = [engine_grads(model, nn.cross_entropy(model(ag.Tensor(x[i:i + 1])), y[i:i + 1]))
                  for i in range(6)]
    assert_grads(full, {k: np.mean([g[k] for g in per_sample], axis=0) for k in full})


# ----------------------------------------------------------------------------- RNN and GRU
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=12)
@given(T=st.integers(1, 50), with_h0=st.booleans(), scale=st.floats(0.3, 1.5), **sizes)
@example(T=1, B=1, I=1, H=1, C=2, seed=0, with_h0=False, scale=1.0)
@example(T=50, B=1, I=2, H=3, C=3, seed=1, with_h0=True, scale=1.0)
def test_recurrent_engine_equals_reference(kind, T, B, I, H, C, seed, with_h0, scale):
    model, params, xs, targets, weights, h0 = make_case(kind, T, B, I, H, C, seed, scale, with_h0)
    ref = reference(kind, params, xs, targets, weights, h0)

    loss = model.loss(ag.Tensor(xs), targets, weights, ag.Tensor(h0[None]))
    assert_close(loss.item(), ref.loss, "loss")
    assert_grads(engine_grads(model, loss), ref.grads, kind)

    # The reference's total error terms dL/dh_t against the engine's gradient at each h_t.
    hs, logits = unroll(model, xs, h0)
    unrolled = sequence_cross_entropy(logits, targets, weights)
    assert_close(unrolled.item(), ref.loss, "unrolled loss")
    unrolled.backward()
    assert_close(np.stack([h.grad.numpy() for h in hs]), ref.dL_dh, "dL/dh_t")
    assert_close(np.stack([h.numpy() for h in hs]), ref.hidden, "h_t")


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_output_sees_direct_path(kind):
    """retain_grad() on the layer's stacked output gives dL/d(output) with the recurrence held
    fixed: only the direct path V^T dL/dC_t, because the later steps read the per-step h_t, not
    the stack (torch behaves the same). The reference's dL_dh is the total; the two agree at
    t = T only. Direct path from the reference's own values: w_t (y^_t - y_t) / B @ V."""
    T, B, C = 6, 2, 3
    model, params, xs, targets, weights, h0 = make_case(kind, T, B, 3, 4, C, seed=11)
    ref = reference(kind, params, xs, targets, weights, h0)
    logits, hidden, _ = model(ag.Tensor(xs), ag.Tensor(h0[None]))
    hidden.retain_grad()
    sequence_cross_entropy(logits, targets, weights).backward()
    c = ref.hidden @ params["out.weight"].T + params["out.bias"]
    y_hat = np.exp(c - c.max(-1, keepdims=True))
    y_hat /= y_hat.sum(-1, keepdims=True)
    direct = weights[:, None, None] * (y_hat - np.eye(C)[targets]) / B @ params["out.weight"]
    assert_close(hidden.grad.numpy(), direct, "direct path")
    assert_close(hidden.grad.numpy()[-1], ref.dL_dh[-1], "last step")
    assert rel_err(hidden.grad.numpy()[0], ref.dL_dh[0]) > 1e-3      # earlier steps differ


# ----------------------------------------------------------------------------- per-step sums
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=6)
@given(T=st.integers(1, 50), **sizes)
@example(T=1, B=1, I=1, H=1, C=2, seed=0)
def test_shared_weight_gradient_is_sum_of_step_gradients(kind, T, B, I, H, C, seed):
    """Notes 000, 003: the gradient of L = sum_t w_t L_t w.r.t. a shared weight is the sum of the
    per-step gradients, each step's obtained by backpropagating w_t L_t alone."""
    model, params, xs, targets, weights, h0 = make_case(kind, T, B, I, H, C, seed)
    full = engine_grads(model, model.loss(ag.Tensor(xs), targets, weights, ag.Tensor(h0[None])))
    names, ps = zip(*model.named_parameters())
    logits = model(ag.Tensor(xs), ag.Tensor(h0[None]))[0]
    per_step = step_losses(logits, targets) * weights
    total = {n: np.zeros(p.shape) for n, p in zip(names, ps)}
    for t in range(T):
        gs = ag.grad(per_step[t], ps, retain_graph=True, allow_unused=True)
        for n, g in zip(names, gs):
            total[n] += 0 if g is None else g.numpy()
    assert_grads(total, full, "sum over t of grad(w_t L_t)")
    assert_grads(total, reference(kind, params, xs, targets, weights, h0).grads, "vs reference")


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=5)
@given(T=st.integers(1, 6), **sizes)
@example(T=1, B=1, I=1, H=1, C=2, seed=0)
def test_reference_step_grads_and_step_loss_gradients(kind, T, B, I, H, C, seed):
    """Two different splittings of the same gradient; compare like with like.

    M[k][t] = contribution to dL_t/dθ (L_t weighted) of the USE of θ at step k (k <= t): the
    local derivative of h_k w.r.t. θ with h_{k-1} held fixed, times dL_t/dh_k. Then
      * the reference's step_grads[k] is the row sum over t >= k ("what step k's delta_k = dL/dh_k
        contributes", note 003 eq. 5: delta_k s_{k-1}^T, delta_k the TOTAL error at step k);
      * the gradient of w_t L_t alone (backpropagated through every step <= t) is the column
        sum over k <= t.
    Both sum to the full gradient, but step_grads[k] != grad(w_k L_k) for T > 1. The engine
    computes M[k][t] by re-running step k of the same layer on the detached h_{k-1} and
    backpropagating dL_t/dh_k (from the unroll) through it; the output layer is used at step t
    only, so its M is diagonal: grad of w_t L_t w.r.t. out.*."""
    model, params, xs, targets, weights, h0 = make_case(kind, T, B, I, H, C, seed)
    ref = reference(kind, params, xs, targets, weights, h0)
    named = list(model.named_parameters())
    rnn_ps = [(n, p) for n, p in named if n.startswith("rnn.")]
    out_ps = [(n, p) for n, p in named if n.startswith("out.")]
    hs, logits = unroll(model, xs, h0)
    per_step = step_losses(logits, targets) * weights
    prev = [h0] + [h.numpy() for h in hs[:-1]]
    local = [model.rnn(ag.Tensor(xs[k:k + 1]), ag.Tensor(prev[k][None]))[0] for k in range(T)]
    M = [[{n: np.zeros(p.shape) for n, p in named} for _ in range(T)] for _ in range(T)]
    for t in range(T):
        dh = ag.grad(per_step[t], hs, retain_graph=True, allow_unused=True)
        for n, g in zip([n for n, _ in out_ps], ag.grad(per_step[t], [p for _, p in out_ps],
                                                        retain_graph=True)):
            M[t][t][n] = g.numpy()
        for k in range(t + 1):
            gs = ag.grad(local[k], [p for _, p in rnn_ps], grad_outputs=dh[k].numpy()[None],
                         retain_graph=True, allow_unused=True)
            for (n, _), g in zip(rnn_ps, gs):
                M[k][t][n] = 0 * M[k][t][n] if g is None else g.numpy()
    names = [n for n, _ in named]
    for k in range(T):
        row = {n: sum(M[k][t][n] for t in range(T)) for n in names}
        assert_grads(row, {n: ref.step_grads[n][k] for n in names}, f"step_grads[{k}]")
    for t in range(T):
        column = {n: sum(M[k][t][n] for k in range(T)) for n in names}
        alone = ag.grad(per_step[t], [p for _, p in named], retain_graph=True, allow_unused=True)
        assert_grads(column, {n: 0 * column[n] if g is None else g.numpy()
                              for n, g in zip(names, alone)}, f"grad of w_{t} L_{t}")


@pytest.mark.parametrize("kind", KINDS)
def test_step_grads_differ_from_step_loss_gradients(kind):
    """The two splittings above really differ for T > 1: step_grads[0] gathers every later loss
    through delta_1, while the gradient of w_1 L_1 alone sees L_1 only; and grad(w_T L_T) spans
    every step's use of θ, step_grads[T-1] only the last."""
    model, params, xs, targets, weights, h0 = make_case(kind, 4, 2, 3, 4, 3, seed=7)
    ref = reference(kind, params, xs, targets, weights, h0)
    logits = model(ag.Tensor(xs), ag.Tensor(h0[None]))[0]
    per_step = step_losses(logits, targets) * weights
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0"):
        p = dict(model.named_parameters())[name]
        first = ag.grad(per_step[0], p, retain_graph=True)[0].numpy()
        last = ag.grad(per_step[-1], p, retain_graph=True)[0].numpy()
        assert rel_err(first, ref.step_grads[name][0]) > 1e-3, name
        assert rel_err(last, ref.step_grads[name][-1]) > 1e-3, name


@pytest.mark.parametrize("kind", KINDS)
def test_note000_weighted_loss_is_weighted_sum_of_step_gradients(kind):
    """Note 000's open question: L = 0.1 L_1 + 0.1 L_2 + 0.8 L_3 gives exactly
    0.1 dL_1 + 0.1 dL_2 + 0.8 dL_3, each dL_t from step_weights one-hot at t."""
    w = np.array([0.1, 0.1, 0.8])
    model, params, xs, targets, _, h0 = make_case(kind, 3, 2, 3, 4, 3, seed=5)
    x, h = ag.Tensor(xs), ag.Tensor(h0[None])
    step = [engine_grads(model, model.loss(x, targets, np.eye(3)[t], h)) for t in range(3)]
    weighted = engine_grads(model, model.loss(x, targets, w, h))
    assert_grads(weighted, {n: sum(w[t] * step[t][n] for t in range(3)) for n in weighted},
                 "weighted", rel=1e-13)
    ref = reference(kind, params, xs, targets, w, h0)
    assert_grads(weighted, ref.grads, "reference")
    ref_steps = [reference(kind, params, xs, targets, np.eye(3)[t], h0).grads for t in range(3)]
    assert_grads(step[2], ref_steps[2], "L_3 alone")
    assert_grads({n: sum(w[t] * ref_steps[t][n] for t in range(3)) for n in weighted}, ref.grads,
                 "reference weighted", rel=1e-13)


# ----------------------------------------------------------------------------- gradcheck
@contextlib.contextmanager
def substituted(model, tensors):
    """Run `model` with its parameters replaced by `tensors` (the float64 copies gradcheck makes);
    the originals come back afterwards."""
    named = list(model.named_parameters())
    owners = []
    for (name, param), tensor in zip(named, tensors):
        *path, attr = name.split(".")
        owner = model
        for part in path:
            owner = getattr(owner, part)
        owners.append((owner, attr, param))
        object.__setattr__(owner, attr, tensor)
    try:
        yield
    finally:
        for owner, attr, param in owners:
            object.__setattr__(owner, attr, param)


def check_module(model, forward, data):
    """gradcheck of forward(*data) through every parameter of `model` and the float inputs."""
    model.double()
    params = [p for _, p in model.named_parameters()]
    n = len(params)

    def fn(*args):
        with substituted(model, args[:n]):
            return forward(*args[n:])

    assert ag.gradcheck(fn, params + list(data), eps=1e-6, atol=1e-7, rtol=1e-5)


rng0 = np.random.default_rng(0)
X_SEQ = rng0.normal(size=(3, 2, 2))            # (T, B, I)
H0 = rng0.normal(0, 0.5, (1, 2, 3))            # (layers, B, H)
C0 = rng0.normal(0, 0.5, (1, 2, 3))


@pytest.mark.parametrize("cls,kw", [
    (nn.RNN, {"nonlinearity": "tanh"}), (nn.RNN, {"nonlinearity": "relu"}),
    (nn.GRU, {"variant": "notes"}), (nn.GRU, {"variant": "torch"}), (nn.LSTM, {}),
    (nn.RNN, {"num_layers": 2}), (nn.GRU, {"variant": "torch", "batch_first": True}),
    (nn.GRU, {"bias": False}), (nn.LSTM, {"num_layers": 2, "bias": False})])
def test_gradcheck_recurrent_layers(cls, kw):
    model = cls(2, 3, rng=1, **kw)
    layers = kw.get("num_layers", 1)
    h0 = np.tile(H0, (layers, 1, 1))
    if cls is nn.LSTM:
        def forward(x, h, c):
            out, (h_n, c_n) = model(x, (h, c))
            return out, h_n, c_n
        model_data = (X_SEQ, h0, np.tile(C0, (layers, 1, 1)))
    else:
        def forward(x, h):
            return model(x, h)
        # C-contiguous copy: ag.gradcheck's finite differences write through
        # x._data.reshape(-1), which is a copy (so no perturbation) for a transposed view.
        x = np.ascontiguousarray(X_SEQ.swapaxes(0, 1)) if kw.get("batch_first") else X_SEQ
        model_data = (x, h0)
    check_module(model, forward, model_data)


@pytest.mark.parametrize("cls,kw", [(nn.RNNCell, {}), (nn.RNNCell, {"nonlinearity": "relu"}),
                                    (nn.GRUCell, {"variant": "notes"}),
                                    (nn.GRUCell, {"variant": "torch"}), (nn.LSTMCell, {})])
def test_gradcheck_cells(cls, kw):
    model = cls(2, 3, rng=2, **kw)
    if cls is nn.LSTMCell:
        check_module(model, lambda x, h, c: model(x, (h, c)), (X_SEQ[0], H0[0], C0[0]))
    else:
        check_module(model, lambda x, h: model(x, h), (X_SEQ[0], H0[0]))


@pytest.mark.parametrize("cell,kw", [("rnn", {}), ("rnn", {"nonlinearity": "relu"}),
                                     ("gru", {"variant": "notes"}),
                                     ("gru", {"variant": "torch"}), ("lstm", {})])
def test_gradcheck_recurrent_classifier_loss(cell, kw):
    model = nn.RecurrentClassifier(2, 3, 4, cell=cell, rng=3, **kw)
    targets, weights = rng0.integers(0, 4, (3, 2)), np.array([0.1, 0.1, 0.8])
    check_module(model, lambda x: model.loss(x, targets, weights), (X_SEQ,))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_gradcheck_mlp(activation):
    model = nn.MLP([3, 4, 3, 2], activation=activation, rng=4)
    check_module(model, lambda x: model(x), (rng0.normal(size=(2, 3)),))


def test_gradcheck_feed_forward_modules_and_losses():
    x = rng0.normal(size=(3, 4))
    seq = nn.Sequential(nn.Linear(4, 3, rng=5), nn.Tanh(), nn.Linear(3, 3, bias=False, rng=6),
                        nn.Sigmoid(), nn.Linear(3, 3, rng=7), nn.ReLU())
    check_module(seq, lambda x: seq(x), (x,))
    emb = nn.Embedding(5, 3, rng=8)
    check_module(emb, lambda: emb(np.array([[0, 4], [4, 2]])), ())
    lin = nn.Linear(4, 3, rng=9)
    y_int, y_prob = np.array([0, 2, 1]), rng0.dirichlet(np.ones(3), 3)
    losses = [lambda z: nn.cross_entropy(z, y_int), lambda z: nn.cross_entropy(z, y_prob),
              lambda z: nn.cross_entropy(z, y_int, weight=[0.2, 1.0, 3.0]),
              lambda z: nn.nll_loss(ag.log_softmax(z, axis=-1), y_int, reduction="sum"),
              lambda z: nn.mse_loss(z, ag.Tensor(y_prob)),
              lambda z: nn.binary_cross_entropy_with_logits(z, ag.Tensor(y_prob),
                                                            pos_weight=[1.0, 2.0, 0.5])]
    for loss in losses:
        check_module(lin, lambda x, loss=loss: loss(lin(x)), (x,))
