"""The reverse sweep: backward and ag.grad semantics, accumulation, retain_graph, second order,
hooks, retain_grad, detach, grad mode (per thread), memory release, the 100,000-step unroll and
gradcheck's reports."""
import gc
import sys
import threading
import weakref
from collections import deque

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.function import record


# ---- accumulation ----------------------------------------------------------------------------
def test_accumulates_across_uses_in_one_graph():
    x = ag.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = (x * x).sum() + (x + x + x).sum() + ag.exp(x).sum()  # 2x + 3 + e^x
    y.backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.data + 3 + np.exp(x.data), rtol=1e-12)


def test_accumulates_across_backward_calls_until_reset():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    for k in (1, 2, 3):
        (x * x * x).sum().backward()  # 3x^2 per call
        np.testing.assert_allclose(x.grad.data, k * 3 * x.data ** 2)
    x.grad = None
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad.data, [5.0, 5.0])


def _rnn_loss(Ws, U, xs, h0):
    h, loss = h0, 0.0
    for W, x in zip(Ws, xs):
        h = ag.tanh(x @ U + h @ W)
        loss = loss + (h * h).sum()
    return loss


def test_shared_weight_over_three_time_steps_gets_the_sum_of_per_step_gradients():
    rng = np.random.default_rng(0)
    W = ag.Tensor(rng.standard_normal((3, 3)) * 0.5, requires_grad=True)
    U = ag.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    xs = [ag.Tensor(rng.standard_normal((4, 2))) for _ in range(3)]
    h0 = ag.Tensor(rng.standard_normal((4, 3)))
    _rnn_loss([W] * 3, U, xs, h0).backward()
    copies = [ag.Tensor(W.data.copy(), requires_grad=True) for _ in range(3)]
    _rnn_loss(copies, U, xs, h0).backward()
    per_step = [c.grad.data for c in copies]
    assert all(np.abs(g).max() > 1e-3 for g in per_step)
    np.testing.assert_allclose(W.grad.data, sum(per_step), rtol=1e-12)
    assert ag.gradcheck(lambda w: _rnn_loss([w] * 3, U, xs, h0), [W.data])


# ---- retain_graph and freeing ----------------------------------------------------------------
def test_retain_graph_allows_a_second_backward_and_then_the_graph_is_freed():
    x = ag.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    y = ag.tanh(x * 2.0).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.data, 2 * 2 * (1 - np.tanh(2 * x.data) ** 2))
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        ag.grad(y, x)


def test_backward_through_part_of_a_freed_graph_suggests_detach_then_retain_graph():
    x = ag.Tensor([1.0, 2.0], requires_grad=True)
    h = ag.exp(x)
    h.sum().backward()
    with pytest.raises(RuntimeError, match=r"h = h.detach\(\).*retain_graph=True"):
        (h * 2.0).sum().backward()


def test_saved_intermediate_is_released_after_backward():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = ag.exp(x)
    y = (h * h).sum()
    ref = weakref.ref(h)
    del h
    gc.collect()
    assert ref() is not None  # the graph keeps it for backward
    y.backward()
    assert ref() is None  # released with the graph, while y is still alive
    np.testing.assert_allclose(x.grad.data, 2 * np.exp(2 * x.data))


def test_saved_input_array_is_released_after_backward_but_kept_with_retain_graph():
    W = ag.Tensor(np.ones((3, 2)), requires_grad=True)
    xt = ag.Tensor(np.arange(6.0).reshape(2, 3))
    arr_ref = weakref.ref(xt.numpy())
    y = (xt @ W).sum()
    del xt
    y.backward(retain_graph=True)
    assert arr_ref() is not None
    y.backward()
    assert arr_ref() is None
    np.testing.assert_allclose(W.grad.data, 2 * np.arange(6.0).reshape(2, 3).T @ np.ones((2, 2)))


