"""nn.Module / Parameter / Sequential / ModuleList: registration, traversal, state, dtype;
clear errors from the layers' constructors and forwards."""
import re

import numpy as np
import pytest

import autograd_core as ag
import nn

LOAD_ERRORS = (KeyError, ValueError, RuntimeError)


class Block(nn.Module):
    """Parameters and sub-modules assigned in a deliberate order."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.full((2,), 2.0, dtype=np.float32))
        self.inner = nn.Linear(3, 2, rng=0)
        self.not_a_param = ag.Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
        self.plain = np.ones(3)
        self.head = nn.Sequential(nn.Linear(2, 4, rng=1), nn.Tanh(), nn.Linear(4, 1, rng=2))
        self.offset = nn.Parameter(np.zeros((1,), dtype=np.float32))

    def forward(self, x):
        return self.head(self.inner(x) * self.scale) + self.offset


EXPECTED_NAMES = ["scale", "offset", "inner.weight", "inner.bias", "head.0.weight",
                  "head.0.bias", "head.2.weight", "head.2.bias"]


def snapshot(module):
    return {n: p.numpy().copy() for n, p in module.named_parameters()}


def assert_same(module, snap):
    now = snapshot(module)
    assert list(now) == list(snap)
    for n in snap:
        np.testing.assert_array_equal(now[n], snap[n], err_msg=n)
        assert now[n].dtype == snap[n].dtype, n


# ------------------------------------------------------------------------- Parameter
def test_parameter_requires_grad_and_is_a_tensor():
    p = nn.Parameter(np.zeros((2, 3), dtype=np.float32))
    assert isinstance(p, ag.Tensor)
    assert p.requires_grad and p.is_leaf
    assert p.shape == (2, 3) and p.dtype == np.float32
    assert repr(p).startswith("Parameter containing:")


def test_parameter_keeps_ndarray_dtype_and_from_tensor():
    assert nn.Parameter(np.zeros(2)).dtype == np.float64
    t = ag.Tensor(np.arange(3.0))
    p = nn.Parameter(t)
    assert p.dtype == np.float64
    np.testing.assert_array_equal(p.numpy(), [0.0, 1.0, 2.0])


def test_parameter_from_python_floats_is_float32_like_tensor():
    # DESIGN: Python floats and lists become float32 (as ag.Tensor and torch.nn.Parameter).
    assert ag.Tensor([1.0, 2.0]).dtype == np.float32
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32


def test_parameter_from_integers_becomes_float():
    p = nn.Parameter(np.arange(3))
    assert p.dtype.kind == "f" and p.requires_grad


# ------------------------------------------------------------------------- registration
def test_named_parameters_dotted_names_in_registration_order():
    m = Block()
    names = [n for n, _ in m.named_parameters()]
    assert names == EXPECTED_NAMES
    assert [p for p in m.parameters()] == [p for _, p in m.named_parameters()]
    assert m.inner.weight is dict(m.named_parameters())["inner.weight"]


def test_plain_tensors_and_arrays_are_not_registered():
    m = Block()
    ids = {id(p) for p in m.parameters()}
    assert id(m.not_a_param) not in ids
    assert "plain" not in dict(m.named_parameters())


def test_reassignment_and_deletion_update_registration():
    m = Block()
    m.offset = None
    assert "offset" not in dict(m.named_parameters())
    m.offset = nn.Parameter(np.ones(1, dtype=np.float32))
    assert "offset" in dict(m.named_parameters())
    m.inner = ag.Tensor(np.zeros(1))  # a module replaced by a plain tensor
    assert not any(n.startswith("inner.") for n, _ in m.named_parameters())
    assert all(c is not m.inner for c in m.children())
    del m.scale
    assert "scale" not in dict(m.named_parameters())
    assert not hasattr(m, "scale")


def test_register_parameter_and_add_module():
    m = nn.Module()
    m.register_parameter("w", nn.Parameter(np.ones(2)))
    m.add_module("lin", nn.Linear(2, 2, rng=0))
    assert [n for n, _ in m.named_parameters()] == ["w", "lin.weight", "lin.bias"]


def test_shared_parameter_listed_once():
    m = nn.Module()
    m.a = nn.Linear(2, 2, rng=0)
    m.b = nn.Linear(2, 2, rng=1)
    m.b.weight = m.a.weight
    names = [n for n, _ in m.named_parameters()]
    assert names == ["a.weight", "a.bias", "b.bias"]
    assert len(list(m.parameters())) == 3


def test_assignment_before_super_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(1))
            super().__init__()

    with pytest.raises(RuntimeError, match=r"Bad.*super\(\)\.__init__\(\)"):
        Bad()


def test_children_are_direct_submodules_only():
    m = Block()
    kids = list(m.children())
    assert kids == [m.inner, m.head]
    assert dict(m.named_children()) == {"inner": m.inner, "head": m.head}
    names = [n for n, _ in m.named_modules()]
    assert names == ["", "inner", "head", "head.0", "head.1", "head.2"]
    assert len(list(m.modules())) == 6


def test_forward_missing_is_not_implemented():
    with pytest.raises(NotImplementedError, match="Module"):
        nn.Module()(1)


# ------------------------------------------------------------------------- training helpers
def test_zero_grad_clears_every_gradient():
    m = Block()
    m(ag.Tensor(np.ones((4, 3), dtype=np.float32))).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_train_eval_set_flags_recursively_and_return_self():
    m = Block()
    assert all(mod.training for mod in m.modules())
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    assert m.train() is m
    assert all(mod.training for mod in m.modules())
    m.train(False)
    assert not m.head[1].training


# ------------------------------------------------------------------------- state_dict
def test_state_dict_keys_and_copies():
    m = Block()
    sd = m.state_dict()
    assert list(sd) == EXPECTED_NAMES
    for n, p in m.named_parameters():
        assert isinstance(sd[n], np.ndarray)
        np.testing.assert_array_equal(sd[n], p.numpy())
        assert not np.shares_memory(sd[n], p.numpy()), n
    before = m.inner.weight.numpy().copy()
    sd["inner.weight"][:] = 123.0
    np.testing.assert_array_equal(m.inner.weight.numpy(), before)
    with ag.no_grad():
        m.scale.data = m.scale.numpy() * 10
    np.testing.assert_array_equal(sd["scale"], [2.0, 2.0])


def test_load_state_dict_round_trip_reproduces_outputs():
    a, b = nn.MLP([3, 5, 2], rng=0), nn.MLP([3, 5, 2], rng=1)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_load_state_dict_copies_and_keeps_dtype_and_identity():
    m = nn.Linear(2, 3, rng=0)
    w_obj = m.weight
    src = {"weight": np.arange(6, dtype=np.float64).reshape(3, 2),
           "bias": ag.Tensor(np.array([1.0, 2.0, 3.0]))}
    m.load_state_dict(src)
    assert m.weight is w_obj and m.weight.dtype == np.float32
    np.testing.assert_array_equal(m.weight.numpy(), np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(m.bias.numpy(), [1, 2, 3])
    src["weight"][:] = -1
    assert m.weight.numpy().min() == 0


def test_load_state_dict_strict_missing_key_names_it_and_changes_nothing():
    m = Block()
    snap = snapshot(m)
    sd = {n: v + 1.0 for n, v in m.state_dict().items()}
    del sd["head.2.bias"]
    with pytest.raises(LOAD_ERRORS, match=r"missing.*head\.2\.bias"):
        m.load_state_dict(sd)
    assert_same(m, snap)


def test_load_state_dict_strict_unexpected_key_names_it_and_changes_nothing():
    m = Block()
    snap = snapshot(m)
    sd = {n: v + 1.0 for n, v in m.state_dict().items()}
    sd["head.3.weight"] = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(LOAD_ERRORS, match=r"unexpected.*head\.3\.weight"):
        m.load_state_dict(sd)
    assert_same(m, snap)


def test_load_state_dict_shape_mismatch_names_key_and_shapes_and_changes_nothing():
    m = Block()
    snap = snapshot(m)
    sd = {n: v + 1.0 for n, v in m.state_dict().items()}
    sd["head.2.weight"] = np.zeros((4, 1), dtype=np.float32)  # model has (1, 4); last entry
    with pytest.raises(LOAD_ERRORS, match=r"head\.2\.weight") as info:
        m.load_state_dict(sd)
    assert "(4, 1)" in str(info.value) and "(1, 4)" in str(info.value)
    assert_same(m, snap)  # the earlier valid entries were not applied either
    with pytest.raises(LOAD_ERRORS, match=r"head\.2\.weight"):
        m.load_state_dict(sd, strict=False)  # a shape mismatch is an error even non-strict
    assert_same(m, snap)


def test_load_state_dict_non_strict_returns_the_lists_and_loads_the_rest():
    m = nn.Linear(2, 2, rng=0)
    bias_before = m.bias.numpy().copy()
    sd = {"weight": np.eye(2, dtype=np.float32), "extra.thing": np.zeros(3)}
    result = m.load_state_dict(sd, strict=False)
    assert list(result.missing_keys) == ["bias"]
    assert list(result.unexpected_keys) == ["extra.thing"]
    missing, unexpected = result  # torch's _IncompatibleKeys is a named tuple
    assert list(missing) == ["bias"] and list(unexpected) == ["extra.thing"]
    np.testing.assert_array_equal(m.weight.numpy(), np.eye(2))
    np.testing.assert_array_equal(m.bias.numpy(), bias_before)


# ------------------------------------------------------------------------- containers
def test_sequential_applies_in_order_and_indexes():
    l1, act, l2 = nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=1)
    s = nn.Sequential(l1, act, l2)
    assert len(s) == 3 and s[0] is l1 and s[-1] is l2 and list(s) == [l1, act, l2]
    assert [n for n, _ in s.named_parameters()] == ["0.weight", "0.bias", "2.weight",
                                                    "2.bias"]
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    h = np.maximum(x @ l1.weight.numpy().T + l1.bias.numpy(), 0)
    np.testing.assert_allclose(s(x).numpy(), h @ l2.weight.numpy().T + l2.bias.numpy(),
                               rtol=1e-6, atol=1e-6)


def test_sequential_slice_is_a_sequential_like_torch():
    s = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh(), nn.Linear(4, 2, rng=1))
    head = s[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2
    x = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_allclose(head(x).numpy(), s[1](s[0](x)).numpy())


def test_module_list_registers_appended_modules():
    ml = nn.ModuleList([nn.Linear(2, 2, rng=0)])
    assert ml.append(nn.Linear(2, 3, rng=1)) is ml
    assert len(ml) == 2 and ml[-1].out_features == 3
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight",
                                                     "1.bias"]
    holder = nn.Module()
    holder.blocks = ml
    assert [n for n, _ in holder.named_parameters()][-1] == "blocks.1.bias"
    assert [m.out_features for m in ml] == [2, 3]


# ------------------------------------------------------------------------- repr
def test_repr_is_readable():
    assert repr(nn.Linear(3, 2, rng=0)) == "Linear(in_features=3, out_features=2, bias=True)"
    assert "bias=False" in repr(nn.Linear(3, 2, bias=False, rng=0))
    s = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh())
    assert repr(s) == ("Sequential(\n  (0): Linear(in_features=3, out_features=4, bias=True)\n"
                       "  (1): Tanh()\n)")
    r = repr(Block())
    assert "(inner): Linear(in_features=3" in r and "    (1): Tanh()" in r
    assert repr(nn.Embedding(10, 3, rng=0)) == "Embedding(10, 3)"
    g = repr(nn.GRU(3, 4, num_layers=2, batch_first=True, variant="torch", rng=0))
    assert g.startswith("GRU(3, 4") and "num_layers=2" in g and "torch" in g
    assert "batch_first=True" in g
    assert "relu" in repr(nn.RNN(2, 3, nonlinearity="relu", rng=0))


# ------------------------------------------------------------------------- dtype
def test_double_converts_in_place_and_keeps_registration():
    m = Block()
    params_before = list(m.parameters())
    m(ag.Tensor(np.ones((2, 3), dtype=np.float32))).sum().backward()
    values = [p.numpy().astype(np.float64) for p in params_before]
    assert m.double() is m
    after = list(m.parameters())
    assert all(a is b for a, b in zip(after, params_before))  # optimizers keep valid refs
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in after)
    assert all(p.dtype == np.float64 and p.grad is None for p in after)
    for p, v in zip(after, values):
        np.testing.assert_array_equal(p.numpy(), v)
    out = m(np.ones((2, 3)))
    assert out.dtype == np.float64
    out.sum().backward()
    assert all(p.grad.dtype == np.float64 for p in m.parameters())
    assert all(v.dtype == np.float64 for v in m.state_dict().values())


def test_to_and_float():
    m = nn.LSTM(2, 3, rng=0)
    assert m.to(np.float64) is m
    assert {p.dtype for p in m.parameters()} == {np.dtype(np.float64)}
    m.float()
    assert {p.dtype for p in m.parameters()} == {np.dtype(np.float32)}
    m.to("float64")
    assert {p.dtype for p in m.parameters()} == {np.dtype(np.float64)}
    out, (h, c) = m(np.zeros((2, 1, 2)))
    assert out.dtype == h.dtype == c.dtype == np.float64


def test_dtype_argument_and_seeded_init_reproducible():
    a, b = nn.GRU(3, 4, rng=7), nn.GRU(3, 4, rng=np.random.default_rng(7))
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    nn.manual_seed(3)
    c = nn.Linear(4, 4)
    nn.manual_seed(3)
    d = nn.Linear(4, 4)
    np.testing.assert_array_equal(c.weight.numpy(), d.weight.numpy())
    assert nn.Linear(2, 2, rng=0, dtype=np.float64).weight.dtype == np.float64
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(2, 2, rng="seed")


# ------------------------------------------------------------------------- layers: bad input
Z = np.zeros
MODULE_BAD_INPUT = {
    "linear-in": (lambda: nn.Linear(3, 2, rng=0)(Z((2, 4), np.float32)), ValueError,
                  r"^Linear:.*last dimension 3.*\(2, 4\)"),
    "linear-size": (lambda: nn.Linear(0, 2), ValueError, r"^Linear:.*in_features.*0"),
    "linear-float-size": (lambda: nn.Linear(2, 2.5), ValueError, r"^Linear:.*out_features"),
    "emb-float": (lambda: nn.Embedding(5, 2, rng=0)(np.array([1.0])), TypeError,
                  r"^Embedding:.*integers.*float64"),
    "emb-range": (lambda: nn.Embedding(5, 2, rng=0)(np.array([0, 5])), IndexError,
                  r"^Embedding:.*\[0, 5\).*max 5"),
    "emb-negative": (lambda: nn.Embedding(5, 2, rng=0)(np.array([-1])), IndexError,
                     r"^Embedding:.*min -1"),
    "mlp-act": (lambda: nn.MLP([2, 2], activation="gelu"), ValueError,
                r"^MLP:.*activation.*'gelu'"),
    "mlp-sizes": (lambda: nn.MLP([3]), ValueError, r"^MLP:.*sizes"),
    "rnn-nonlin": (lambda: nn.RNN(2, 3, nonlinearity="sigmoid"), ValueError,
                   r"^RNN:.*nonlinearity.*'sigmoid'"),
    "gru-variant": (lambda: nn.GRU(2, 3, variant="keras"), ValueError,
                    r"^GRU:.*variant.*'keras'"),
    "gru-input": (lambda: nn.GRU(2, 3, rng=0)(Z((4, 2, 5), np.float32)), ValueError,
                  r"^GRU:.*\(T, B, 2\).*\(4, 2, 5\)"),
    "gru-h0": (lambda: nn.GRU(2, 3, num_layers=2, rng=0)(Z((4, 2, 2)), Z((1, 2, 3))),
               ValueError, r"^GRU:.*initial state.*\(2, 2, 3\).*\(1, 2, 3\)"),
    "lstm-c0": (lambda: nn.LSTM(2, 3, rng=0)(Z((4, 2, 2)), (Z((1, 2, 3)), Z((1, 3, 3)))),
                ValueError, r"^LSTM:.*initial state.*\(1, 2, 3\).*\(1, 3, 3\)"),
    # torch rejects a bare tensor for the LSTM state too; the message should say what to pass
    "lstm-hx-not-pair": (lambda: nn.LSTM(2, 3, rng=0)(Z((4, 2, 2)), Z((1, 2, 3))),
                         (TypeError, ValueError), r"^LSTM:.*\(h_?0, c_?0\)"),
    "lstmcell-state-not-pair": (lambda: nn.LSTMCell(2, 3, rng=0)(Z((3, 2)), Z((3, 3))),
                                (TypeError, ValueError), r"^LSTMCell:.*\(h_?0?, c_?0?\)"),
    "cell-input": (lambda: nn.GRUCell(2, 3, rng=0)(Z((4, 3))), ValueError,
                   r"^GRUCell:.*\(B, 2\).*\(4, 3\)"),
    "cell-state": (lambda: nn.LSTMCell(2, 3, rng=0)(Z((4, 2)), (Z((4, 3)), Z((4, 4)))),
                   ValueError, r"^LSTMCell:.*\(4, 3\).*\(4, 4\)"),
    "num-layers": (lambda: nn.RNN(2, 3, num_layers=0), ValueError, r"^RNN:.*num_layers.*0"),
}


@pytest.mark.parametrize("case", list(MODULE_BAD_INPUT))
def test_module_bad_input_errors(case):
    call, exc, pattern = MODULE_BAD_INPUT[case]
    with pytest.raises(exc) as info:
        call()
    assert re.search(pattern, str(info.value)), str(info.value)
