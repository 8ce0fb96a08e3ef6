"""nn.to_torch / nn.from_torch: the same function on both sides, both ways.

In float64, outputs (and final states) agree to 1e-10 and the gradients of every parameter and
of the input to 1e-9, for every supported module; a model trained here continues in torch with
the same loss and the same next optimizer steps."""
import re

import numpy as np
import pytest

import autograd_core as ag
import nn
from nn import manual, optim

torch = pytest.importorskip("torch")
tm = pytest.importorskip("nn.torch_modules")

OUT_TOL, GRAD_TOL = 1e-10, 1e-9
T, B, I, H, C = 5, 3, 4, 6, 3


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def flat(out):
    """The tensors of a (possibly nested) tuple of outputs, in order."""
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in flat(item)]
    return [out]


def as_np(t):
    return t.numpy() if isinstance(t, ag.Tensor) else t.detach().cpu().numpy()


def assert_close(a, b, tol, what):
    a, b = as_np(a), as_np(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)


def assert_same_function(ours, theirs, inputs, seed=7):
    """Forward both on the same float64 inputs, compare every output, then backward the same
    random weighted sum of the outputs and compare every gradient."""
    xo = [ag.Tensor(a.copy(), requires_grad=True) for a in inputs]
    xt = [torch.tensor(a.copy(), requires_grad=True) for a in inputs]
    out_o, out_t = flat(ours(*xo)), flat(theirs(*xt))
    assert len(out_o) == len(out_t)
    rng = np.random.default_rng(seed)
    loss_o, loss_t = 0, 0
    for k, (a, b) in enumerate(zip(out_o, out_t)):
        assert_close(a, b, OUT_TOL, f"output {k}")
        w = rng.standard_normal(a.shape)
        loss_o = loss_o + (a * w).sum()
        loss_t = loss_t + (b * torch.from_numpy(w)).sum()
    loss_o.backward()
    loss_t.backward()
    named_t = dict(theirs.named_parameters())
    named_o = dict(ours.named_parameters())
    assert list(named_o) == list(named_t)
    for name, p in named_o.items():
        assert p.grad is not None, f"{name}: no gradient"
        assert_close(p.grad, named_t[name].grad, GRAD_TOL, f"grad of {name}")
    for k, (a, b) in enumerate(zip(xo, xt)):
        assert_close(a.grad, b.grad, GRAD_TOL, f"grad of input {k}")


def assert_same_parameters(ours, theirs):
    """Same keys in the same order, bit-identical values, same dtype."""
    so, st = ours.state_dict(), theirs.state_dict()
    assert list(so) == list(st)
    for k in so:
        assert so[k].dtype == st[k].detach().numpy().dtype, k
        np.testing.assert_array_equal(so[k], st[k].detach().numpy(), err_msg=k)