# ---- ag.grad ---------------------------------------------------------------------------------
def test_grad_returns_gradients_and_leaves_dot_grad_alone():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    w = ag.Tensor(np.array([3.0, -1.0]), requires_grad=True)
    w.grad = ag.Tensor(np.array([9.0, 9.0]))
    y = (x * w).sum()
    gx, gw = ag.grad(y, [x, w])
    np.testing.assert_array_equal(gx.data, w.data)
    np.testing.assert_array_equal(gw.data, x.data)
    assert x.grad is None
    np.testing.assert_array_equal(w.grad.data, [9.0, 9.0])
    (gx2,) = ag.grad(ag.tanh(x).sum(), x)
    np.testing.assert_allclose(gx2.data, 1 - np.tanh(x.data) ** 2)


def test_grad_with_grad_outputs_and_several_outputs():
    x = ag.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y1, y2 = x * x, ag.exp(x).sum()
    v = np.array([1.0, -2.0, 0.5])
    (g,) = ag.grad([y1, y2], [x], grad_outputs=[ag.Tensor(v), ag.Tensor(np.array(3.0))])
    np.testing.assert_allclose(g.data, v * 2 * x.data + 3 * np.exp(x.data), rtol=1e-12)
    (g1,) = ag.grad(x * x, x, grad_outputs=v)  # one output: an ndarray is fine too
    np.testing.assert_allclose(g1.data, v * 2 * x.data)


def test_grad_allow_unused_and_non_leaf_inputs():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    unused = ag.Tensor(np.array([5.0]), requires_grad=True)
    h = x * 3.0
    h.retain_grad()
    y = (h * h).sum()
    with pytest.raises(RuntimeError, match="allow_unused"):
        ag.grad(y, [x, unused], retain_graph=True)
    gx, gu, gh = ag.grad(y, [x, unused, h], allow_unused=True)
    assert gu is None
    np.testing.assert_allclose(gh.data, 2 * h.data)
    np.testing.assert_allclose(gx.data, 18 * x.data)
    assert h.grad is None and x.grad is None  # ag.grad writes no .grad, retained or not


# ---- second order ----------------------------------------------------------------------------
def test_second_and_third_derivative_of_tanh():
    v = np.linspace(-2.0, 2.0, 7)
    x = ag.Tensor(v.copy(), requires_grad=True)
    (d1,) = ag.grad(ag.tanh(x).sum(), x, create_graph=True)
    (d2,) = ag.grad(d1.sum(), x, create_graph=True)
    (d3,) = ag.grad(d2.sum(), x)
    t = np.tanh(v)
    np.testing.assert_allclose(d1.data, 1 - t ** 2, rtol=1e-12)
    np.testing.assert_allclose(d2.data, -2 * t * (1 - t ** 2), atol=1e-14)
    np.testing.assert_allclose(d3.data, -2 * (1 - t ** 2) * (1 - 3 * t ** 2), atol=1e-14)


def test_second_derivative_of_sigmoid_via_backward_create_graph():
    v = np.linspace(-3.0, 3.0, 7)
    x = ag.Tensor(v.copy(), requires_grad=True)
    ag.sigmoid(x).sum().backward(create_graph=True)
    d1 = x.grad
    assert d1.requires_grad and not d1.is_leaf
    s = 1 / (1 + np.exp(-v))
    np.testing.assert_allclose(d1.data, s * (1 - s), rtol=1e-12)
    x.grad = None
    d1.sum().backward()
    np.testing.assert_allclose(x.grad.data, s * (1 - s) * (1 - 2 * s), atol=1e-14)


def _f(x, A):
    return (ag.tanh(A @ x) ** 2).sum() + (x * x * x).sum()


def test_hessian_vector_product_matches_finite_differences_of_the_gradient():
    rng = np.random.default_rng(7)
    A = ag.Tensor(rng.standard_normal((4, 5)))
    xv, v = rng.standard_normal(5), rng.standard_normal(5)
    x = ag.Tensor(xv.copy(), requires_grad=True)
    (g,) = ag.grad(_f(x, A), x, create_graph=True)
    (hv,) = ag.grad((g * ag.Tensor(v)).sum(), x)

    def gradient_at(p):
        t = ag.Tensor(p, requires_grad=True)
        return ag.grad(_f(t, A), t)[0].data

    eps = 1e-6
    fd = (gradient_at(xv + eps * v) - gradient_at(xv - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv.data, fd, rtol=1e-6, atol=1e-7)


# ---- hooks, retain_grad, detach --------------------------------------------------------------
def test_hook_on_a_leaf_sees_the_total_gradient_and_can_replace_it():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    seen = []
    handle = x.register_hook(lambda g: seen.append(g.data.copy()))
    (x * x + x * 3.0).sum().backward()
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * x.data + 3)
    handle.remove()
    x.grad = None
    x.register_hook(lambda g: g * 10.0)
    (x * 3.0).sum().backward()
    assert len(seen) == 1  # the removed hook is not called again
    np.testing.assert_allclose(x.grad.data, [30.0, 30.0])


