"""Optimizers (SGD, Adam, AdamW) and gradient clipping: hand-computed steps, torch parity,
state_dict round-trips, validation."""
import copy
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd_core as ag
from nn.clip import clip_grad_norm_, clip_grad_value_
from nn.module import Parameter
from nn.optim import SGD, Adam, AdamW, Optimizer

A = np.array([1.0, 3.0])  # f(x) = 0.5 * sum(A * x**2), grad = A * x


def quadratic_steps(opt_factory, n, x0=(1.0, -2.0)):
    """Run n steps on f through the engine; returns the iterates after each step."""
    x = Parameter(np.array(x0))
    opt = opt_factory([x])
    out = []
    for _ in range(n):
        opt.zero_grad()
        (0.5 * (ag.Tensor(A) * x * x).sum()).backward()
        opt.step()
        out.append(x.numpy().copy())
    return out


# ---- hand-computed steps on the quadratic ----------------------------------------------------

def test_sgd_plain_by_hand():
    # g0 = (1, -6): x1 = (0.9, -1.4); g1 = (0.9, -4.2): x2 = (0.81, -0.98)
    x1, x2 = quadratic_steps(lambda p: SGD(p, lr=0.1), 2)
    np.testing.assert_allclose(x1, [0.9, -1.4], rtol=0, atol=1e-15)
    np.testing.assert_allclose(x2, [0.81, -0.98], rtol=0, atol=1e-15)


def test_sgd_momentum_by_hand():
    # buf1 = g0 = (1, -6): x1 = (0.9, -1.4); buf2 = 0.9 buf1 + g1 = (1.8, -9.6): x2 = (0.72, -0.44)
    x1, x2 = quadratic_steps(lambda p: SGD(p, lr=0.1, momentum=0.9), 2)
    np.testing.assert_allclose(x1, [0.9, -1.4], atol=1e-15)
    np.testing.assert_allclose(x2, [0.72, -0.44], atol=1e-15)


def test_sgd_nesterov_by_hand():
    # step 1: buf = (1, -6), g + 0.9 buf = (1.9, -11.4): x1 = (0.81, -0.86)
    # step 2: g1 = (0.81, -2.58), buf = (1.71, -7.98), g1 + 0.9 buf = (2.349, -9.762):
    #         x2 = (0.5751, 0.1162)
    x1, x2 = quadratic_steps(lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True), 2)
    np.testing.assert_allclose(x1, [0.81, -0.86], atol=1e-15)
    np.testing.assert_allclose(x2, [0.5751, 0.1162], atol=1e-14)


def test_sgd_weight_decay_and_dampening_by_hand():
    # g = (1, -6) + 0.1 (1, -2) = (1.1, -6.2): x1 = (0.89, -1.38)
    (x1,) = quadratic_steps(lambda p: SGD(p, lr=0.1, weight_decay=0.1), 1)
    np.testing.assert_allclose(x1, [0.89, -1.38], atol=1e-15)
    # dampening 0.5: buf1 = g0 (first step undamped), buf2 = 0.9 buf1 + 0.5 g1
    #   = (0.9 + 0.45, -5.4 - 2.1) = (1.35, -7.5): x2 = (0.9 - 0.135, -1.4 + 0.75)
    _, x2 = quadratic_steps(lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.5), 2)
    np.testing.assert_allclose(x2, [0.765, -0.65], atol=1e-15)


def test_adam_by_hand():
    # Step 1: m_hat = g, v_hat = g**2, so x moves by lr * g / (|g| + eps) = lr * sign(g).
    # Step 2 (x0 component): g1 = 0.9, m = 0.09 + 0.09 = 0.18, v = 0.000999 + 0.00081 =
    # 0.001809; m_hat = 0.18 / 0.19, v_hat = 0.001809 / 0.001999; x2 = x1 - 0.1 m_hat /
    # (sqrt(v_hat) + eps) = 0.80041223; the second component likewise.
    x1, x2 = quadratic_steps(lambda p: Adam(p, lr=0.1), 2)
    np.testing.assert_allclose(x1, [0.9, -1.9], atol=1e-8)
    np.testing.assert_allclose(x2, [0.8004122297123382, -1.800166485947237], rtol=1e-13)