def randn(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


def seq_input(batch_first, unbatched=False):
    if unbatched:
        return randn(T, I)
    return randn(B, T, I) if batch_first else randn(T, B, I)


def state(num_layers, unbatched=False, seed=2):
    return randn(num_layers, H, seed=seed) if unbatched else randn(num_layers, B, H, seed=seed)


# ---- what each of our modules becomes ------------------------------------------------------
F64 = np.float64
OURS = {
    "linear": (lambda: nn.Linear(I, H, rng=0, dtype=F64), torch.nn.Linear, [randn(2, T, I)]),
    "linear-nobias": (lambda: nn.Linear(I, H, bias=False, rng=0, dtype=F64), torch.nn.Linear,
                      [randn(B, I)]),
    "mlp-tanh": (lambda: nn.MLP([I, 7, 5, C], rng=0, dtype=F64), tm.MLP, [randn(B, I)]),
    "mlp-relu": (lambda: nn.MLP([I, 7, C], activation="relu", rng=0, dtype=F64), tm.MLP,
                 [randn(B, I)]),
    "mlp-sigmoid": (lambda: nn.MLP([I, C], activation="sigmoid", rng=0, dtype=F64), tm.MLP,
                    [randn(B, I)]),
    "sequential": (lambda: nn.Sequential(nn.Linear(I, 7, rng=0, dtype=F64), nn.Tanh(),
                                         nn.Linear(7, 5, rng=1, dtype=F64), nn.ReLU(),
                                         nn.Linear(5, C, rng=2, dtype=F64), nn.Sigmoid()),
                   torch.nn.Sequential, [randn(B, I)]),
}
for nl in ("tanh", "relu"):
    for layers in (1, 2):
        for bf in (False, True):
            OURS[f"rnn-{nl}-l{layers}-bf{int(bf)}"] = (
                lambda nl=nl, layers=layers, bf=bf: nn.RNN(I, H, num_layers=layers,
                                                           nonlinearity=nl, batch_first=bf,
                                                           rng=0, dtype=F64),
                torch.nn.RNN, [seq_input(bf), state(layers)])
for variant, kind in (("torch", torch.nn.GRU), ("notes", tm.NotesGRU)):
    for layers in (1, 2):
        for bf in (False, True):
            OURS[f"gru-{variant}-l{layers}-bf{int(bf)}"] = (
                lambda v=variant, layers=layers, bf=bf: nn.GRU(I, H, num_layers=layers,
                                                               batch_first=bf, variant=v,
                                                               rng=0, dtype=F64),
                kind, [seq_input(bf), state(layers)])
    OURS[f"gru-{variant}-nobias-no-h0"] = (
        lambda v=variant: nn.GRU(I, H, bias=False, variant=v, rng=0, dtype=F64), kind,
        [seq_input(False)])
    OURS[f"gru-{variant}-unbatched"] = (
        lambda v=variant: nn.GRU(I, H, num_layers=2, variant=v, rng=0, dtype=F64), kind,
        [seq_input(False, unbatched=True), state(2, unbatched=True)])
for layers in (1, 2):
    for bf in (False, True):
        OURS[f"lstm-l{layers}-bf{int(bf)}"] = (
            lambda layers=layers, bf=bf: nn.LSTM(I, H, num_layers=layers, batch_first=bf,
                                                 rng=0, dtype=F64),
            torch.nn.LSTM, [seq_input(bf)])
for cell, extra in (("rnn", {}), ("rnn", {"nonlinearity": "relu", "num_layers": 2}),
                    ("gru", {}), ("gru", {"variant": "torch"}), ("gru", {"num_layers": 2}),
                    ("lstm", {}), ("lstm", {"num_layers": 2})):
    name = "-".join([f"classifier-{cell}"] + [str(v) for v in extra.values()])
    OURS[name] = (lambda cell=cell, extra=extra: nn.RecurrentClassifier(
        I, H, C, cell=cell, rng=0, dtype=F64, **extra), tm.RecurrentClassifier,
        [seq_input(False)])


@pytest.mark.parametrize("name", list(OURS))
def test_to_torch_computes_the_same_function(name):
    make, torch_type, inputs = OURS[name]
    ours = make()
    theirs = nn.to_torch(ours)
    assert type(theirs) is torch_type
    assert_same_parameters(ours, theirs)
    assert_same_function(ours, theirs, inputs)


def test_recurrent_layers_become_torchs_own():
    assert type(nn.to_torch(nn.RNN(I, H, rng=0))) is torch.nn.RNN
    assert type(nn.to_torch(nn.LSTM(I, H, rng=0))) is torch.nn.LSTM
    assert type(nn.to_torch(nn.GRU(I, H, variant="torch", rng=0))) is torch.nn.GRU
    assert type(nn.to_torch(nn.GRU(I, H, rng=0))) is tm.NotesGRU  # the notes' equations
    relu = nn.to_torch(nn.RNN(I, H, num_layers=3, nonlinearity="relu", batch_first=True,
                              rng=0))
    assert (relu.nonlinearity, relu.num_layers, relu.batch_first) == ("relu", 3, True)
    classifier = nn.to_torch(nn.RecurrentClassifier(I, H, C, cell="lstm", rng=0))
    assert type(classifier.rnn) is torch.nn.LSTM and type(classifier.out) is torch.nn.Linear


@pytest.mark.parametrize("np_dtype, torch_dtype", [(np.float32, torch.float32),
                                                   (np.float64, torch.float64)])
def test_dtype_follows_the_source(np_dtype, torch_dtype):
    ours = nn.RecurrentClassifier(I, H, C, cell="gru", rng=0, dtype=np_dtype)
    theirs = nn.to_torch(ours)
    assert {p.dtype for p in theirs.parameters()} == {torch_dtype}
    back = nn.from_torch(theirs)
    assert {p.dtype for p in back.parameters()} == {np.dtype(np_dtype)}
    assert_same_parameters(back, theirs)


def test_the_notes_gru_in_torch_follows_the_hand_derived_formulas():
    """Independent of this engine: torch's autograd through NotesGRU against note 001's
    BPTT written out in numpy (nn.manual), loss and every gradient."""
    ours = nn.RecurrentClassifier(I, H, C, cell="gru", rng=3, dtype=F64)
    theirs = nn.to_torch(ours)
    xs = randn(T, B, I, seed=4)
    targets = np.random.default_rng(5).integers(0, C, size=(T, B))
    weights = [0.1, 0.2, 0.3, 0.4, 0.5]
    loss = theirs.loss(torch.from_numpy(xs), targets, step_weights=weights)
    loss.backward()
    ref = manual.gru_forward_backward(ours.state_dict(), xs, targets, step_weights=weights)
    np.testing.assert_allclose(loss.item(), ref.loss, rtol=1e-12)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ref.grads[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


# ---- what each torch module becomes ------------------------------------------------------
D64 = torch.float64
TORCH = {
    "linear": (lambda: torch.nn.Linear(I, H, dtype=D64), nn.Linear, [randn(B, I)]),
    "linear-nobias": (lambda: torch.nn.Linear(I, H, bias=False, dtype=D64), nn.Linear,
                      [randn(2, T, I)]),
    "sequential": (lambda: torch.nn.Sequential(torch.nn.Linear(I, 7, dtype=D64),
                                               torch.nn.Tanh(), torch.nn.Linear(7, 5, dtype=D64),
                                               torch.nn.ReLU(), torch.nn.Linear(5, C, dtype=D64),
                                               torch.nn.Sigmoid()),
                   nn.Sequential, [randn(B, I)]),
}
for nl in ("tanh", "relu"):
    for layers in (1, 2):
        for bf in (False, True):
            TORCH[f"rnn-{nl}-l{layers}-bf{int(bf)}"] = (
                lambda nl=nl, layers=layers, bf=bf: torch.nn.RNN(
                    I, H, num_layers=layers, nonlinearity=nl, batch_first=bf, dtype=D64),
                nn.RNN, [seq_input(bf), state(layers)])
for layers in (1, 2):
    for bf in (False, True):
        TORCH[f"gru-l{layers}-bf{int(bf)}"] = (
            lambda layers=layers, bf=bf: torch.nn.GRU(I, H, num_layers=layers, batch_first=bf,
                                                      dtype=D64),
            nn.GRU, [seq_input(bf), state(layers)])
        TORCH[f"lstm-l{layers}-bf{int(bf)}"] = (
            lambda layers=layers, bf=bf: torch.nn.LSTM(I, H, num_layers=layers,
                                                       batch_first=bf, dtype=D64),
            nn.LSTM, [seq_input(bf)])
TORCH["gru-nobias"] = (lambda: torch.nn.GRU(I, H, bias=False, dtype=D64), nn.GRU,
                       [seq_input(False)])
TORCH["lstm-nobias"] = (lambda: torch.nn.LSTM(I, H, bias=False, dtype=D64), nn.LSTM,
                        [seq_input(False)])
TORCH["rnn-unbatched"] = (lambda: torch.nn.RNN(I, H, num_layers=2, dtype=D64), nn.RNN,
                          [seq_input(False, unbatched=True), state(2, unbatched=True)])
# the modules to_torch makes come back as what they were
TORCH["notes-gru"] = (lambda: tm.NotesGRU(I, H, num_layers=2, batch_first=True, dtype=D64),
                      nn.GRU, [seq_input(True), state(2)])
TORCH["mlp"] = (lambda: tm.MLP([I, 7, C], activation="relu", dtype=D64), nn.MLP,
                [randn(B, I)])
TORCH["classifier"] = (lambda: tm.RecurrentClassifier(I, H, C, cell="lstm", num_layers=2,
                                                      dtype=D64),
                       nn.RecurrentClassifier, [seq_input(False)])


@pytest.mark.parametrize("name", list(TORCH))
def test_from_torch_computes_the_same_function(name):
    make, our_type, inputs = TORCH[name]
    torch.manual_seed(0)
    theirs = make()
    ours = nn.from_torch(theirs)
    assert type(ours) is our_type
    assert_same_parameters(ours, theirs)
    assert_same_function(ours, theirs, inputs)


def test_from_torch_keeps_the_configuration():
    ours = nn.from_torch(torch.nn.RNN(I, H, num_layers=3, nonlinearity="relu",
                                      batch_first=True, bias=False))
    assert (ours.num_layers, ours.nonlinearity, ours.batch_first, ours.bias) == \
        (3, "relu", True, False)
    assert nn.from_torch(torch.nn.GRU(I, H)).variant == "torch"
    assert nn.from_torch(tm.NotesGRU(I, H)).variant == "notes"
    seq = nn.from_torch(torch.nn.Sequential(torch.nn.Linear(I, H), torch.nn.Tanh()))
    assert list(seq.state_dict()) == ["0.weight", "0.bias"]
    assert seq.state_dict()["0.weight"].dtype == np.float32


@pytest.mark.parametrize("make", [
    lambda: nn.Linear(I, H, rng=0, dtype=F64),
    lambda: nn.GRU(I, H, num_layers=2, rng=0, dtype=F64),
    lambda: nn.GRU(I, H, variant="torch", batch_first=True, rng=0, dtype=F64),
    lambda: nn.RecurrentClassifier(I, H, C, cell="rnn", nonlinearity="relu", rng=0, dtype=F64),
], ids=["linear", "notes-gru", "torch-gru", "classifier"])
def test_round_trip_returns_the_same_module(make):
    ours = make()
    back = nn.from_torch(nn.to_torch(ours))
    assert type(back) is type(ours) and repr(back) == repr(ours)
    assert_same_parameters(back, nn.to_torch(ours))
    for (n, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=n)


# ---- what carries over, what is left alone -------------------------------------------------
def test_requires_grad_and_mode_carry_over_both_ways():
    ours = nn.MLP([I, 5, C], rng=0)
    ours.layers[0].weight.requires_grad = False
    ours.eval()
    theirs = nn.to_torch(ours)
    assert not theirs.training
    assert [p.requires_grad for p in theirs.parameters()] == [False, True, True, True]
    theirs.train()
    theirs.layers[1].bias.requires_grad_(False)
    back = nn.from_torch(theirs)
    assert back.training
    assert [p.requires_grad for p in back.parameters()] == [False, True, True, False]


def test_the_copies_share_no_memory():
    ours = nn.Linear(I, H, rng=0, dtype=F64)
    theirs = nn.to_torch(ours)
    with torch.no_grad():
        theirs.weight.add_(1.0)
    back = nn.from_torch(theirs)
    with torch.no_grad():
        theirs.weight.add_(1.0)
    np.testing.assert_array_equal(back.weight.numpy(), ours.weight.numpy() + 1.0)


def test_any_memory_layout_is_copied():
    ours = nn.Linear(I, H, rng=0, dtype=F64)
    reversed_rows = ours.weight.numpy()[::-1].copy()[::-1]  # negative strides
    ours.weight.data = reversed_rows
    assert ours.weight.numpy().strides[0] < 0
    np.testing.assert_array_equal(nn.to_torch(ours).weight.detach().numpy(), reversed_rows)


def test_random_generators_are_left_as_they_were():
    torch.manual_seed(11)
    nn.manual_seed(11)
    expected_t, expected_n = torch.rand(3), nn.init.get_rng().random(3)
    torch.manual_seed(11)
    nn.manual_seed(11)
    nn.from_torch(nn.to_torch(nn.RecurrentClassifier(I, H, C, cell="gru", rng=0)))
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected_t.numpy())
    np.testing.assert_array_equal(nn.init.get_rng().random(3), expected_n)


# ---- refusals name what is not supported ---------------------------------------------------
class MyTorchModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


class MyModel(nn.Module):
    pass


@pytest.mark.parametrize("module, error, message", [
    (lambda: torch.nn.LSTM(I, H, bidirectional=True), ValueError, "bidirectional=True"),
    (lambda: torch.nn.LSTM(I, H, proj_size=2), ValueError, "proj_size=2"),
    (lambda: torch.nn.GRU(I, H, num_layers=2, dropout=0.5), ValueError, "dropout=0.5"),
    (lambda: torch.nn.RNN(I, H, bidirectional=True, num_layers=2, dropout=0.1), ValueError,
     "torch.nn.RNN uses bidirectional=True, dropout=0.1, which"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()), TypeError,
     "torch.nn.Dropout at '1' is not supported"),
    (lambda: torch.nn.Sequential(torch.nn.Sequential(torch.nn.LeakyReLU())), TypeError,
     "torch.nn.LeakyReLU at '0.0' is not supported"),
    (lambda: torch.nn.Sequential(torch.nn.GRU(2, 2, bidirectional=True)), ValueError,
     "torch.nn.GRU at '0' uses bidirectional=True"),
    (lambda: torch.nn.GRUCell(2, 2), TypeError, "torch.nn.GRUCell is not supported"),
    (lambda: torch.nn.Conv1d(2, 2, 3), TypeError, "torch.nn.Conv1d is not supported"),
    (lambda: MyTorchModel(), TypeError, "MyTorchModel is not supported"),
    (lambda: torch.nn.Linear(2, 2, dtype=torch.float16), ValueError,
     "dtype float16 is not supported"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, dtype=D64)),
     ValueError, "mix dtypes float32, float64"),
    (lambda: torch.nn.Linear(2, 2, device="meta"), ValueError, "meta device"),
    (lambda: np.zeros(3), TypeError, "expected a torch.nn.Module, got ndarray"),
], ids=["bidirectional", "proj_size", "dropout", "several", "dropout-layer", "nested",
        "nested-gru", "cell", "conv", "subclass", "float16", "mixed", "meta", "not-a-module"])
