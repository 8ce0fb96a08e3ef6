"""Layers (values, gradcheck of every module in float64) and losses (closed-form numpy, torch)."""
import re

import numpy as np
import pytest

import autograd_core as ag
import nn

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the numpy closed forms still run
    torch = F = None

RNG = np.random.default_rng(1234)


def randn(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------------- gradcheck helper
def _owner(module, dotted):
    *path, attr = dotted.split(".")
    for part in path:
        module = getattr(module, part)
    return module, attr


def module_gradcheck(module, inputs, reduce=lambda out: out, call=lambda m, *xs: m(*xs)):
    """gradcheck of `reduce(call(module, *inputs))` w.r.t. every parameter and every float
    input.

    The module is converted to float64; `fn` swaps gradcheck's float64 tensors in for the
    parameters (bypassing registration) for the duration of one forward, so the module's own
    forward code is what is checked."""
    module.double()
    names = [n for n, _ in module.named_parameters()]
    params = [p.numpy().copy() for _, p in module.named_parameters()]
    k = len(params)

    def fn(*tensors):
        saved = []
        for name, t in zip(names, tensors[:k]):
            owner, attr = _owner(module, name)
            saved.append((owner, attr, owner.__dict__[attr]))
            object.__setattr__(owner, attr, t)
        try:
            out = call(module, *tensors[k:])
            return tuple(reduce(o) for o in out) if isinstance(out, tuple) else reduce(out)
        finally:
            for owner, attr, p in saved:
                object.__setattr__(owner, attr, p)

    # guard against a vacuous check: every swapped-in parameter must reach the output
    probe = [ag.Tensor(p.copy(), requires_grad=True) for p in params] + list(inputs)
    outs = fn(*probe)
    total = sum(o for o in outs) if isinstance(outs, tuple) else outs
    for name, g in zip(names, ag.grad(total, probe[:k], allow_unused=True)):
        assert g is not None and np.abs(g.numpy()).max() > 0, f"{name} does not reach the output"
    assert ag.gradcheck(fn, params + list(inputs))
    # the real parameters are untouched and still registered
    assert [n for n, _ in module.named_parameters()] == names
    for (_, p), v in zip(module.named_parameters(), params):
        np.testing.assert_array_equal(p.numpy(), v)


# ------------------------------------------------------------------------- Linear
def test_linear_forward_closed_form_and_init():
    lin = nn.Linear(5, 3, rng=0)
    assert lin.weight.shape == (3, 5) and lin.bias.shape == (3,)
    assert lin.weight.dtype == np.float32
    bound = 1 / np.sqrt(5)
    assert np.abs(lin.weight.numpy()).max() <= bound and np.abs(lin.bias.numpy()).max() <= bound
    x = randn(2, 4, 5, dtype=np.float32)
    np.testing.assert_allclose(lin(x).numpy(), x @ lin.weight.numpy().T + lin.bias.numpy(),
                               rtol=1e-6, atol=1e-6)
    nb = nn.Linear(5, 3, bias=False, rng=0)
    assert nb.bias is None and [n for n, _ in nb.named_parameters()] == ["weight"]
    np.testing.assert_allclose(nb(x).numpy(), x @ nb.weight.numpy().T, rtol=1e-6)


def test_linear_gradients_closed_form():
    lin = nn.Linear(4, 3, rng=0, dtype=np.float64)
    x = ag.Tensor(randn(5, 4), requires_grad=True)
    g = randn(5, 3)
    (lin(x) * g).sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), g.T @ x.numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.bias.grad.numpy(), g.sum(0), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), g @ lin.weight.numpy(), rtol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradcheck(bias):
    module_gradcheck(nn.Linear(3, 2, bias=bias, rng=0), [randn(4, 3)],
                     reduce=lambda o: (o * o).sum())


@pytest.mark.parametrize("shape", [(), (4, 5), (5,)])
def test_linear_refuses_an_input_without_its_features(shape):
    lin = nn.Linear(3, 2, rng=0)
    with pytest.raises(ValueError, match=re.escape(f"Linear: expected input with last "
                                                   f"dimension 3, got shape {shape}")):
        lin(ag.Tensor(np.ones(shape, dtype=np.float32)))