def test_adamw_by_hand():
    # Decoupled: x *= 1 - lr * wd = 0.95 before the Adam step: x1 = (0.95 - 0.1, -1.9 + 0.1)
    x1, x2 = quadratic_steps(lambda p: AdamW(p, lr=0.1, weight_decay=0.5), 2)
    np.testing.assert_allclose(x1, [0.85, -1.8], atol=1e-8)
    np.testing.assert_allclose(x2, [0.7082484443656524, -1.6104122280035775], rtol=1e-13)
    y1, y2 = quadratic_steps(lambda p: Adam(p, lr=0.1, weight_decay=0.5,
                                            decoupled_weight_decay=True), 2)
    np.testing.assert_array_equal(y2, x2)
    # Coupled decay (plain Adam) adds wd * x to the gradient: a different trajectory.
    _, z2 = quadratic_steps(lambda p: Adam(p, lr=0.1, weight_decay=0.5), 2)
    assert not np.allclose(z2, x2)


def test_adam_converges_on_the_quadratic():
    xs = quadratic_steps(lambda p: Adam(p, lr=0.05), 300)
    assert np.abs(xs[-1]).max() < 1e-2


# ---- torch parity ------------------------------------------------------------------------

def fake_grad(x):
    return x ** 3 - 0.5 * np.cos(3 * x) + 0.1


CONFIGS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, betas=(0.5, 0.9), weight_decay=0.3)),
]


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in
                                                   enumerate(CONFIGS)])
def test_matches_torch_step_by_step(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    inits = [rng.normal(size=(3, 4)), rng.normal(size=(5,)), rng.normal(size=())]
    ours = [Parameter(a.copy()) for a in inits]
    theirs = [torch.tensor(a.copy(), dtype=torch.float64, requires_grad=True) for a in inits]
    opt = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[name](ours, **kw)
    topt = getattr(torch.optim, name)(theirs, foreach=False, **kw)
    for _ in range(6):
        for p, t in zip(ours, theirs):
            p.grad = ag.Tensor(fake_grad(p.numpy()))
            t.grad = torch.from_numpy(np.asarray(fake_grad(t.detach().numpy())))
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-9, atol=1e-9)
    for i, t in enumerate(theirs):
        for key, value in topt.state[t].items():
            np.testing.assert_allclose(opt.state_dict()["state"][i][key], value.numpy(),
                                       rtol=1e-9, atol=1e-12)


def test_param_groups_match_torch():
    torch = pytest.importorskip("torch")
    a, b = np.linspace(-1, 1, 6).reshape(2, 3), np.array([0.5, -0.25])
    p, q = Parameter(a.copy()), Parameter(b.copy())
    tp, tq = (torch.tensor(v.copy(), requires_grad=True) for v in (a, b))
    opt = SGD([{"params": [p]}, {"params": [q], "lr": 0.5, "momentum": 0.5}], lr=0.1,
              momentum=0.9)
    topt = torch.optim.SGD([{"params": [tp]}, {"params": [tq], "lr": 0.5, "momentum": 0.5}],
                           lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    for _ in range(4):
        for x, t in ((p, tp), (q, tq)):
            x.grad = ag.Tensor(fake_grad(x.numpy()))
            t.grad = torch.from_numpy(np.asarray(fake_grad(t.detach().numpy())))
        opt.step()
        topt.step()
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(q.numpy(), tq.detach().numpy(), rtol=1e-12)


# ---- step semantics ------------------------------------------------------------------------

def test_step_is_in_place_skips_params_without_grad_and_keeps_float32():
    p = Parameter(np.ones(3, dtype=np.float32))
    q = Parameter(np.ones(2))
    arr = p.numpy()
    opt = Adam([p, q], lr=0.1)
    p.grad = ag.Tensor(np.array([1.0, -1.0, 2.0], dtype=np.float32))
    opt.step()
    assert p.numpy() is arr and p.dtype == np.float32
    np.testing.assert_allclose(p.numpy(), [0.9, 1.1, 0.9], atol=1e-6)
    np.testing.assert_array_equal(q.numpy(), [1.0, 1.0])
    sd = opt.state_dict()
    assert list(sd["state"]) == [0] and sd["state"][0]["step"] == 1
    assert sd["state"][0]["exp_avg"].dtype == np.float32


def test_step_bumps_the_version_so_a_stale_graph_refuses_backward():
    p = Parameter(np.array([1.0, 2.0]))
    y = (p * p).sum()
    opt = SGD([p], lr=0.1)
    p.grad = ag.Tensor(np.array([1.0, 1.0]))
    opt.step()
    with pytest.raises(RuntimeError):
        y.backward()


def test_zero_grad_and_closure():
    p = Parameter(np.array([3.0]))
    opt = SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with ag.no_grad():  # step's closure runs with grad enabled anyway
        loss = opt.step(closure)
    assert loss.item() == 9.0
    np.testing.assert_array_equal(p.numpy(), [1.5])  # 3 - 0.25 * 6
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.numpy(), [0.0])
    opt.zero_grad()
    assert p.grad is None


