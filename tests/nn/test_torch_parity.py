"""Parity with torch.nn on the same weights: outputs, final states and every gradient.

Tolerances: 1e-5 in float32, 1e-10 in float64 (relative and absolute)."""
import numpy as np
import pytest

import autograd_core as ag
import nn

torch = pytest.importorskip("torch")

DTYPES = {"float32": (np.float32, torch.float32, 1e-5), "float64": (np.float64, torch.float64,
                                                                       1e-10)}
T, B, I, H = 5, 3, 4, 6


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(params=list(DTYPES))
def dt(request):
    return DTYPES[request.param]


def close(ours, theirs, tol, what):
    ours = ours.numpy() if isinstance(ours, ag.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != torch {theirs.dtype}"
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol, err_msg=what)


def copy_ours_to_torch(ours, theirs):
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})


def copy_torch_to_ours(theirs, ours):
    ours.load_state_dict(theirs.state_dict())  # torch tensors are accepted directly


def data(shape, np_dtype, torch_dtype, seed):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np_dtype)
    return (ag.Tensor(a.copy(), requires_grad=True),
            torch.tensor(a.copy(), dtype=torch_dtype, requires_grad=True))


def weighted_sum(tensors_ours, tensors_torch, np_dtype, seed=99):
    """The same loss on both sides: sum_k <w_k, y_k> with fixed random w_k."""
    rng = np.random.default_rng(seed)
    lo, lt = 0, 0
    for a, b in zip(tensors_ours, tensors_torch):
        w = rng.standard_normal(a.shape).astype(np_dtype)
        lo = lo + (a * w).sum()
        lt = lt + (b * torch.from_numpy(w)).sum()
    return lo, lt


def check_grads(ours, theirs, tol, extra=()):
    named_t = dict(theirs.named_parameters())
    named_o = dict(ours.named_parameters())
    assert set(named_o) == set(named_t)
    for name, p in named_o.items():
        assert p.grad is not None, f"{name}: no gradient"
        close(p.grad, named_t[name].grad, tol, f"grad of {name}")
    for what, a, b in extra:
        close(a.grad, b.grad, tol, f"grad of {what}")


# ------------------------------------------------------------------------- Linear
@pytest.mark.parametrize("bias", [True, False])
def test_linear(dt, bias):
    np_dtype, torch_dtype, tol = dt
    ours = nn.Linear(I, H, bias=bias, rng=0, dtype=np_dtype)
    theirs = torch.nn.Linear(I, H, bias=bias, dtype=torch_dtype)
    copy_ours_to_torch(ours, theirs)
    xo, xt = data((2, T, I), np_dtype, torch_dtype, 1)
    yo, yt = ours(xo), theirs(xt)
    close(yo, yt, tol, "Linear output")
    lo, lt = weighted_sum([yo], [yt], np_dtype)
    lo.backward()
    lt.backward()
    check_grads(ours, theirs, tol, [("input", xo, xt)])


# ------------------------------------------------------------------------- sequence layers
def run_layer(ours, theirs, x_shape, np_dtype, torch_dtype, tol, init, lstm=False):
    xo, xt = data(x_shape, np_dtype, torch_dtype, 2)
    extra = [("input", xo, xt)]
    state_shape = (theirs.num_layers,) + ((x_shape[0] if theirs.batch_first else x_shape[1],)
                                          if len(x_shape) == 3 else ()) + (H,)
    args_o, args_t = (), ()
    if init:
        ho, ht = data(state_shape, np_dtype, torch_dtype, 3)
        extra.append(("h0", ho, ht))
        if lstm:
            co, ct = data(state_shape, np_dtype, torch_dtype, 4)
            extra.append(("c0", co, ct))
            args_o, args_t = ((ho, co),), ((ht, ct),)
        else:
            args_o, args_t = (ho,), (ht,)
    out_o, st_o = ours(xo, *args_o)
    out_t, st_t = theirs(xt, *args_t)
    close(out_o, out_t, tol, "output")
    finals_o = list(st_o) if lstm else [st_o]
    finals_t = list(st_t) if lstm else [st_t]
    for k, (a, b) in enumerate(zip(finals_o, finals_t)):
        close(a, b, tol, ["h_n", "c_n"][k])
    lo, lt = weighted_sum([out_o] + finals_o, [out_t] + finals_t, np_dtype)
    close(lo, lt, tol, "loss")
    lo.backward()
    lt.backward()
    check_grads(ours, theirs, tol, extra)