def test_linear_bias_of_another_dtype_or_shape():
    x, w = ag.Tensor(randn(4, 3)), ag.Tensor(randn(2, 3), requires_grad=True)
    b32 = ag.Tensor(np.array([1.0, -2.0], dtype=np.float32), requires_grad=True)
    out = ag.linear(x, w, b32)  # float64 product, float32 bias: added, not in place
    np.testing.assert_array_equal(out.numpy(), x.numpy() @ w.numpy().T + b32.numpy())
    out.sum().backward()
    np.testing.assert_allclose(b32.grad.numpy(), [4.0, 4.0], rtol=0)
    with pytest.raises(ValueError, match="linear: the bias of shape \\(3,\\)"):
        ag.linear(x, w, ag.Tensor(np.ones(3)))
    with pytest.raises(ValueError, match="linear: the bias of shape \\(5, 2\\)"):
        ag.linear(x, w, ag.Tensor(np.ones((5, 2))))  # would grow the product


# ------------------------------------------------------------------------- Embedding
def test_embedding_lookup_and_repeated_indices_accumulate():
    emb = nn.Embedding(6, 3, rng=0, dtype=np.float64)
    idx = np.array([[1, 4, 1], [1, 0, 4]])
    out = emb(idx)
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[idx])
    g = randn(2, 3, 3)
    (out * g).sum().backward()
    expected = np.zeros((6, 3))
    np.add.at(expected, idx, g)
    np.testing.assert_allclose(emb.weight.grad.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(emb.weight.grad.numpy()[1], g[0, 0] + g[0, 2] + g[1, 0])
    assert not emb.weight.grad.numpy()[[2, 3, 5]].any()


def test_embedding_gradcheck():
    module_gradcheck(nn.Embedding(4, 2, rng=0), [np.array([3, 0, 3, 3])],
                     reduce=lambda o: (o * o * o).sum())


# ------------------------------------------------------------------------- activations, MLP
ACTS = {nn.Tanh: np.tanh, nn.Sigmoid: lambda a: 1 / (1 + np.exp(-a)),
        nn.ReLU: lambda a: np.maximum(a, 0)}


@pytest.mark.parametrize("cls", list(ACTS), ids=lambda c: c.__name__)
def test_activation_modules(cls):
    x = randn(3, 4)
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU's kink out of the finite differences
    np.testing.assert_allclose(cls()(x).numpy(), ACTS[cls](x), rtol=1e-12)
    assert list(cls().parameters()) == [] and repr(cls()) == f"{cls.__name__}()"
    assert ag.gradcheck(lambda t: (cls()(t) * cls()(t)).sum(), [x])


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_mlp_forward_closed_form_and_gradcheck(activation):
    mlp = nn.MLP([3, 4, 4, 2], activation=activation, rng=1)
    assert [n for n, _ in mlp.named_parameters()] == [
        f"layers.{i}.{k}" for i in range(3) for k in ("weight", "bias")]
    x = randn(5, 3)
    f = ACTS[{"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]]
    h = x
    for i, layer in enumerate(mlp.layers):
        h = h @ layer.weight.numpy().T.astype(np.float64) + layer.bias.numpy()
        h = f(h) if i < 2 else h
    np.testing.assert_allclose(mlp(x).numpy(), h, rtol=1e-5, atol=1e-6)
    target = np.array([0, 1, 1, 0, 1])
    module_gradcheck(mlp, [x], reduce=lambda o: nn.cross_entropy(o, target))


@pytest.mark.parametrize("name, make, state", [
    ("rnn2", lambda: nn.RNN(2, 3, num_layers=2, rng=0), (2, 2, 3)),
    ("rnn-relu-bf", lambda: nn.RNN(2, 3, nonlinearity="relu", batch_first=True, rng=0), None),
    ("gru2", lambda: nn.GRU(2, 3, num_layers=2, rng=0), (2, 2, 3)),
    ("gru-torch", lambda: nn.GRU(2, 3, variant="torch", rng=0), None),
    ("lstm2", lambda: nn.LSTM(2, 3, num_layers=2, rng=0), (2, 2, 3)),
    ("rnncell", lambda: nn.RNNCell(2, 3, rng=0), (2, 3)),
    ("grucell", lambda: nn.GRUCell(2, 3, rng=0), (2, 3)),
    ("grucell-torch", lambda: nn.GRUCell(2, 3, variant="torch", rng=0), (2, 3)),
    ("lstmcell", lambda: nn.LSTMCell(2, 3, rng=0), (2, 3)),
], ids=["rnn2", "rnn-relu-bf", "gru2", "gru-torch", "lstm2", "rnncell", "grucell",
        "grucell-torch", "lstmcell"])
def test_recurrent_gradcheck(name, make, state):
    module = make()
    lstm = "lstm" in name
    x = randn(2, 2) if "cell" in name else randn(3, 2, 2)
    states = [] if state is None else [0.5 * randn(*state) for _ in range(2 if lstm else 1)]

    def call(m, x, *s):
        return m(x, tuple(s)) if lstm and s else m(x, *s)

    def reduce(o):
        if isinstance(o, tuple):  # LSTM's (h_n, c_n)
            return sum(reduce(s) for s in o)
        return (o * np.cos(np.arange(o.size)).reshape(o.shape)).sum()

    module_gradcheck(module, [x] + states, reduce=reduce, call=call)


# ------------------------------------------------------------------------- losses: numpy forms
def np_log_softmax(z, axis):
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def np_ce(logits, target, axis=-1, weight=None, reduction="mean"):
    lp = np.moveaxis(np_log_softmax(logits, axis), axis, -1)
    c = lp.shape[-1]
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    if target.dtype.kind == "f":
        t = np.moveaxis(target, axis, -1)
        per = -(lp * t * w).sum(-1)
        return {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    picked = np.take_along_axis(lp, target[..., None], -1)[..., 0]
    per = -w[target] * picked
    return {"none": per, "sum": per.sum(), "mean": per.sum() / w[target].sum()}[reduction]


def check_torch(ours, fn_torch, *arrays):
    if torch is None:
        return
    expected = fn_torch(*[torch.from_numpy(a) for a in arrays]).numpy()
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_int_targets(reduction, weighted):
    logits, target = randn(6, 4), np.array([0, 3, 1, 1, 2, 3])
    weight = np.array([0.5, 2.0, 1.0, 3.0]) if weighted else None
    x = ag.Tensor(logits, requires_grad=True)
    loss = nn.cross_entropy(x, target, reduction=reduction, weight=weight)
    np.testing.assert_allclose(loss.numpy(), np_ce(logits, target, weight=weight,
                                                   reduction=reduction), rtol=1e-12)
    check_torch(loss, lambda z, t: F.cross_entropy(
        z, t, weight=None if weight is None else torch.from_numpy(weight),
        reduction=reduction), logits, target)
    if reduction == "mean":
        w = np.ones(4) if weight is None else weight
        p = np.exp(np_log_softmax(logits, -1))
        expected = w[target][:, None] * (p - np.eye(4)[target]) / w[target].sum()
        loss.backward()
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_probability_targets(reduction, weighted):
    logits = randn(5, 3)
    probs = np.exp(np_log_softmax(randn(5, 3), -1))
    weight = np.array([1.0, 0.2, 4.0]) if weighted else None
    loss = nn.cross_entropy(logits, probs, reduction=reduction, weight=weight)
    np.testing.assert_allclose(loss.numpy(), np_ce(logits, probs, weight=weight,
                                                   reduction=reduction), rtol=1e-12)
    check_torch(loss, lambda z, t: F.cross_entropy(
        z, t, weight=None if weight is None else torch.from_numpy(weight),
        reduction=reduction), logits, probs)


@pytest.mark.parametrize("targets", ["int", "prob"])
def test_cross_entropy_class_axis(targets):
    logits = randn(2, 4, 3)  # (N, C, d) with the classes on axis 1, torch's layout
    target = RNG.integers(0, 4, (2, 3)) if targets == "int" else \
        np.exp(np_log_softmax(randn(2, 4, 3), 1))
    weight = np.array([1.0, 2.0, 0.5, 1.5])
    for reduction in ("mean", "sum", "none"):
        loss = nn.cross_entropy(logits, target, reduction=reduction, weight=weight, axis=1)
        np.testing.assert_allclose(loss.numpy(), np_ce(logits, target, axis=1, weight=weight,
                                                       reduction=reduction), rtol=1e-12)
        check_torch(loss, lambda z, t: F.cross_entropy(
            z, t, weight=torch.from_numpy(weight), reduction=reduction), logits, target)
    # the same as moving the class axis last
    moved = nn.cross_entropy(np.moveaxis(logits, 1, -1), np.moveaxis(target, 1, -1)
                             if targets == "prob" else target, reduction="none")
    np.testing.assert_allclose(nn.cross_entropy(logits, target, reduction="none",
                                                axis=1).numpy(), moved.numpy(), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(reduction):
    lp = np_log_softmax(randn(7, 5), -1)
    target = RNG.integers(0, 5, 7)
    weight = np.linspace(0.5, 2.5, 5)
    for w in (None, weight):
        loss = nn.nll_loss(lp, target, reduction=reduction, weight=w)
        ww = np.ones(5) if w is None else w
        per = -ww[target] * lp[np.arange(7), target]
        expected = {"none": per, "sum": per.sum(), "mean": per.sum() / ww[target].sum()}
        np.testing.assert_allclose(loss.numpy(), expected[reduction], rtol=1e-12)
        check_torch(loss, lambda a, t: F.nll_loss(
            a, t, weight=None if w is None else torch.from_numpy(w), reduction=reduction),
            lp, target)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(reduction):
    a, b = randn(3, 4), randn(3, 4)
    x = ag.Tensor(a, requires_grad=True)
    loss = nn.mse_loss(x, b, reduction=reduction)
    sq = (a - b) ** 2
    np.testing.assert_allclose(loss.numpy(), {"none": sq, "sum": sq.sum(),
                                              "mean": sq.mean()}[reduction], rtol=1e-12)
    check_torch(loss, lambda u, v: F.mse_loss(u, v, reduction=reduction), a, b)
    if reduction == "mean":
        loss.backward()
        np.testing.assert_allclose(x.grad.numpy(), 2 * (a - b) / a.size, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [None, np.array([0.5, 1.0, 3.0])])
def test_bce_with_logits(reduction, pos_weight):
    z, y = randn(4, 3), RNG.uniform(0, 1, (4, 3))
    y[0] = [0.0, 1.0, 1.0]
    x = ag.Tensor(z, requires_grad=True)
    loss = nn.binary_cross_entropy_with_logits(x, y, reduction=reduction,
                                               pos_weight=pos_weight)
    s = 1 / (1 + np.exp(-z))
    pw = np.ones(3) if pos_weight is None else pos_weight
    per = -(pw * y * np.log(s) + (1 - y) * np.log(1 - s))
    np.testing.assert_allclose(loss.numpy(), {"none": per, "sum": per.sum(),
                                              "mean": per.mean()}[reduction], rtol=1e-10)
    check_torch(loss, lambda u, v: F.binary_cross_entropy_with_logits(
        u, v, reduction=reduction,
        pos_weight=None if pos_weight is None else torch.from_numpy(pos_weight)), z, y)
    if reduction == "sum":
        loss.backward()
        np.testing.assert_allclose(x.grad.numpy(), pw * y * (s - 1) + (1 - y) * s,
                                   rtol=1e-10, atol=1e-14)


def test_sequence_cross_entropy_step_weights():
    logits, targets = randn(3, 4, 5), RNG.integers(0, 5, (3, 4))
    x = ag.Tensor(logits, requires_grad=True)
    loss = nn.sequence_cross_entropy(x, targets, step_weights=(0.1, 0.1, 0.8))
    steps = [np_ce(logits[t], targets[t]) for t in range(3)]
    np.testing.assert_allclose(loss.item(), 0.1 * steps[0] + 0.1 * steps[1] + 0.8 * steps[2],
                               rtol=1e-12)
    loss.backward()
    # the gradient of the weighted sum of separate per-step losses
    xs = ag.Tensor(logits, requires_grad=True)
    total = sum(w * nn.cross_entropy(xs[t], targets[t]) for t, w in enumerate((.1, .1, .8)))
    total.backward()
    np.testing.assert_allclose(x.grad.numpy(), xs.grad.numpy(), rtol=1e-12, atol=1e-15)
    if torch is not None:
        tl = sum(w * F.cross_entropy(torch.from_numpy(logits[t]), torch.from_numpy(targets[t]))
                 for t, w in enumerate((0.1, 0.1, 0.8)))
        np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-12)
    unweighted = nn.sequence_cross_entropy(logits, targets)
    np.testing.assert_allclose(unweighted.item(), sum(steps), rtol=1e-12)


# ------------------------------------------------------------------------- stability
def test_cross_entropy_huge_logits_float32_finite():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], dtype=np.float32)
    x = ag.Tensor(logits, requires_grad=True)
    loss = nn.cross_entropy(x, np.array([1, 1]), reduction="sum")
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), 2e4, rtol=1e-6)
    loss.backward()
    assert np.isfinite(x.grad.numpy()).all()
    np.testing.assert_allclose(x.grad.numpy(), [[1, -1, 0], [0, 0, 0]], atol=1e-6)
    probs = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], dtype=np.float32)
    soft = nn.cross_entropy(logits, probs, reduction="none")
    assert np.isfinite(soft.numpy()).all()
    np.testing.assert_allclose(soft.numpy(), [2e4, 1e4], rtol=1e-6)


