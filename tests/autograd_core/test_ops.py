"""Every registered op's derivative rule against central finite differences in float64.

The table (test_ops_table*.py) maps every name in `ag.ops_registry` to cases; for each case
and each drawn example: the forward equals numpy's, the case's ops are recorded, gradcheck and
gradgradcheck pass in float64, and float32 inputs give float32 outputs and gradients.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd_core as ag
from tests.autograd_core import test_ops_table, test_ops_table_shapes

CASES = test_ops_table.CASES + test_ops_table_shapes.CASES


# ---- helpers for the tests --------------------------------------------------------------------
def as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def recorded_ops(outputs):
    """Names of the ops recorded in the graph behind `outputs`."""
    names, stack, seen = set(), list(outputs), set()
    while stack:
        t = stack.pop()
        if id(t) in seen or t._op is None:
            continue
        seen.add(id(t))
        names.add(t._op.name)
        stack.extend(t._inputs)
    return names


def run(ex, dtype):
    """Forward and backward of `ex` on leaves of `dtype`; loss = sum of all outputs."""
    leaves = [ag.Tensor(a.astype(dtype), requires_grad=True) for a in ex.arrays]
    outs = as_tuple(ex.fn(*leaves))
    loss = outs[0].sum()
    for o in outs[1:]:
        loss = loss + o.sum()
    loss.backward()
    return leaves, outs


# ---- the tests --------------------------------------------------------------------------------
def test_table_covers_every_registered_op():
    covered = {op for c in CASES for op in c.ops}
    assert covered >= set(ag.ops_registry), f"ops without a case: " \
        f"{sorted(set(ag.ops_registry) - covered)}"
    assert covered <= set(ag.ops_registry), f"cases name unknown ops: " \
        f"{sorted(covered - set(ag.ops_registry))}"


@pytest.mark.parametrize("case", CASES, ids=repr)
@given(data=st.data())
def test_forward_matches_numpy_and_records_the_op(case, data):
    ex = data.draw(case.strategy, label="example")
    leaves = [ag.Tensor(a, requires_grad=True) for a in ex.arrays]
    outs = as_tuple(ex.fn(*leaves))
    refs = as_tuple(ex.ref(*ex.arrays))
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        r = np.asarray(r)
        assert isinstance(o, ag.Tensor)
        assert o.shape == r.shape
        assert o.dtype == r.dtype == np.float64
        np.testing.assert_allclose(o.numpy(), r, rtol=1e-10, atol=1e-12)
    assert set(case.ops) <= recorded_ops(outs)


@pytest.mark.parametrize("case", CASES, ids=repr)
@given(data=st.data())
def test_gradcheck_and_gradgradcheck(case, data):
    ex = data.draw(case.strategy, label="example")
    assert ag.gradcheck(ex.fn, ex.arrays)
    assert ag.gradgradcheck(ex.fn, ex.arrays)


@pytest.mark.parametrize("case", CASES, ids=repr)
@given(data=st.data())
def test_float32_in_float32_out_and_grad(case, data):
    ex = data.draw(case.strategy, label="example")
    leaves, outs = run(ex, np.float32)
    for o in outs:
        assert o.dtype == (ex.out_dtype or np.float32)
    ref_leaves, ref_outs = run(ex, np.float64)
    for o, r in zip(outs, ref_outs):
        np.testing.assert_allclose(o.numpy(), r.numpy(), rtol=1e-5, atol=1e-5)
    for x, r in zip(leaves, ref_leaves):
        assert x.grad is not None and x.grad.dtype == np.float32 and x.grad.shape == x.shape
        np.testing.assert_allclose(x.grad.numpy(), r.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape, count, axis", [((1, 32), 2000, 0), ((3,), 5, 0), ((0, 3), 4, 0),
                                                ((2, 3), 3, 1), ((2, 3), 3, 2), ((), 4, 0),
                                                ((4, 5), 1, 0)])
def test_stack_arrays_is_np_stack_to_the_bit(shape, count, axis):
    """Along the first axis stack_arrays is one concatenate and a reshape; the values,
    dtype and shape are np.stack's (mixed dtypes promote as np.stack does)."""
    from autograd_core.ops.joining import stack_arrays

    rng = np.random.default_rng(count)
    arrays = [rng.standard_normal(shape).astype(np.float32 if k % 2 else np.float64)
              for k in range(count)]
    got, want = stack_arrays(arrays, axis), np.stack(arrays, axis=axis)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("shape", [(5, 1, 4), (3, 2), (4,), (1, 3), (2, 0)])
def test_stack_backward_rows_of_a_broadcast_gradient(shape):
    """A sum's gradient reaches a stack as a broadcast (stride 0); the stack hands each input
    a row of one dense copy, with the values of indexing the broadcast row by row."""
    from autograd_core.backmath import ArrayMath
    from autograd_core.ops.joining import Stack

    rng = np.random.default_rng(0)
    xs = [ag.Tensor(rng.standard_normal(shape[1:]), requires_grad=True)
          for _ in range(shape[0])]
    out = ag.stack(xs)
    g = np.broadcast_to(rng.standard_normal(shape[:1] + (1,) * (len(shape) - 1)), shape)
    rows = Stack.backward(g, out, ArrayMath)
    assert len(rows) == shape[0]
    for k, row in enumerate(rows):
        assert np.array_equal(row, g[k])
        if np.ndim(row):
            assert all(s for n, s in zip(row.shape, row.strides) if n > 1)  # no stride 0
    # the same through the sweep: each input's gradient is its row of the broadcast
    (out * 1.0).sum().backward()
    for x in xs:
        assert np.array_equal(x.grad.numpy(), np.ones(shape[1:]))


def test_stack_backward_keeps_a_dense_gradient_uncopied():
    from autograd_core.ops.joining import dense

    g = np.arange(12.0).reshape(3, 4)
    assert dense(g) is g
    assert dense(np.broadcast_to(g[:1], (3, 4))).flags.c_contiguous
    one = np.broadcast_to(np.ones((1, 4)), (1, 4))  # stride 0 only along a length-1 axis
    assert dense(one) is one


@pytest.mark.parametrize("gshape, shape", [((5, 3), (3,)), ((4, 2, 3), (2, 3)), ((6,), ()),
                                           ((3, 1), (1,)), ((0, 3), (3,)), ((2, 3), (1, 3))])
def test_sum_array_to_gives_the_keepdims_sum_to_the_bit(gshape, shape):
    """The rows of a bias's gradient summed as g.sum(axis=0): the bits and the array type of
    the general sum over the broadcast axes."""
    from autograd_core.ops.shape import sum_array_to

    g = np.random.default_rng(0).standard_normal(gshape).astype(np.float32)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and gshape[lead + i] != 1)
    want = g.sum(axis=axes, keepdims=True).reshape(shape)
    got = sum_array_to(g, shape)
    assert type(got) is np.ndarray and got.shape == shape and got.dtype == g.dtype
    assert got.tobytes() == want.tobytes()