def test_hook_on_a_non_leaf_changes_what_flows_back():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    h.register_hook(lambda g: g * 2.0)
    h.register_hook(lambda g: g + 1.0)  # hooks run in order, each on the previous result
    h.sum().backward()
    np.testing.assert_allclose(x.grad.data, [9.0, 9.0])  # ((1 * 2) + 1) * 3
    assert h.grad is None


def test_removed_hook_is_not_called():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 1.0
    handle = h.register_hook(lambda g: g * 0.0)
    handle.remove()
    handle.remove()  # removing twice is harmless
    h.sum().backward()
    np.testing.assert_allclose(x.grad.data, [1.0, 1.0])


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = ag.Tensor(np.array([1.0, -1.0]), requires_grad=True)
    h = x * 2.0
    k = h * 1.0
    h.retain_grad()
    (h * h).sum().backward(retain_graph=True)
    np.testing.assert_allclose(h.grad.data, 2 * h.data)
    assert k.grad is None
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.data, 4 * h.data)  # accumulates like a leaf
    with pytest.raises(RuntimeError, match="retain_grad"):
        ag.Tensor([1.0]).retain_grad()


# ---- grad mode -------------------------------------------------------------------------------
def test_no_grad_records_nothing_and_restores_the_mode():
    x = ag.Tensor([1.0], requires_grad=True)
    assert ag.is_grad_enabled()
    with ag.no_grad():
        assert not ag.is_grad_enabled()
        y = x * 2.0
        with ag.enable_grad():
            z = x * 2.0
    assert not y.requires_grad and y.is_leaf and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None
    with pytest.raises(ZeroDivisionError):
        with ag.no_grad():
            1 / 0
    assert ag.is_grad_enabled()
    with ag.set_grad_enabled(False):
        assert not (x * 1.0).requires_grad
    assert (x * 1.0).requires_grad


def test_no_grad_and_enable_grad_as_decorators():
    x = ag.Tensor([1.0], requires_grad=True)

    @ag.no_grad()
    def step(t):
        return t * 2.0, ag.is_grad_enabled()

    @ag.enable_grad()
    def forward(t):
        return t * 2.0

    y, mode = step(x)
    assert not mode and not y.requires_grad and ag.is_grad_enabled()
    assert step.__name__ == "step"
    with ag.no_grad():
        assert forward(x).requires_grad
        assert not ag.is_grad_enabled()


def test_no_grad_as_a_decorator_without_parentheses():
    @ag.no_grad  # as @torch.no_grad
    def double(t):
        return t * 2.0

    y = double(ag.Tensor([1.0], requires_grad=True))
    assert not y.requires_grad
    np.testing.assert_array_equal(y.data, [2.0])


def test_grad_mode_is_per_thread():
    x = ag.Tensor([1.0], requires_grad=True)
    barrier = threading.Barrier(2, timeout=10)
    results = {}

    def quiet():
        with ag.no_grad():
            barrier.wait()  # the other thread computes while this one is inside no_grad
            results["quiet"] = (x * 2.0).requires_grad
            barrier.wait()

    def busy():
        barrier.wait()
        results["busy"] = (x * 2.0).requires_grad, ag.is_grad_enabled()
        barrier.wait()

    threads = [threading.Thread(target=quiet), threading.Thread(target=busy)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"quiet": False, "busy": (True, True)}

    with ag.no_grad():  # a thread started under no_grad starts with grad mode on
        worker = threading.Thread(target=lambda: results.update(new=ag.is_grad_enabled()))
        worker.start()
        worker.join()
    assert results["new"] is True


