"""Bad input fails at the op that received it, with a message naming the op and the shapes or
dtypes; in-place changes of values a pending backward needs are caught by the version check;
a failing call leaves nothing half-done."""
import numpy as np
import pytest

import autograd_core as ag


def leaf(*shape):
    return ag.Tensor(np.arange(1.0, 1.0 + np.prod(shape)).reshape(shape) / 10, requires_grad=True)


# ---- shapes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("a, b, detail", [
    ((2, 3), (4, 5), r"inner dimensions differ \(3 != 4\)"),
    ((3,), (4,), r"inner dimensions differ \(3 != 4\)"),
    ((2, 3), (2,), r"inner dimensions differ \(3 != 2\)"),
    ((2, 3, 4), (5, 4, 2), "batch dimensions do not broadcast"),
])
def test_matmul_shape_mismatch(a, b, detail):
    with pytest.raises(ValueError, match=rf"^matmul: shapes {_re(a)} and {_re(b)} are not "
                                         rf"aligned: {detail}"):
        leaf(*a) @ leaf(*b)


def test_matmul_message_is_the_documented_one():
    with pytest.raises(ValueError) as info:
        ag.matmul(ag.Tensor(np.ones((2, 3))), ag.Tensor(np.ones((4, 5))))
    assert str(info.value) == ("matmul: shapes (2, 3) and (4, 5) are not aligned: inner "
                               "dimensions differ (3 != 4)")


def test_matmul_of_a_0d_operand():
    with pytest.raises(ValueError, match=r"matmul: .*at least 1 dimension.*\(\) and \(3,\)"):
        ag.Tensor(2.0) @ leaf(3)


def _re(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("name, fn", [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b), ("pow", lambda a, b: a ** b),
    ("maximum", ag.maximum), ("minimum", ag.minimum),
    ("add", lambda a, b: np.asarray(a) + b),  # ndarray on the left: still our op's error
])
def test_non_broadcastable_binary_operands(name, fn):
    with pytest.raises(ValueError, match=rf"^{name}: operands could not be broadcast together: "
                                         rf"shapes \(2, 3\) and \(4,\)"):
        fn(leaf(2, 3), leaf(4))


def test_non_broadcastable_where():
    with pytest.raises(ValueError, match=r"^where: .*broadcast.*\(2,\), \(3,\) and \(3,\)"):
        ag.where(np.array([True, False]), leaf(3), leaf(3))
    with pytest.raises(ValueError, match=r"^where: .*\(3,\), \(2, 3\) and \(4,\)"):
        ag.where(np.ones(3, dtype=bool), leaf(2, 3), leaf(4))


@pytest.mark.parametrize("shape", [(4,), (2, 2), (7, -1)])
def test_reshape_to_an_incompatible_shape(shape):
    with pytest.raises(ValueError, match=rf"^reshape: cannot reshape a tensor of shape "
                                         rf"\(2, 3\) into shape {_re(shape)}"):
        leaf(2, 3).reshape(shape)


@pytest.mark.parametrize("name, call", [
    ("sum", lambda t: t.sum(axis=2)), ("sum", lambda t: ag.sum(t, axis=(0, -3))),
    ("mean", lambda t: t.mean(axis=5)), ("max", lambda t: t.max(axis=-3)),
    ("logsumexp", lambda t: t.logsumexp(axis=2)), ("softmax", lambda t: t.softmax(axis=2)),
    ("log_softmax", lambda t: ag.log_softmax(t, axis=-3)),
])
def test_axis_out_of_range(name, call):
    with pytest.raises(ValueError, match=rf"^{name}: axis -?\d is out of range for a tensor "
                                         rf"with 2 dimension"):
        call(leaf(2, 3))


def test_concatenate_and_stack_shape_mismatch():
    with pytest.raises(ValueError, match=r"^concatenate: shapes \(2, 3\), \(2, 4\) must match "
                                         r"except along axis 0"):
        ag.concatenate([leaf(2, 3), leaf(2, 4)], axis=0)
    with pytest.raises(ValueError, match=r"^concatenate: axis 2 is out of range"):
        ag.concatenate([leaf(2, 3), leaf(2, 3)], axis=2)
    with pytest.raises(ValueError, match=r"^concatenate: need at least one tensor"):
        ag.concatenate([])
    with pytest.raises(ValueError, match=r"^stack: all tensors must have the same shape, got "
                                         r"\(2, 3\), \(3, 2\)"):
        ag.stack([leaf(2, 3), leaf(3, 2)])


def test_split_into_unequal_parts():
    with pytest.raises(ValueError, match=r"^split: axis 1 of length 5 cannot be split into 2 "
                                         r"equal parts"):
        ag.split(leaf(2, 5), 2, axis=1)
    with pytest.raises(ValueError, match=r"^split: .* 0 equal parts"):
        ag.split(leaf(4), 0)