# ---- state_dict -------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: Adam(ps, lr=0.05, betas=(0.8, 0.95), weight_decay=0.01),
    lambda ps: AdamW([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.2}], lr=0.05),
], ids=["sgd", "adam", "adamw-groups"])
def test_state_dict_round_trip_continues_identically(factory):
    rng = np.random.default_rng(1)
    ps = [Parameter(rng.normal(size=(2, 3))), Parameter(rng.normal(size=(4,)))]
    opt = factory(ps)

    def run(params, o, n):
        for _ in range(n):
            for p in params:
                p.grad = ag.Tensor(fake_grad(p.numpy()))
            o.step()

    run(ps, opt, 3)
    sd = opt.state_dict()
    saved_values = [p.numpy().copy() for p in ps]
    frozen = copy.deepcopy(sd)
    run(ps, opt, 2)  # path A: continue
    for k, entry in sd["state"].items():  # state_dict() returned copies
        for key, v in entry.items():
            np.testing.assert_array_equal(v, frozen["state"][k][key])
    ps2 = [Parameter(v.copy()) for v in saved_values]
    opt2 = factory(ps2)
    for g in opt2.param_groups:
        g["lr"] = 123.0  # overwritten by the load
    opt2.load_state_dict(frozen)
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    run(ps2, opt2, 2)  # path B: restore then continue
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert "params" in sd["param_groups"][0] and all(
        isinstance(i, int) for g in sd["param_groups"] for i in g["params"])


def test_load_state_dict_validates():
    p, q = Parameter(np.zeros((2, 2))), Parameter(np.zeros(3))
    opt = Adam([p, q], lr=0.1)
    p.grad, q.grad = ag.Tensor(np.ones((2, 2))), ag.Tensor(np.ones(3))
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match=r"parameter group 0 has 2 parameter\(s\) in the "
                                         r"state dict, 1 in the optimizer"):
        Adam([p], lr=0.1).load_state_dict(sd)
    other = Adam([Parameter(np.zeros((2, 3))), Parameter(np.zeros(3))])
    with pytest.raises(ValueError, match=r"shape mismatch for state 'exp_avg' of parameter 0 "
                                         r"\('w', shape \(2, 3\)\).*\(2, 2\)"):
        other._params()[0].name = "w"
        other.load_state_dict(sd)
    assert other.state == {}  # nothing changed
    with pytest.raises(ValueError, match="unknown hyperparameter.*'betas'"):
        SGD([p, q], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"1 parameter group\(s\), the optimizer 2"):
        Adam([{"params": [p]}, {"params": [q]}]).load_state_dict(sd)
    bad = copy.deepcopy(sd)
    bad["param_groups"][0]["betas"] = (1.5, 0.9)
    with pytest.raises(ValueError, match="beta parameter at index 0"):
        Adam([p, q]).load_state_dict(bad)
    with pytest.raises(ValueError, match="unexpected state 'momentum_buffer'"):
        bad = copy.deepcopy(sd)
        bad["state"][0]["momentum_buffer"] = np.zeros((2, 2))
        Adam([p, q]).load_state_dict(bad)


# ---- validation --------------------------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda p: SGD(p, lr=-0.1), "invalid lr"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), "invalid momentum"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1), "invalid weight_decay"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov momentum requires"),
    (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "zero dampening"),
    (lambda p: Adam(p, lr=-1.0), "invalid lr"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), "beta parameter at index 0"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), "beta parameter at index 1"),
    (lambda p: Adam(p, betas=(0.9,)), "betas must be a pair"),
    (lambda p: Adam(p, eps=-1e-8), "invalid eps"),
    (lambda p: AdamW(p, weight_decay=-0.1), "invalid weight_decay"),
    (lambda p: Adam(p, lr=float("nan")), "invalid lr"),
    (lambda p: SGD([{"params": p, "momentun": 0.9}], lr=0.1), "unknown hyperparameter"),
    (lambda p: SGD([], lr=0.1), "empty parameter list"),
    (lambda p: SGD(p + p, lr=0.1), "same parameter twice"),
    (lambda p: SGD([{"params": p}, {"params": p}], lr=0.1), "more than one parameter group"),
    (lambda p: SGD([p[0] * 2], lr=0.1), "non-leaf"),
])
def test_hyperparameter_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make([Parameter(np.zeros(2))])