# ---- the long unroll -------------------------------------------------------------------------
def _unroll(W, x, h, steps, keep=0):
    history = deque([h.data], maxlen=keep + 1)  # the last `keep` steps' values
    for _ in range(steps):
        h = ag.tanh(h @ W + x)
        history.append(h.data)
    return h, list(history)


def _manual_dW(W, x, hs):
    """d sum(h_T) / dW by hand over the steps hs[0] -> hs[-1] (numpy only)."""
    dW, gh = np.zeros_like(W), np.ones_like(hs[-1])
    for t in range(len(hs) - 1, 0, -1):
        ga = gh * (1 - hs[t] ** 2)
        dW += hs[t - 1].T @ ga
        gh = ga @ W.T
    return dW


def _recurrence_setup():
    rng = np.random.default_rng(5)
    return rng.standard_normal((3, 3)) * 0.2, rng.standard_normal((2, 3)), \
        rng.standard_normal((2, 3)) * 0.1


def test_short_unroll_matches_manual_bptt():
    Wv, xv, h0 = _recurrence_setup()
    W = ag.Tensor(Wv.copy(), requires_grad=True)
    h, hs = _unroll(W, ag.Tensor(xv), ag.Tensor(h0), 6, keep=6)
    h.sum().backward()
    np.testing.assert_allclose(W.grad.data, _manual_dW(Wv, xv, hs), rtol=1e-12)


def test_100k_step_unroll_runs_backward_at_the_default_recursion_limit():
    limit = sys.getrecursionlimit()
    Wv, xv, h0 = _recurrence_setup()
    W = ag.Tensor(Wv.copy(), requires_grad=True)
    h, last = _unroll(W, ag.Tensor(xv), ag.Tensor(h0), 100_000, keep=60)
    h.sum().backward()
    assert sys.getrecursionlimit() == limit
    assert W.grad.shape == (3, 3) and np.isfinite(W.grad.data).all()
    # The recurrence contracts (||W||_2 = 0.44), so steps more than 60 back contribute
    # < 0.44**60 ~ 1e-21 relative: BPTT truncated to the last 60 steps, by hand, is exact.
    np.testing.assert_allclose(W.grad.data, _manual_dW(Wv, xv, last), rtol=1e-10)


def test_100k_step_graph_is_freed_by_del_without_backward():
    Wv, xv, h0 = _recurrence_setup()
    W = ag.Tensor(Wv, requires_grad=True)
    first = ag.tanh(ag.Tensor(h0) @ W + ag.Tensor(xv))
    ref = weakref.ref(first)
    h, _ = _unroll(W, ag.Tensor(xv), first, 100_000)
    del first
    assert ref() is not None
    del h
    assert ref() is None  # plain reference counting, no RecursionError, no cycle collector
    assert W.grad is None


# ---- gradcheck / gradgradcheck reports -------------------------------------------------------
class _WrongSquare(ag.Op):
    """x ** 2 with a backward that is off by BUMP (elementwise, same shape as x)."""
    name = None  # not registered in ag.ops_registry

    @staticmethod
    def backward(g, out, xp):
        x = out._inputs[0]
        return (g * 2 * xp.val(x) + g * _WrongSquare.BUMP,)


def _wrong_square(x):
    return record(_WrongSquare, x.data ** 2, (x,))


class _FrozenCube(ag.Op):
    """x ** 3 whose first derivative is right but treated as a constant in x (the second
    derivative comes out as 0 instead of 6 x)."""
    name = None

    @staticmethod
    def backward(g, out, xp):
        return (g * (3 * out._inputs[0].data ** 2),)


def _frozen_cube(x):
    return record(_FrozenCube, x.data ** 3, (x,))


def test_gradcheck_names_the_worst_element():
    assert _WrongSquare not in ag.ops_registry.values()  # name = None: not registered
    _WrongSquare.BUMP = np.array([[0.0, 0.01, 0.0], [0.0, 0.0, 0.5]])
    x = np.array([[0.5, -1.0, 0.25], [2.0, 1.5, 1.0]])
    with pytest.raises(ag.GradcheckError,
                       match=r"output 0 element 5, input 0 element \(1, 2\): engine 2\.5, "
                             r"finite differences (2|1\.99)"):
        ag.gradcheck(_wrong_square, [x])
    assert ag.gradcheck(_wrong_square, [x], raise_exception=False) is False
    _WrongSquare.BUMP = 0.0
    assert ag.gradcheck(_wrong_square, [x]) is True