@pytest.mark.parametrize("index", [5, (0, 3), np.array([0, 7]), np.array([True, False])])
def test_indexing_out_of_range(index):
    with pytest.raises(IndexError, match=r"^getitem: .*\(tensor of shape \(3, 3\)\)"):
        leaf(3, 3)[index]


def test_other_shape_ops():
    with pytest.raises(ValueError, match=r"^transpose: axes .* not a permutation"):
        leaf(2, 3).transpose(0, 0)
    with pytest.raises(ValueError, match=r"^broadcast_to: cannot broadcast a tensor of shape "
                                         r"\(2, 3\) to shape \(4, 3\)"):
        ag.broadcast_to(leaf(2, 3), (4, 3))


@pytest.mark.parametrize("method, value, exc", [
    ("add_", np.ones((2, 3)), ValueError), ("mul_", np.ones(4), ValueError),
    ("__setitem__", None, IndexError),
])
def test_inplace_bad_input_names_the_method_and_changes_nothing(method, value, exc):
    t = ag.Tensor([1.0, 2.0, 3.0])
    with pytest.raises(exc, match=rf"{method}.*\(3,\)"):
        if value is None:
            t[5] = 1.0
        else:
            getattr(t, method)(value)
    np.testing.assert_array_equal(t.data, [1.0, 2.0, 3.0])


def test_inplace_dtype_mismatch_names_the_method_and_the_dtypes():
    t = ag.Tensor([1, 2, 3])
    with pytest.raises(TypeError, match=r"^add_: .*float64.*int64"):
        t.add_(1.5)
    np.testing.assert_array_equal(t.data, [1, 2, 3])


# ---- backward arguments ----------------------------------------------------------------------
def test_backward_on_a_non_scalar_needs_a_gradient():
    x = leaf(2, 3)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"^backward: .*one-element.*shape \(2, 3\).*"
                                           r"gradient="):
        y.backward()
    with pytest.raises(RuntimeError, match=r"^grad: .*shape \(2, 3\)"):
        ag.grad(y, x)


def test_backward_with_a_gradient_of_the_wrong_shape():
    x = leaf(2, 3)
    with pytest.raises(ValueError, match=r"^backward: the gradient has shape \(3,\) but the "
                                         r"output has shape \(2, 3\)"):
        (x * 2.0).backward(np.ones(3))
    with pytest.raises(ValueError, match=r"^grad: the gradient has shape \(3, 2\)"):
        ag.grad(x * 2.0, x, grad_outputs=ag.Tensor(np.ones((3, 2))))
    assert x.grad is None


def test_backward_on_a_tensor_that_does_not_require_grad():
    with pytest.raises(RuntimeError, match=r"^backward: the tensor of shape \(\) .* does not "
                                           r"require grad"):
        ag.Tensor([1.0, 2.0]).sum().backward()
    with ag.no_grad():
        y = (leaf(2) * 2.0).sum()
    with pytest.raises(RuntimeError, match="does not require grad.*no_grad"):
        y.backward()
    x = leaf(1)
    with pytest.raises(RuntimeError, match="grad: input 1 does not require grad"):
        ag.grad((x * 2.0).sum(), [x, ag.Tensor([2.0])])


def test_bad_hooks():
    with pytest.raises(RuntimeError, match="register_hook: .*does not require grad"):
        ag.Tensor([1.0]).register_hook(lambda g: g)
    x = leaf(2)
    x.register_hook(lambda g: np.ones(3))
    with pytest.raises(RuntimeError, match=r"hook: .*shape \(3,\) for a tensor of shape \(2,\)"):
        (x * 2.0).sum().backward()


@pytest.mark.parametrize("make", [
    lambda: ag.Tensor([1, 2], requires_grad=True),
    lambda: ag.Tensor(np.arange(3, dtype=np.int32), requires_grad=True),
    lambda: ag.Tensor([True, False], requires_grad=True),
    lambda: ag.zeros((2,), dtype="int64", requires_grad=True),
    lambda: ag.Tensor([1, 2]).requires_grad_(),
], ids=["list-int", "int32", "bool", "zeros-int64", "requires_grad_"])
def test_integer_and_bool_tensors_cannot_require_grad(make):
    with pytest.raises(TypeError, match=r"only floating-point tensors can require grad, got "
                                        r"dtype (int64|int32|bool)"):
        make()


# ---- in-place change of a value a pending backward needs --------------------------------------
def _matmul_input(change):
    x = ag.Tensor(np.arange(6.0).reshape(2, 3))
    W = leaf(3, 2)
    loss = (x @ W).sum()
    change(x)
    return loss, "matmul", [W]


def _matmul_weight_iadd_under_no_grad():
    a, W = leaf(2, 3), leaf(3, 2)
    loss = (a @ W).sum()
    with ag.no_grad():
        W += 1.0
    return loss, "matmul", [a, W]