def test_type_errors():
    with pytest.raises(TypeError, match="single Tensor"):
        SGD(Parameter(np.zeros(2)), lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        SGD([np.zeros(2)], lr=0.1)
    assert issubclass(AdamW, Adam) and issubclass(SGD, Optimizer)
    assert AdamW([Parameter(np.zeros(1))]).param_groups[0]["weight_decay"] == 1e-2


# ---- clipping ----------------------------------------------------------------------------

def params_with_grads(*grads):
    ps = []
    for g in grads:
        p = Parameter(np.zeros(np.shape(g)))
        p.grad = None if g is None else ag.Tensor(np.array(g, dtype=np.float64))
        ps.append(p)
    return ps


def test_clip_grad_norm_returns_total_and_scales():
    ps = params_with_grads([3.0, 4.0], [[12.0]], None)
    total = clip_grad_norm_(ps, 6.5)
    assert isinstance(total, float) and total == pytest.approx(13.0, abs=1e-12)
    scale = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(ps[0].grad.numpy(), [3 * scale, 4 * scale], rtol=1e-14)
    np.testing.assert_allclose(ps[1].grad.numpy(), [[12 * scale]], rtol=1e-14)
    assert ps[2].grad is None
    after = clip_grad_norm_(ps, 100.0)  # now below max_norm: unchanged
    assert after == pytest.approx(6.5, abs=1e-6) and after <= 6.5
    np.testing.assert_allclose(ps[0].grad.numpy(), [3 * scale, 4 * scale], rtol=1e-14)


@pytest.mark.parametrize("norm_type,expected", [(1, 19.0), (2.0, 13.0), (math.inf, 12.0),
                                                ("inf", 12.0), (3, (27 + 64 + 1728) ** (1 / 3))])
def test_clip_grad_norm_types(norm_type, expected):
    ps = params_with_grads([3.0, -4.0], [[-12.0]])
    assert clip_grad_norm_(ps, 1.0, norm_type=norm_type) == pytest.approx(expected, rel=1e-12)
    assert clip_grad_norm_(ps, 2.0, norm_type=norm_type) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=(4, 3)) * 5, rng.normal(size=(7,))]
    ps = params_with_grads(*grads)
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(ts, grads):
        t.grad = torch.from_numpy(g.copy())
    total = clip_grad_norm_(ps, 2.0, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(ts, 2.0, norm_type=norm_type, foreach=False)
    assert total == pytest.approx(ttotal.item(), rel=1e-12)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-12)


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=8), st.floats(1e-3, 10.0))
def test_clipped_norm_is_bounded(values, max_norm):
    (p,) = params_with_grads(values)
    total = clip_grad_norm_([p], max_norm)
    assert total == pytest.approx(float(np.linalg.norm(values)), rel=1e-12, abs=1e-300)
    clipped = np.linalg.norm(p.grad.numpy())
    assert clipped <= max_norm * (1 + 1e-12)
    if total <= max_norm:  # (up to torch's 1e-6 in the denominator) left alone
        np.testing.assert_allclose(p.grad.numpy(), values, rtol=1e-6 / total if total else 0)


def test_clip_grad_norm_edge_cases():
    assert clip_grad_norm_([Parameter(np.zeros(2))], 1.0) == 0.0  # no grads at all
    (p,) = params_with_grads([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_(p, -1.0)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm_(p, 1.0, norm_type="fro")


def test_clip_grad_value():
    ps = params_with_grads([3.0, -4.0, 0.5], [[-12.0]], None)
    assert clip_grad_value_(ps, 3.5) is None
    np.testing.assert_array_equal(ps[0].grad.numpy(), [3.0, -3.5, 0.5])
    np.testing.assert_array_equal(ps[1].grad.numpy(), [[-3.5]])
    assert ps[2].grad is None
    with pytest.raises(ValueError, match="clip_value"):
        clip_grad_value_(ps, -1.0)


def test_clipping_tames_an_exploding_recurrence():
    # Source note 003: h_t = w * h_{t-1} with |w| > 1 explodes in BPTT; clipping bounds the step.
    w = Parameter(np.array([1.5]))
    h = ag.Tensor(np.array([1.0]))
    for _ in range(40):
        h = w * h
    h.sum().backward()
    raw = float(np.abs(w.grad.numpy()).max())  # 40 * 1.5**39, about 2.9e8
    assert raw == pytest.approx(40 * 1.5 ** 39, rel=1e-12)
    assert clip_grad_norm_([w], 1.0) == pytest.approx(raw, rel=1e-12)
    SGD([w], lr=0.1).step()
    assert abs(w.item() - 1.5) <= 0.1 + 1e-12
