"""Fuzzing the engine against finite differences (issue 7, "Fuzzing").

Hypothesis builds random programs: DAGs of 5 to 40 ops drawn from every differentiable op family
(elementwise, binary arithmetic with tensors, ndarrays and Python scalars on either side,
reductions, softmax, cross-entropy, matmul and addmm, shape ops, joining, indexing and its
adjoint), on random broadcastable shapes, with shared subexpressions and tensors used several
times. The scalar loss is sum_i (t_i * R_i).sum() over every tensor the program computed but
did not use again, with fixed random R_i. The engine's gradient of the loss with respect to
every input (and to one computed tensor) is compared with central finite differences in
float64; a second property compares the derivative of the create_graph=True gradient with
finite differences of the gradient.

A program is a list of Python statements; the builder runs each one as it is drawn, so it
knows every shape and value and only draws ops whose constraints the pool satisfies (an
unsatisfiable draw falls back to a safe elementwise op). Values are kept in safe domains: log,
sqrt and non-integer powers only see values >= 0.1, exp only |x| <= 3, denominators |x| >= 0.2,
and any value beyond +-30 is scaled back. Kinked ops (abs, relu, clip, maximum, minimum, max,
min) and data-dependent conditions and masks only see inputs at least 1e-3 away from the kink
or tie (thresholds are placed in gaps of the data); the side of every kink is recorded and a
finite-difference step that crosses one rejects the example instead of failing it.

On failure the program is printed as a runnable listing. Run it longer with
    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/autograd_core/test_fuzz.py
The program machinery is in fuzz_programs.py.
"""

import numpy as np
from hypothesis import assume, given, note

import autograd_core as ag
from tests.autograd_core.fuzz_programs import (ATOL, EPS, KINDS, LEAF_SOURCE, RTOL,
                                               SMOOTH_KINDS, Builder, Program, RandomChooser,
                                               programs)

# ---- the checks ----------------------------------------------------------------------------------
def _flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)


def _where(prog, k):
    for name, v in prog.inputs().items():
        if k < v.size:
            index = tuple(int(i) for i in np.unravel_index(k, v.shape))
            return f"{prog.probe if name == '_delta' else name}{index}"
        k -= v.size
    return "?"


def assert_close(prog, engine, numeric, what, second=False):
    scale = max(1.0, float(np.max(np.abs(numeric), initial=0)),
                float(np.max(np.abs(engine), initial=0)))
    excess = np.abs(engine - numeric) - (ATOL * scale + RTOL * np.abs(numeric))
    if excess.size and excess.max() > 0:
        k = int(np.argmax(excess))
        if second:
            r, c = np.unravel_index(k, excess.shape)
            at = f"d (d loss / d {_where(prog, r)}) / d {_where(prog, c)}"
        else:
            at = f"d loss / d {_where(prog, k)}"
        raise AssertionError(f"{what}: {at}: engine {engine.flat[k]!r}, finite differences "
                             f"{numeric.flat[k]!r} (scale {scale:.3g})")


def _grads(grads, tensors):
    """Gradients as one flat array (None: zeros)."""
    return _flat([np.zeros(t.shape) if g is None else np.asarray(g.numpy(), np.float64)
                  for g, t in zip(grads, tensors)])


def finite_differences(prog, fn):
    """Central differences of fn(inputs) (an array) over every element of prog.inputs()."""
    values = prog.inputs()
    cols = []
    for v in values.values():
        flat = v.reshape(-1)
        for k in range(flat.size):
            orig = flat[k]
            flat[k] = orig + EPS
            plus = fn(values)
            flat[k] = orig - EPS
            minus = fn(values)
            flat[k] = orig
            cols.append((plus - minus) / (2 * EPS))
    return np.array(cols).T