def _tanh_output():
    x = leaf(3)
    y = ag.tanh(x)
    loss = y.sum()
    with ag.no_grad():
        y.mul_(2.0)
    return loss, "tanh", [x]


def _transposed_weight():
    a, W = leaf(2, 3), ag.Tensor(np.ones((2, 3)), requires_grad=True, name="W")
    loss = (a @ W.T).sum()
    with ag.no_grad():
        W.mul_(2.0)
    return loss, "'W'.*matmul", [a, W]


def _transposed_constant():
    x, W = ag.Tensor(np.arange(6.0).reshape(3, 2)), leaf(3, 2)
    loss = (x.T @ W).sum()  # x.T is a view of x; matmul needs it for dW
    x.add_(1.0)
    return loss, "matmul", [W]


def _view_of_tanh_output():
    x = leaf(2, 2)
    y = ag.tanh(x)
    v = y.reshape(4)
    loss = y.sum()
    with ag.no_grad():
        v.mul_(0.0)  # writes y's memory
    return loss, "tanh", [x]


def _detached_alias_of_tanh_output():
    x = leaf(3)
    y = ag.tanh(x)
    loss = y.sum()
    y.detach().mul_(0.0)  # shares y's memory, as in PyTorch
    return loss, "tanh", [x]


def _set_data(x):
    x.data = np.zeros((2, 3))


def _setitem(x):
    x[0, 0] = 100.0


def _iadd(x):
    x += 1.0


@pytest.mark.parametrize("build", [
    lambda: _matmul_input(lambda x: x.add_(1.0)),
    lambda: _matmul_input(lambda x: x.mul_(2.0)),
    lambda: _matmul_input(_setitem),
    lambda: _matmul_input(_set_data),
    lambda: _matmul_input(_iadd),
    _matmul_weight_iadd_under_no_grad, _tanh_output, _transposed_weight,
    _transposed_constant, _view_of_tanh_output, _detached_alias_of_tanh_output,
], ids=["add_", "mul_", "setitem", "data=", "+=", "W+=_no_grad", "tanh-output",
        "W.T-then-W", "x.T-then-x", "view-of-output", "detached-alias"])
@pytest.mark.parametrize("call", ["backward", "grad"])
def test_inplace_change_of_a_needed_value_is_caught(build, call):
    loss, op, leaves = build()
    with pytest.raises(RuntimeError, match=rf"{op}.*modified in place"):
        if call == "backward":
            loss.backward()
        else:
            ag.grad(loss, leaves)


def test_inplace_change_of_a_value_not_needed_is_fine():
    w = leaf(3)
    c = ag.Tensor([1.0, 2.0, 3.0])
    s = leaf(3)
    loss = (w + c).sum() + ag.sum(s * 2.0)  # add and sum do not read their inputs' values
    c.add_(10.0)
    with ag.no_grad():
        s.add_(1.0)
    loss.backward()
    np.testing.assert_array_equal(w.grad.data, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(s.grad.data, [2.0, 2.0, 2.0])


def test_changes_before_use_and_optimizer_steps_are_fine():
    x = ag.Tensor(np.array([[1.0, 2.0, 3.0]]))
    W = ag.Tensor(np.full((3, 1), 0.5), requires_grad=True)
    x.add_(1.0)  # before the forward: the version check must not fire
    for _ in range(3):
        loss = ag.tanh(x @ W).sum()
        loss.backward()
        with ag.no_grad():
            W -= 0.1 * W.grad
        W.grad = None
    # three steps of gradient descent on tanh(x @ W), checked by hand
    w = np.full((3, 1), 0.5)
    xv = np.array([[2.0, 3.0, 4.0]])
    for _ in range(3):
        w -= 0.1 * xv.T @ (1 - np.tanh(xv @ w) ** 2)
    np.testing.assert_allclose(W.data, w, rtol=1e-6)


# ---- nothing half-done ----------------------------------------------------------------------
def _failing_graph():
    c = ag.Tensor([1.0, 2.0])
    w, p = leaf(2), leaf(2)
    q = (c * w).sum()  # older node: fails the version check
    m = p * 2.0  # newer node: visited first by the sweep
    m.retain_grad()
    loss = m.sum() + q
    c.add_(1.0)
    return loss, w, p, m


def test_failed_backward_leaves_leaf_gradients_unchanged():
    loss, w, p, _ = _failing_graph()
    p.grad = ag.Tensor([7.0, 7.0])
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()
    assert w.grad is None
    np.testing.assert_array_equal(p.grad.data, [7.0, 7.0])


def test_failed_backward_writes_no_retained_gradient_and_keeps_the_graph():
    loss, _, _, m = _failing_graph()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()
    assert m.grad is None
    with pytest.raises(RuntimeError, match="modified in place"):  # same error, not "freed"
        loss.backward()
