"""The Tensor itself: construction, dtype rules, attributes, repr, numpy interop, Python
protocols, comparisons and in-place methods."""
import numpy as np
import pytest

import autograd_core as ag


# ---- construction and dtype rules ------------------------------------------------------------
@pytest.mark.parametrize("data, dtype", [
    (1.5, np.float32),
    ([1.0, 2.0], np.float32),
    ([[1.0, 2.0], [3.0, 4.0]], np.float32),
    ([1, 2.5], np.float32),            # a list with a float becomes float32, not float64
    (3, np.int64),
    ([1, 2, 3], np.int64),
    (True, np.bool_),
    ([True, False], np.bool_),
    (np.float64(2.0), np.float64),     # numpy scalars keep their dtype
    (np.arange(3, dtype=np.int32), np.int32),
    (np.ones(2, dtype=np.float16), np.float16),
])
def test_construction_dtype(data, dtype):
    t = ag.Tensor(data)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.data, np.asarray(data))


def test_ndarray_is_used_without_copy_and_keeps_float64():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = ag.Tensor(a)
    assert t.dtype == np.float64
    assert t.data is a or np.shares_memory(t.data, a)
    a[0, 0] = 10.0
    assert t.data[0, 0] == 10.0


def test_explicit_dtype_wins():
    assert ag.Tensor([1, 2], dtype=np.float64).dtype == np.float64
    assert ag.Tensor(np.zeros(2), dtype="float32").dtype == np.float32
    t = ag.Tensor([1, 2], dtype=np.float32, requires_grad=True)
    assert t.requires_grad and t.dtype == np.float32


def test_tensor_from_tensor_and_factory_functions():
    base = ag.Tensor(np.arange(3.0))
    t = ag.Tensor(base)
    np.testing.assert_array_equal(t.data, [0.0, 1.0, 2.0])
    assert ag.tensor([1.0], requires_grad=True, name="w").name == "w"
    z, o = ag.zeros((2, 3)), ag.ones(4, requires_grad=True)
    assert z.shape == (2, 3) and z.dtype == np.float32 and not z.data.any()
    assert o.requires_grad and o.dtype == np.float32
    np.testing.assert_array_equal(o.data, np.ones(4))


@pytest.mark.parametrize("bad", ["abc", None, 1 + 2j, [object()]])
def test_unsupported_data_is_rejected(bad):
    with pytest.raises(TypeError, match="Tensor"):
        ag.Tensor(bad)


@pytest.mark.parametrize("op", [
    lambda t: t + 2, lambda t: 2 + t, lambda t: t - 2.5, lambda t: 2.5 - t, lambda t: t * 3,
    lambda t: 3 * t, lambda t: t / 2, lambda t: 2 / t, lambda t: t ** 2, lambda t: 2 ** t,
    lambda t: -t, lambda t: ag.where(t > 1, t, 0), lambda t: ag.clip(t, 0, 1),
    lambda t: ag.maximum(t, 0.0), lambda t: ag.minimum(t, 1.0),
    lambda t: ag.maximum(t, 0), lambda t: ag.minimum(t, 1),
], ids=["add", "radd", "sub", "rsub", "mul", "rmul", "div", "rdiv", "pow", "rpow", "neg",
        "where", "clip", "maximum_float", "minimum_float", "maximum_int", "minimum_int"])
def test_python_numbers_keep_float32(op):
    t = ag.Tensor([0.5, 1.5, 2.5], requires_grad=True)
    out = op(t)
    assert out.dtype == np.float32
    out.sum().backward()
    assert t.grad.dtype == np.float32


def test_integer_arithmetic_and_promotion_follow_numpy():
    i = ag.Tensor([1, 2])
    assert (i + 1).dtype == np.int64
    np.testing.assert_array_equal((i * 3).data, [3, 6])
    assert (i + 2.5).dtype == np.float64  # as numpy: int64 array with a Python float
    f32, f64 = ag.Tensor([1.0]), ag.Tensor(np.array([1.0]))
    assert (f32 + f64).dtype == np.float64


def test_gradient_has_the_dtype_of_the_leaf():
    x = ag.Tensor([1.0, 2.0], requires_grad=True)  # float32
    y = (x * np.array([3.0, 4.0])).sum()  # float64 result
    assert y.dtype == np.float64
    y.backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.data, [3.0, 4.0])


# ---- attributes ------------------------------------------------------------------------------
def test_attributes_of_a_leaf():
    t = ag.Tensor(np.zeros((2, 3, 4)), requires_grad=True, name="w")
    assert t.shape == (2, 3, 4) and t.ndim == 3 and t.size == 24 and t.dtype == np.float64
    assert t.is_leaf and t.grad is None and t.grad_fn is None and t.requires_grad
    assert t.name == "w"
    assert t.numpy() is t.data