def check_first_order(prog):
    """loss.backward() (with retain_grad on the probed tensor) against finite differences;
    ag.grad(..., create_graph=True) gives the same gradients."""
    ns = prog.run()
    assert prog.kinks_unchanged(ns)
    targets = [ns[n] for n in prog.values] + [ns[prog.probe]]
    ns[prog.probe].retain_grad()
    ns["loss"].backward()
    engine = _grads([t.grad for t in targets], targets)
    assert np.isfinite(engine).all(), f"non-finite gradient {engine}"

    ns = prog.run()
    targets = [ns[n] for n in prog.values] + [ns[prog.probe]]
    recorded = _grads(ag.grad(ns["loss"], targets, create_graph=True, allow_unused=True),
                      targets)
    np.testing.assert_allclose(recorded, engine, rtol=1e-9, atol=1e-12 * max(
        1.0, np.abs(engine).max(initial=0)), err_msg="ag.grad(..., create_graph=True) and "
                                                     "backward() disagree")

    def loss(values):
        with ag.no_grad():
            ns = prog.run(values, requires_grad=False)
        if not prog.kinks_unchanged(ns):
            assume(False)  # a step crossed a kink: no derivative to compare
        return np.array([float(ns["loss"].item())])

    numeric = finite_differences(prog, loss)[0]
    assert_close(prog, engine, numeric, "gradient")


def check_second_order(prog):
    """The derivative of the create_graph=True gradient (w.r.t. the leaves and the probed
    tensor) against finite differences of the plain gradient, element by element."""
    values = prog.inputs()
    ns = prog.run(values)
    wrt = [ns[n] for n in values]
    grads = ag.grad(ns["loss"], wrt, create_graph=True, allow_unused=True)
    n = sum(v.size for v in values.values())
    hessian = np.zeros((n, n))
    row = 0
    for g, x in zip(grads, wrt):
        if g is not None and g.requires_grad:
            for k in range(x.size):
                seed = np.zeros(g.shape)
                seed.flat[k] = 1.0
                hs = ag.grad(g, wrt, grad_outputs=seed, retain_graph=True, allow_unused=True)
                hessian[row + k] = _grads(hs, wrt)
        row += x.size
    assert np.isfinite(hessian).all()

    def gradient(values):
        ns = prog.run(values)
        wrt = [ns[n] for n in values]
        if not prog.kinks_unchanged(ns):
            assume(False)
        return _grads(ag.grad(ns["loss"], wrt, allow_unused=True), wrt)

    np.testing.assert_allclose(gradient(values), _grads(grads, wrt), rtol=1e-9, atol=1e-12 * max(
        1.0, np.abs(_grads(grads, wrt)).max(initial=0)), err_msg="create_graph=True changes "
                                                                 "the gradient")
    numeric = finite_differences(prog, gradient)
    assert_close(prog, hessian, numeric, "second derivative", second=True)


# ---- the properties ------------------------------------------------------------------------------
@given(prog=programs())
def test_random_programs_match_finite_differences(prog):
    note(prog.listing())
    check_first_order(prog)


@given(prog=programs(kinds=SMOOTH_KINDS, max_ops=25, max_leaf_elems=32))
def test_random_programs_second_derivatives_match_finite_differences(prog):
    note(prog.listing())
    check_second_order(prog)


# ---- the fuzzer itself ---------------------------------------------------------------------------
def _graph_ops(t):
    seen, stack, ops = set(), [t], set()
    while stack:
        u = stack.pop()
        if id(u) in seen or u._op is None:
            continue
        seen.add(id(u))
        ops.add(u._op.name)
        stack.extend(u._inputs)
    return ops


def test_the_fuzzer_reaches_every_registered_op():
    """Programs drawn the way the properties draw them record every op in ag.ops_registry
    (a newly registered op must be taught to the builder)."""
    seen = set()
    for seed in range(200):
        prog = Builder(RandomChooser(seed), seed, KINDS, 64).build(40)
        seen |= _graph_ops(prog.run()["loss"])
        if seen >= set(ag.ops_registry):
            break
    assert set(ag.ops_registry) - seen == set()