def test_from_torch_refuses_what_it_cannot_represent(module, error, message):
    with pytest.raises(error, match=f"^from_torch: .*{re.escape(message)}"):
        nn.from_torch(module())


@pytest.mark.parametrize("module, error, message", [
    (lambda: nn.Embedding(5, 3, rng=0), TypeError, "Embedding is not supported"),
    (lambda: nn.GRUCell(2, 3, rng=0), TypeError, "GRUCell is not supported"),
    (lambda: MyModel(), TypeError, "MyModel is not supported"),
    (lambda: nn.Sequential(nn.Linear(2, 2, rng=0), nn.Embedding(2, 2, rng=0)), TypeError,
     "Embedding at '1' is not supported"),
    (lambda: nn.Sequential(nn.Linear(2, 2, rng=0), nn.Linear(2, 2, rng=0, dtype=F64)),
     ValueError, "mix dtypes float32, float64"),
    (lambda: nn.Linear(2, 2, rng=0).to(np.float16), ValueError, "dtype float16"),
    (lambda: "model", TypeError, "expected an nn.Module, got str"),
], ids=["embedding", "cell", "subclass", "nested", "mixed", "float16", "not-a-module"])
def test_to_torch_refuses_what_it_cannot_represent(module, error, message):
    with pytest.raises(error, match=f"^to_torch: .*{re.escape(message)}"):
        nn.to_torch(module())