def test_attributes_of_an_op_output():
    x = ag.Tensor([1.0, 2.0], requires_grad=True)
    y = ag.tanh(x)
    assert not y.is_leaf and y.requires_grad and y.grad_fn is not None
    assert "Tanh" in repr(y.grad_fn)
    c = ag.tanh(ag.Tensor([1.0, 2.0]))  # nothing requires grad: a constant, not a node
    assert c.is_leaf and not c.requires_grad and c.grad_fn is None


def test_grad_is_a_tensor_and_can_be_reset():
    x = ag.Tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert isinstance(x.grad, ag.Tensor) and not x.grad.requires_grad
    np.testing.assert_allclose(x.grad.data, [2.0, 4.0])
    x.zero_grad()
    assert x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.data, [3.0, 3.0])
    x.grad = None
    assert x.grad is None


def test_requires_grad_method():
    t = ag.Tensor([1.0])
    assert t.requires_grad_() is t and t.requires_grad
    assert not t.requires_grad_(False).requires_grad
    y = ag.Tensor([1.0], requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="non-leaf"):
        y.requires_grad_(False)


# ---- repr ------------------------------------------------------------------------------------
def test_repr_is_readable():
    assert repr(ag.Tensor([1.0, 2.0])) == "Tensor([1., 2.])"
    assert repr(ag.Tensor([1.0, 2.0], requires_grad=True)) == \
        "Tensor([1., 2.], requires_grad=True)"
    assert repr(ag.Tensor([1, 2])) == "Tensor([1, 2], dtype=int64)"
    assert repr(ag.Tensor(np.zeros(2))) == "Tensor([0., 0.], dtype=float64)"
    assert repr(ag.Tensor(2.0, name="a")) == "Tensor(2., name='a')"
    r = repr(ag.tanh(ag.Tensor([0.0], requires_grad=True)))
    assert r.startswith("Tensor([0.]") and "grad_fn=<TanhBackward>" in r


def test_repr_of_a_large_tensor_is_summarised():
    r = repr(ag.Tensor(np.arange(10000.0)))
    assert "..." in r and len(r) < 500