def test_gradgradcheck_passes_on_correct_ops():
    x = np.array([0.3, -0.7, 1.1])
    assert ag.gradgradcheck(ag.tanh, [x])
    assert ag.gradgradcheck(lambda t: t * t * t, [x])


def test_gradgradcheck_names_the_worst_element_of_a_wrong_second_derivative():
    x = np.array([0.1, 0.2, 2.0])
    assert ag.gradcheck(_frozen_cube, [x])  # first derivative is right
    with pytest.raises(ag.GradcheckError,
                       match=r"^gradgradcheck: mismatch for output 0 element 2, input 0 "
                             r"element \(2,\): engine 0, "
                             r"finite differences (12|11\.99)"):
        ag.gradgradcheck(_frozen_cube, [x], grad_outputs=[np.ones(3)])



def test_the_sweep_visits_nodes_newest_first_whether_or_not_the_walk_found_them_so():
    """graph_walk._collect reverses a walk that came newest first (a chain) and sorts any
    other (a DAG whose walk meets an older branch first): oldest first either way, for the
    freeing walk and the reading one."""
    from autograd_core import graph_walk

    x = ag.Tensor(np.ones(3), requires_grad=True)
    chain = x
    for _ in range(6):
        chain = ag.tanh(chain * 2.0)
    a = ag.exp(x)            # made before b, reached after it by the walk below
    b = ag.tanh(x)
    dag = (b * 3.0) + a
    for root in (chain, dag):
        nodes, _, _ = graph_walk._collect((root,), None, claim=False)
        graph_walk._release_readers(nodes)
        seqs = [n._seq for n in nodes]
        assert seqs == sorted(seqs) and nodes[-1] is root
        claimed, _, _ = graph_walk._claiming_walk((root,), -7)[:3]
        assert {id(n) for n in claimed} == {id(n) for n in nodes}
        for n in claimed:
            assert n._epoch == -7
            n._epoch = None  # unclaimed again: the backward below frees the graph
    dag.backward(np.ones(3))
    np.testing.assert_allclose(x.grad.numpy(), 3 * (1 - np.tanh(1.0) ** 2) + np.e)


def test_a_walk_that_meets_a_freed_node_claims_nothing_it_marked():
    """The freeing backward marks each node as it reaches it; when it then meets a node an
    earlier backward freed, it takes every mark off again: the nodes it reached first are
    still whole, and another backward through them runs."""
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    u, v = x * 2.0, x * 3.0
    w = ag.tanh(v)  # reached, and marked, before the walk meets u (either order)
    u.sum().backward()  # frees u
    x.grad = None
    for first in (True, False):
        total = (u + w).sum() if first else (w + u).sum()
        with pytest.raises(RuntimeError, match="already freed"):
            total.backward()
    w.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3.0 * (1 - np.tanh(3.0 * x.numpy()) ** 2),
                               rtol=1e-12)


def test_a_walk_that_finds_an_in_place_change_claims_nothing_it_marked():
    x = ag.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    a = ag.Tensor(np.array([2.0, 3.0]))
    h = ag.tanh(x * 1.5)  # marked first: the root's newest input
    y = (x * a).sum() + h.sum()
    with ag.no_grad():
        a.add_(1.0)  # Mul's rule reads a: the walk raises when it checks that node
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()
    h.sum().backward()  # h's nodes were not left claimed
    np.testing.assert_allclose(x.grad.numpy(), 1.5 * (1 - np.tanh(1.5 * x.numpy()) ** 2),
                               rtol=1e-12)


def test_roots_given_twice_a_leaf_root_and_leaves_shared_by_successive_backwards():
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    gx, = ag.grad([y, y], [x])  # the same root twice: its gradient counted twice
    np.testing.assert_allclose(gx.numpy(), 4 * x.numpy())
    x.backward(np.array([1.0, 1.0]))  # a leaf as the root
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])
    for k in range(3):  # a leaf marked by one backward's walk is found anew by the next
        x.grad = None
        (x * x + x).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)