def test_a_changed_classifier_is_refused_by_name():
    ours = nn.RecurrentClassifier(I, H, C, rng=0)
    ours.out = nn.MLP([H, C], rng=0)  # a new output layer: converted as what it is
    assert type(nn.to_torch(ours).out) is tm.MLP
    ours.out = nn.Embedding(H, C, rng=0)
    with pytest.raises(TypeError, match="^to_torch: Embedding at 'out' is not supported"):
        nn.to_torch(ours)
    extra = nn.Linear(2, 2, rng=0)
    extra.scale = nn.Parameter(np.ones(2, dtype=np.float32))  # a parameter torch's lacks
    with pytest.raises(ValueError, match="parameters do not line up .only here: scale"):
        nn.to_torch(extra)


# ---- training continues --------------------------------------------------------------------
def task(seed):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((T, 8, I))
    targets = (xs[..., 0] > xs[..., 1]).astype(np.int64) + (xs[..., 2] > 0)  # 3 classes
    return xs, targets


OPTIMIZERS = {
    "sgd-momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda ps: optim.Adam(ps, lr=0.02, weight_decay=1e-3),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.02),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("cell, extra", [("gru", {}), ("gru", {"variant": "torch"}),
                                         ("rnn", {"num_layers": 2}), ("lstm", {})],
                         ids=["gru-notes", "gru-torch", "rnn", "lstm"])