# ---- numpy interop ----------------------------------------------------------------------------
def test_array_protocol():
    t = ag.Tensor(np.array([1.0, 2.0, 3.0]))
    assert np.asarray(t) is t.data
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    copy = np.array(t)
    np.testing.assert_array_equal(copy, [1.0, 2.0, 3.0])
    assert not np.shares_memory(copy, t.data)
    np.testing.assert_array_equal(np.asarray([t, t]), [[1, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize("fn, grad", [
    (lambda a, t: a + t, lambda a, t: np.ones_like(t) * a.shape[0]),
    (lambda a, t: a - t, lambda a, t: -np.ones_like(t) * a.shape[0]),
    (lambda a, t: a * t, lambda a, t: a.sum(0)),
    (lambda a, t: a / t, lambda a, t: (-a / t ** 2).sum(0)),
    (lambda a, t: a ** t, lambda a, t: (a ** t * np.log(a)).sum(0)),
    (lambda a, t: np.multiply(a, t), lambda a, t: a.sum(0)),
], ids=["add", "sub", "mul", "div", "pow", "np.multiply"])
def test_ndarray_op_tensor_gives_a_tensor_that_is_differentiated(fn, grad):
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    tv = np.array([0.5, 1.5, 2.0])
    t = ag.Tensor(tv.copy(), requires_grad=True)
    out = fn(a, t)
    assert isinstance(out, ag.Tensor) and out.shape == (2, 3)
    np.testing.assert_allclose(out.data, fn(a, tv))
    out.sum().backward()
    np.testing.assert_allclose(t.grad.data, grad(a, tv), rtol=1e-12)


def test_ndarray_matmul_tensor():
    a = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    w = ag.Tensor(np.array([[1.0, -1.0], [0.5, 2.0]]), requires_grad=True)
    out = a @ w
    assert isinstance(out, ag.Tensor)
    out.sum().backward()
    np.testing.assert_allclose(w.grad.data, a.T @ np.ones((3, 2)))


@pytest.mark.parametrize("ufunc, deriv", [
    (np.exp, np.exp), (np.log, lambda v: 1 / v), (np.sqrt, lambda v: 0.5 / np.sqrt(v)),
    (np.tanh, lambda v: 1 - np.tanh(v) ** 2), (np.abs, np.sign), (np.negative, lambda v: -1.0),
])
def test_numpy_ufuncs_on_tensors_are_recorded(ufunc, deriv):
    v = np.array([0.5, 1.0, 2.0])
    t = ag.Tensor(v.copy(), requires_grad=True)
    out = ufunc(t)
    assert isinstance(out, ag.Tensor) and out.requires_grad
    np.testing.assert_allclose(out.data, ufunc(v))
    out.sum().backward()
    np.testing.assert_allclose(t.grad.data, deriv(v) * np.ones(3), rtol=1e-12)


def test_np_maximum_of_tensors():
    a = ag.Tensor(np.array([1.0, 5.0]), requires_grad=True)
    b = ag.Tensor(np.array([3.0, 2.0]), requires_grad=True)
    np.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [0.0, 1.0])
    np.testing.assert_array_equal(b.grad.data, [1.0, 0.0])


def test_unsupported_ufunc_is_an_error_not_a_silent_ndarray():
    with pytest.raises(TypeError):
        np.sin(ag.Tensor([1.0], requires_grad=True))


# ---- Python protocols ------------------------------------------------------------------------
def test_len_iter_item():
    t = ag.Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    assert len(t) == 3
    rows = list(t)
    assert len(rows) == 3 and all(isinstance(r, ag.Tensor) and r.shape == (2,) for r in rows)
    np.testing.assert_array_equal(rows[2].data, [4.0, 5.0])
    (rows[0] * 1.0 + rows[2] * 2.0).sum().backward()  # iteration is differentiable
    np.testing.assert_array_equal(t.grad.data, [[1, 1], [0, 0], [2, 2]])
    assert ag.Tensor([[2.5]]).item() == 2.5 and isinstance(ag.Tensor(3).item(), int)
    assert float(ag.Tensor(1.5)) == 1.5 and int(ag.Tensor(7)) == 7
    with pytest.raises(TypeError, match="0-d"):
        len(ag.Tensor(1.0))
    with pytest.raises(ValueError, match=r"item.*\(2,\)"):
        ag.Tensor([1.0, 2.0]).item()


def test_truth_value_and_hash():
    assert bool(ag.Tensor(1.0)) and not bool(ag.Tensor(0.0))
    with pytest.raises(ValueError):
        bool(ag.Tensor([1.0, 2.0]))
    a, b = ag.Tensor([1.0]), ag.Tensor([1.0])
    assert len({a, b}) == 2 and {a: 1}[a] == 1  # tensors hash by identity


# ---- comparisons -----------------------------------------------------------------------------
@pytest.mark.parametrize("op, expected", [
    (lambda a, b: a < b, [True, False, False]), (lambda a, b: a <= b, [True, True, False]),
    (lambda a, b: a > b, [False, False, True]), (lambda a, b: a >= b, [False, True, True]),
    (lambda a, b: a == b, [False, True, False]), (lambda a, b: a != b, [True, False, True]),
], ids=["lt", "le", "gt", "ge", "eq", "ne"])
def test_comparisons_give_non_differentiable_bool_tensors(op, expected):
    a = ag.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    for other in (2.0, ag.Tensor([2.0, 2.0, 2.0], requires_grad=True), np.full(3, 2.0)):
        out = op(a, other)
        assert isinstance(out, ag.Tensor) and out.dtype == np.bool_
        assert not out.requires_grad and out.grad_fn is None
        np.testing.assert_array_equal(out.data, expected)


@pytest.mark.parametrize("op, expected", [
    (lambda a, t: a < t, [True, False, False]), (lambda a, t: a == t, [False, True, False]),
    (lambda a, t: a >= t, [False, True, True]),
], ids=["lt", "eq", "ge"])
def test_ndarray_compared_with_tensor(op, expected):
    # ndarray on the left: numpy routes np.less & co. through Tensor.__array_ufunc__.
    out = op(np.array([1.0, 2.0, 3.0]), ag.Tensor([2.0, 2.0, 2.0], requires_grad=True))
    assert isinstance(out, ag.Tensor) and out.dtype == np.bool_ and not out.requires_grad
    np.testing.assert_array_equal(out.data, expected)


def test_comparison_as_a_mask_in_where():
    x = ag.Tensor(np.array([-1.0, 2.0, -3.0, 4.0]), requires_grad=True)
    ag.where(x > 0, x * 2.0, x * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, [-2.0, 2.0, -6.0, 2.0])


# ---- in-place methods ------------------------------------------------------------------------
@pytest.mark.parametrize("method, arg, expected", [
    ("add_", 2.0, [3.0, 4.0, 5.0]), ("sub_", 1.0, [0.0, 1.0, 2.0]),
    ("mul_", 3.0, [3.0, 6.0, 9.0]), ("div_", 2.0, [0.5, 1.0, 1.5]),
    ("copy_", np.array([7.0, 8.0, 9.0]), [7.0, 8.0, 9.0]), ("fill_", 5.0, [5.0, 5.0, 5.0]),
    ("add_", ag.Tensor([1.0, 1.0, 1.0]), [2.0, 3.0, 4.0]),
])
def test_inplace_methods_change_the_data_and_return_self(method, arg, expected):
    t = ag.Tensor([1.0, 2.0, 3.0])
    data = t.data
    assert getattr(t, method)(arg) is t
    np.testing.assert_allclose(t.data, expected)
    assert t.data is data and t.dtype == np.float32


def test_zero_and_setitem():
    t = ag.Tensor(np.arange(6.0).reshape(2, 3))
    t[0, 1] = 10.0
    t[1] = ag.Tensor(np.array([7.0, 8.0, 9.0]))
    t[ag.Tensor(np.array([True, False]))] = -1.0
    np.testing.assert_array_equal(t.data, [[-1, -1, -1], [7, 8, 9]])
    assert t.zero_() is t and not t.data.any()


def test_inplace_on_a_leaf_requiring_grad_needs_no_grad():
    w = ag.Tensor([1.0, 2.0], requires_grad=True)
    for change in (lambda: w.add_(1.0), lambda: w.mul_(2.0), lambda: w.__setitem__(0, 5.0)):
        with pytest.raises(RuntimeError, match="in-place.*no_grad"):
            change()
    np.testing.assert_array_equal(w.data, [1.0, 2.0])
    with ag.no_grad():
        w.mul_(2.0)
        w[0] = 5.0
    np.testing.assert_array_equal(w.data, [5.0, 4.0])
    assert w.is_leaf and w.requires_grad


def test_augmented_assignment():
    c = ag.Tensor([1.0, 2.0])
    same = c
    c += 1.0  # outside the graph: in place
    assert c is same
    np.testing.assert_array_equal(same.data, [2.0, 3.0])

    w = ag.Tensor([1.0, 2.0], requires_grad=True)
    x = w
    x *= 3.0  # a tensor requiring grad in grad mode: out of place, recorded
    assert x is not w and not x.is_leaf
    np.testing.assert_array_equal(w.data, [1.0, 2.0])
    x.sum().backward()
    np.testing.assert_array_equal(w.grad.data, [3.0, 3.0])

    with ag.no_grad():
        v = w
        v -= 0.5  # under no_grad: in place on the leaf itself (an optimizer step)
    assert v is w
    np.testing.assert_array_equal(w.data, [0.5, 1.5])


def test_detach_shares_data_and_is_cut_from_the_graph():
    x = ag.Tensor([1.0, 2.0], requires_grad=True, name="x")
    y = x * 2.0
    d = y.detach()
    assert d.is_leaf and not d.requires_grad and d.grad_fn is None
    assert np.shares_memory(d.data, y.data)
    (d * x).sum().backward()  # d is a constant: dx = d only
    np.testing.assert_array_equal(x.grad.data, [2.0, 4.0])


def test_every_slot_of_a_made_or_recorded_tensor_is_set():
    """fill() and the written-out copies of it in record() and _make() set the same slots,
    all of them."""
    from autograd_core.tensor import Tensor as T, _make, fill

    x = ag.Tensor(np.ones(3), requires_grad=True)
    with ag.no_grad():
        plain = x * 2.0
    made_plain = _make(np.ones(2))
    for t in (x, plain, x * 2.0, x * x, ag.tanh(x), x.sum(), made_plain):
        for name in T.__slots__:
            if name != "__weakref__":
                getattr(t, name)  # an unset slot raises AttributeError
    made = x * x
    assert (made.requires_grad, made.grad, made.name, made._hooks,
            made._epoch, made._version) == (True, None, None, None, None, 0)
    assert made._inputs == (x, x) and made._seq > x._seq
    filled = fill(object.__new__(T), made_plain._data)
    for name in T.__slots__:
        if name != "__weakref__":
            assert getattr(made_plain, name) is getattr(filled, name), name


def test_retain_grad_and_hooks_share_one_slot_and_keep_their_meaning():
    """retain_grad() and register_hook live in one hooks.Hooks object: either alone, both, and a
    hook removed again (an empty list that still retains, or retains nothing)."""
    x = ag.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    cases = {"retain": (True, False), "hook": (False, True), "both": (True, True),
             "removed": (False, "removed"), "retain, hook removed": (True, "removed")}
    for label, (retain, hook) in cases.items():
        h = x * 3.0
        seen = []
        if retain:
            h.retain_grad()
        if hook:
            handle = h.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 2.0)
            if hook == "removed":
                handle.remove()
        x.grad = None
        (h * h).sum().backward()
        factor = 2.0 if hook is True else 1.0
        np.testing.assert_allclose(x.grad.numpy(), factor * 3.0 * 2 * h.numpy(), err_msg=label)
        assert (h.grad is not None) == retain, label
        if retain:  # .grad is what its hook made of it (as PyTorch: retain runs last)
            np.testing.assert_allclose(h.grad.numpy(), factor * 2 * h.numpy(), err_msg=label)
        assert len(seen) == (1 if hook is True else 0), label