def test_a_listing_runs_as_printed():
    zeros = False
    for seed in range(6):
        prog = Builder(RandomChooser(seed), seed, KINDS, 64).build(20)
        zeros |= "zeros=True" in prog.listing()
        ns = {"np": np, "ag": ag}
        exec(LEAF_SOURCE.format(seed=prog.seed) + "\n" + prog.listing(), ns)
        assert ns["loss"].item() == prog.run()["loss"].item()
        again = Program.from_source(prog.seed, prog.listing())
        assert again.run()["loss"].item() == prog.run()["loss"].item()
    assert zeros


# ---- regressions: engine bugs the fuzzer found (minimal programs) --------------------------------
def test_regression_clip_with_tensor_bounds_differentiates_the_bounds():
    # Found by the fuzzer: ag.clip(x, min=t) with a tensor t uses t's array and records only x
    # as an input, so t gets no gradient (and clipping a constant by a bound that requires
    # grad gives a tensor that does not require grad). As torch.clamp: the gradient goes to x
    # where min <= x <= max, to min where x < min, to max where x > max.
    check_first_order(Program.from_source(1, """
        x0 = leaf((3,), 0)
        x1 = leaf((3,), 1)
        v2 = ag.clip(x0, min=x1)
        v3 = ag.clip(x0, max=x1)
        v4 = ag.clip(x0, x1 - 1.0, x1 + 1.0)
    """))
    x = ag.Tensor(np.array([0.5, 2.0, -1.0]), requires_grad=True)
    lo = ag.Tensor(np.array([1.0, 0.0, 0.0]), requires_grad=True)
    ag.clip(x, min=lo).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(lo.grad.numpy(), [1.0, 0.0, 1.0])
    assert ag.clip(np.array([0.5, 2.0]), min=lo[:2]).requires_grad


def test_regression_pow_second_derivative_at_zero_exponent():
    # Found by the fuzzer (as v3 = v2 - v2; v5 = exp(tanh(v3)) ** v3): Pow's rule gives d/da as
    # where(b == 0, 0, g b a^(b-1)). The value is right, but the constant branch cuts the
    # dependence on b, so d/db (d a^b / da) = a^(b-1) (1 + b log a) comes out 0 instead of 1/a
    # wherever the exponent is exactly 0.
    check_second_order(Program.from_source(0, """
        x0 = leaf((), 0)
        v1 = x0 - x0
        v2 = ag.exp(x0) ** v1
    """, probe="v1"))
    a = ag.Tensor(np.array([2.0, 0.5]), requires_grad=True)
    b = ag.Tensor(np.array([0.0, 0.0]), requires_grad=True)
    (ga,) = ag.grad((a ** b).sum(), a, create_graph=True)
    np.testing.assert_array_equal(ga.numpy(), [0.0, 0.0])
    (gab,) = ag.grad(ga.sum(), b)
    np.testing.assert_allclose(gab.numpy(), [0.5, 2.0])


def test_regression_pow_gradient_at_zero_base_beside_zero_exponent():
    # Found by the fuzzer (an input holding exact zeros, raised to an array of integer
    # exponents): when any element takes Pow's special branch (b == 0, or a == 0 with
    # 0 < b < 1), the rule evaluates b a^(b-1) with every zero base replaced by 1, so an element
    # with a == 0 and b = 2 gets d/da = 2 instead of 0 (and b = 3 gets 3).
    check_first_order(Program.from_source(325, """
        x2 = leaf((3, 1), 2, zeros=True)
        v3 = x2 ** np.array([[0.0], [2.0], [1.0]])
    """))
    a = ag.Tensor(np.array([0.0, 0.0, 2.0]), requires_grad=True)
    (a ** np.array([2.0, 3.0, 0.0])).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 0.0, 0.0])