def test_training_continues_in_torch(opt_name, cell, extra):
    model = nn.RecurrentClassifier(I, H, C, cell=cell, rng=0, dtype=F64, **extra)
    opt = OPTIMIZERS[opt_name](model.parameters())
    for step in range(4):
        xs, targets = task(step)
        loss = model.loss(xs, targets, step_weights=np.linspace(0.5, 1, T))
        opt.zero_grad()
        loss.backward()
        opt.step()

    tmodel = nn.to_torch(model)
    topt = nn.optimizer_to_torch(opt, model, tmodel)
    assert type(topt).__name__ == type(opt).__name__
    for step in range(4, 7):  # the same next steps on both sides
        xs, targets = task(step)
        weights = np.linspace(0.5, 1, T)
        loss = model.loss(xs, targets, step_weights=weights)
        tloss = tmodel.loss(torch.from_numpy(xs), torch.from_numpy(targets),
                            step_weights=weights)
        np.testing.assert_allclose(tloss.item(), loss.item(), rtol=1e-12, err_msg=f"step {step}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss.backward()
        topt.step()
        for name, p in tmodel.named_parameters():
            np.testing.assert_allclose(p.detach().numpy(), dict(model.named_parameters())[name]
                                       .numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_training_comes_back_from_torch():
    tmodel = tm.RecurrentClassifier(I, H, C, cell="gru", dtype=D64)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1)
    for step in range(3):
        xs, targets = task(step)
        tloss = tmodel.loss(torch.from_numpy(xs), targets)
        topt.zero_grad()
        tloss.backward()
        topt.step()
    model = nn.from_torch(tmodel)
    xs, targets = task(3)
    np.testing.assert_allclose(model.loss(xs, targets).item(),
                               tmodel.loss(torch.from_numpy(xs), targets).item(), rtol=1e-12)


def test_optimizer_to_torch_refuses_what_does_not_match():
    model = nn.Linear(2, 2, rng=0)
    tmodel = nn.to_torch(model)
    stranger = nn.Parameter(np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match="group 0 holds a parameter .shape \\(2,\\). that is "
                                         "not in the Linear given"):
        nn.optimizer_to_torch(optim.SGD([stranger], lr=0.1), model, tmodel)
    with pytest.raises(ValueError, match="the torch module has no parameter 'bias'"):
        nn.optimizer_to_torch(optim.SGD(model.parameters(), lr=0.1), model,
                              torch.nn.Linear(2, 2, bias=False))

    class Custom(optim.SGD):
        pass

    with pytest.raises(TypeError, match="Custom is not supported; supported: SGD, Adam, AdamW"):
        nn.optimizer_to_torch(Custom(model.parameters(), lr=0.1), model, tmodel)