def test_bce_with_logits_huge_logits_float32_finite():
    z = np.array([1e4, -1e4, 1e4, -1e4], dtype=np.float32)
    y = np.array([0.0, 1.0, 1.0, 0.0], dtype=np.float32)
    for pos_weight in (None, np.float32(2.0)):
        x = ag.Tensor(z, requires_grad=True)
        loss = nn.binary_cross_entropy_with_logits(x, y, reduction="none",
                                                   pos_weight=pos_weight)
        assert loss.dtype == np.float32
        pw = 1.0 if pos_weight is None else 2.0
        np.testing.assert_allclose(loss.numpy(), [1e4, pw * 1e4, 0, 0], rtol=1e-6, atol=1e-6)
        loss.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), [1, -pw, 0, 0], atol=1e-6)


# ------------------------------------------------------------------------- bad input
LOGITS = np.zeros((4, 3), dtype=np.float32)
INT3 = np.array([0, 1, 2, 0])
SEQ = (np.zeros((2, 4, 3)), np.zeros((2, 4), dtype=np.int64))
BAD_INPUT = {
    # the message names the function the user called, and the shapes / dtype / range
    "ce-target-shape": (lambda: nn.cross_entropy(LOGITS, np.array([0, 1, 2])), ValueError,
                        r"^cross_entropy:.*target shape \(3,\).*\(4, 3\)"),
    "ce-prob-shape": (lambda: nn.cross_entropy(LOGITS, np.zeros((4, 2), np.float32)),
                      ValueError, r"^cross_entropy:.*\(4, 3\).*\(4, 2\)"),
    "ce-class-range": (lambda: nn.cross_entropy(LOGITS, np.array([0, 1, 3, 0])), IndexError,
                       r"^cross_entropy:.*out of range \[0, 3\).*max 3"),
    "ce-0d": (lambda: nn.cross_entropy(np.float32(1.0), np.array(0)), ValueError,
              r"^cross_entropy:.*0-d"),
    "nll-float-target": (lambda: nn.nll_loss(LOGITS, INT3.astype(np.float64)), TypeError,
                         r"^nll_loss:.*integers.*float64"),
    "nll-target-shape": (lambda: nn.nll_loss(LOGITS, np.zeros((4, 1), np.int64)), ValueError,
                         r"^nll_loss:.*target shape \(4, 1\).*\(4, 3\)"),
    "nll-negative": (lambda: nn.nll_loss(LOGITS, np.array([0, -1, 2, 0])), IndexError,
                     r"^nll_loss:.*out of range.*min -1"),
    "nll-weight-shape": (lambda: nn.nll_loss(LOGITS, INT3, weight=np.ones(2)), ValueError,
                         r"^nll_loss:.*weight.*\(3,\).*\(2,\)"),
    "mse-shape": (lambda: nn.mse_loss(LOGITS, np.zeros(3, np.float32)), ValueError,
                  r"^mse_loss:.*\(4, 3\).*\(3,\)"),
    "bce-shape": (lambda: nn.binary_cross_entropy_with_logits(LOGITS, np.zeros(4, np.float32)),
                  ValueError, r"^binary_cross_entropy_with_logits:.*\(4, 3\).*\(4,\)"),
    "seq-ndim": (lambda: nn.sequence_cross_entropy(LOGITS, INT3), ValueError,
                 r"^sequence_cross_entropy:.*\(T, B, C\).*\(4, 3\)"),
    "seq-weights": (lambda: nn.sequence_cross_entropy(*SEQ, step_weights=(0.1, 0.1, 0.8)),
                    ValueError, r"^sequence_cross_entropy:.*step_weights.*\(2,\).*\(3,\)"),
    "ce-reduction": (lambda: nn.cross_entropy(LOGITS, INT3, reduction="avg"), ValueError,
                     r"^cross_entropy:.*reduction.*'mean'.*'avg'"),
    "nll-reduction": (lambda: nn.nll_loss(LOGITS, INT3, reduction="avg"), ValueError,
                      r"^nll_loss:.*reduction.*'mean'.*'avg'"),
    "mse-reduction": (lambda: nn.mse_loss(LOGITS, LOGITS, reduction="avg"), ValueError,
                      r"^mse_loss:.*reduction.*'mean'.*'avg'"),
    "bce-reduction": (lambda: nn.binary_cross_entropy_with_logits(LOGITS, LOGITS,
                                                                   reduction="avg"),
                      ValueError, r"^binary_cross_entropy_with_logits:.*reduction.*'avg'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_loss_bad_input_errors(case):
    call, exc, pattern = BAD_INPUT[case]
    with pytest.raises(exc) as info:
        call()
    assert re.search(pattern, str(info.value)), str(info.value)