def x_shape(batch_first):
    return (B, T, I) if batch_first else (T, B, I)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("init", [False, True], ids=["no-h0", "h0"])
def test_rnn(dt, nonlinearity, batch_first, init):
    np_dtype, torch_dtype, tol = dt
    ours = nn.RNN(I, H, num_layers=2, nonlinearity=nonlinearity, batch_first=batch_first,
                  rng=0, dtype=np_dtype)
    theirs = torch.nn.RNN(I, H, num_layers=2, nonlinearity=nonlinearity,
                          batch_first=batch_first, dtype=torch_dtype)
    copy_ours_to_torch(ours, theirs)
    run_layer(ours, theirs, x_shape(batch_first), np_dtype, torch_dtype, tol, init)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("init", [False, True], ids=["no-h0", "h0"])
def test_gru_torch_variant_loads_torch_state_dict(dt, batch_first, init):
    np_dtype, torch_dtype, tol = dt
    torch.manual_seed(0)
    theirs = torch.nn.GRU(I, H, num_layers=2, batch_first=batch_first, dtype=torch_dtype)
    ours = nn.GRU(I, H, num_layers=2, batch_first=batch_first, variant="torch", rng=5,
                  dtype=np_dtype)
    copy_torch_to_ours(theirs, ours)
    for name, p in theirs.named_parameters():
        np.testing.assert_array_equal(dict(ours.named_parameters())[name].numpy(),
                                      p.detach().numpy(), err_msg=name)
    run_layer(ours, theirs, x_shape(batch_first), np_dtype, torch_dtype, tol, init)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_torch_variant_state_dict_into_torch(dt, bias):
    np_dtype, torch_dtype, tol = dt
    ours = nn.GRU(I, H, bias=bias, variant="torch", rng=1, dtype=np_dtype)
    theirs = torch.nn.GRU(I, H, bias=bias, dtype=torch_dtype)
    copy_ours_to_torch(ours, theirs)
    run_layer(ours, theirs, x_shape(False), np_dtype, torch_dtype, tol, init=True)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("init", [False, True], ids=["no-state", "state"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_lstm(dt, batch_first, init, num_layers):
    np_dtype, torch_dtype, tol = dt
    torch.manual_seed(1)
    theirs = torch.nn.LSTM(I, H, num_layers=num_layers, batch_first=batch_first,
                           dtype=torch_dtype)
    ours = nn.LSTM(I, H, num_layers=num_layers, batch_first=batch_first, rng=0,
                   dtype=np_dtype)
    copy_torch_to_ours(theirs, ours)
    run_layer(ours, theirs, x_shape(batch_first), np_dtype, torch_dtype, tol, init, lstm=True)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_unbatched_sequence(kind):
    np_dtype, torch_dtype, tol = DTYPES["float64"]
    make = {"rnn": (lambda: nn.RNN(I, H, num_layers=2, rng=0, dtype=np_dtype),
                    lambda: torch.nn.RNN(I, H, num_layers=2, dtype=torch_dtype)),
            "gru": (lambda: nn.GRU(I, H, num_layers=2, variant="torch", rng=0, dtype=np_dtype),
                    lambda: torch.nn.GRU(I, H, num_layers=2, dtype=torch_dtype)),
            "lstm": (lambda: nn.LSTM(I, H, num_layers=2, rng=0, dtype=np_dtype),
                     lambda: torch.nn.LSTM(I, H, num_layers=2, dtype=torch_dtype))}[kind]
    ours, theirs = make[0](), make[1]()
    copy_ours_to_torch(ours, theirs)
    run_layer(ours, theirs, (T, I), np_dtype, torch_dtype, tol, init=True, lstm=kind == "lstm")


# ------------------------------------------------------------------------- cells
CELLS = {
    "rnn-tanh": (lambda d: nn.RNNCell(I, H, rng=0, dtype=d),
                 lambda d: torch.nn.RNNCell(I, H, dtype=d)),
    "rnn-relu": (lambda d: nn.RNNCell(I, H, nonlinearity="relu", rng=0, dtype=d),
                 lambda d: torch.nn.RNNCell(I, H, nonlinearity="relu", dtype=d)),
    "gru": (lambda d: nn.GRUCell(I, H, variant="torch", rng=0, dtype=d),
            lambda d: torch.nn.GRUCell(I, H, dtype=d)),
    "gru-nobias": (lambda d: nn.GRUCell(I, H, bias=False, variant="torch", rng=0, dtype=d),
                   lambda d: torch.nn.GRUCell(I, H, bias=False, dtype=d)),
    "lstm": (lambda d: nn.LSTMCell(I, H, rng=0, dtype=d),
             lambda d: torch.nn.LSTMCell(I, H, dtype=d)),
}


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("init", [False, True], ids=["no-state", "state"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_cells(dt, cell, init, batched):
    np_dtype, torch_dtype, tol = dt
    ours, theirs = CELLS[cell][0](np_dtype), CELLS[cell][1](torch_dtype)
    copy_torch_to_ours(theirs, ours)
    lstm = cell == "lstm"
    shape_x, shape_h = ((B, I), (B, H)) if batched else ((I,), (H,))
    xo, xt = data(shape_x, np_dtype, torch_dtype, 7)
    extra = [("input", xo, xt)]
    args_o, args_t = (), ()
    if init:
        ho, ht = data(shape_h, np_dtype, torch_dtype, 8)
        extra.append(("h", ho, ht))
        args_o, args_t = (ho,), (ht,)
        if lstm:
            co, ct = data(shape_h, np_dtype, torch_dtype, 9)
            extra.append(("c", co, ct))
            args_o, args_t = ((ho, co),), ((ht, ct),)
    # two steps, so the state path is exercised even without an initial state
    yo, yt = ours(xo, *args_o), theirs(xt, *args_t)
    yo2, yt2 = ours(xo * 0.5, yo), theirs(xt * 0.5, yt)
    outs_o = list(yo) + list(yo2) if lstm else [yo, yo2]
    outs_t = list(yt) + list(yt2) if lstm else [yt, yt2]
    for k, (a, b) in enumerate(zip(outs_o, outs_t)):
        close(a, b, tol, f"cell output {k}")
    lo, lt = weighted_sum(outs_o, outs_t, np_dtype)
    lo.backward()
    lt.backward()
    check_grads(ours, theirs, tol, extra)


# ------------------------------------------------------------------------- state_dict interop
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_state_dict_keys_and_shapes_match_torch(kind):
    extra = {"variant": "torch"} if kind == "GRU" else {}
    ours = getattr(nn, kind)(I, H, num_layers=2, rng=0, **extra)
    theirs = getattr(torch.nn, kind)(I, H, num_layers=2)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (n, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert a.shape == tuple(b.shape), n
    bound = 1 / np.sqrt(H)
    assert all(np.abs(v).max() <= bound for v in ours.state_dict().values())


def test_torch_state_dict_with_wrong_shape_names_the_key():
    ours = nn.GRU(I, H, variant="torch", rng=0)
    snapshot = {k: v.copy() for k, v in ours.state_dict().items()}
    theirs = torch.nn.GRU(I, H + 1)
    with pytest.raises((ValueError, KeyError, RuntimeError), match="weight_ih_l0"):
        ours.load_state_dict(theirs.state_dict())
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, snapshot[k], err_msg=k)
