"""Review 29: ag.mean_softmax_cross_entropy (the mean over the rows of softmax cross-entropy
in one node) and nn.cross_entropy's use of it, the one-pass class range check, the freed-graph
record kept in a deque, and the benchmark harness's handling of the garbage collector.

What is checked:
- losses and gradients against ag.softmax_cross_entropy(x, t).mean(axis=-1) bit for bit
  (dtype, shape and bytes) in eager mode: float16/32/64 logits with normal, huge (+-1e4) and
  NaN/inf values, integer logits (int16/int32/int64: exp's float dtype), every integer
  target dtype (native and byte-swapped), targets 0 and classes-1, one row, one class, leading
  axes (T, N, C) and (2, 3, N, C), non-contiguous logits and targets, hooks on the loss that
  scale or change the gradient's dtype, random upstream gradients;
- losses and gradients against torch.nn.functional.cross_entropy (tolerances; float16 against
  torch in float32) and against central finite differences in float64; gradcheck,
  gradgradcheck and anomaly mode with a NaN logit; uint8 / wide int8 logits (the shift by
  the row maximum must not wrap around in the logits' dtype);
- bad targets (negative, too large, huge uint64, int8 -128, float, bool, object, wrong shape,
  0-d) and bad logits (1-D, 0-d, no rows, no classes): the error type, a message naming
  mean_softmax_cross_entropy (or cross_entropy through nn.cross_entropy), nothing recorded
  (nn.cross_entropy also checks float, bool and weighted targets and an empty batch's mean
  before it records anything);
  an empty leading axis (0, N, C) works;
- targets given as a list, a tuple, an ag.Tensor or a read-only broadcast array; the target
  array (or the target tensor's data) changed in place after the forward leaves the gradient
  alone; the logits changed in place (add_ under no_grad, data assignment, on a leaf and on
  an inner node) make backward raise naming the op;
- the freed-graph message (backward number and node count) after a second backward, with two
  threads running backwards on separate graphs at the same time, and after 64 later
  backwards; retain_graph=True twice;
- create_graph=True: first derivatives, Hessian-vector products against finite differences and
  torch, the derivative with respect to the upstream gradient;
- ag.replay of an MLP step and of a 6-step loss loop (targets fixed, passed as arguments,
  changed in place between calls, shared logits, leading axes) against eager mode (1e-12,
  float64; batch=False bit for bit, float16/32/64); a target tensor argument changed in place
  between calls; a bad target on a replayed call (its error names
  mean_softmax_cross_entropy, as the eager call's does);
- to_dot (ops, notes and rolled views), trace_backward and graph_stats of a graph with the op;
- nn.cross_entropy with reduction "sum"/"none", weight=, axis=0, probability targets, 3-D and
  1-D logits: the old graphs and torch's values;
- benchmarks._common.time_phases: every implementation is measured, the collector is off
  during the untimed runs only and is on again after an exception; `python -m benchmarks
  --only mlp --quick` prints a row for every implementation.
"""
import gc
import os
import re
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core import function
from autograd_core.replay_plan import Plan

torch = pytest.importorskip("torch")
F = torch.nn.functional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64,
                 np.int64]
FLOATS = [np.float16, np.float32, np.float64]


# ---- helpers -------------------------------------------------------------------------------
def one_node(x0, t, g=None):
    """(loss array, gradient array or None) of ag.mean_softmax_cross_entropy."""
    x = ag.Tensor(x0.copy(), requires_grad=x0.dtype.kind == "f")
    loss = ag.mean_softmax_cross_entropy(x, t)
    if not x.requires_grad:
        return loss.data, None
    loss.backward(None if g is None else ag.Tensor(g))
    return loss.data, x.grad.data


def two_nodes(x0, t, g=None):
    """The same through softmax_cross_entropy followed by mean over the rows."""
    x = ag.Tensor(x0.copy(), requires_grad=x0.dtype.kind == "f")
    loss = ag.softmax_cross_entropy(x, t).mean(axis=-1)
    if not x.requires_grad:
        return loss.data, None
    loss.backward(None if g is None else ag.Tensor(g))
    return loss.data, x.grad.data


def assert_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), (a, b)


def targets(rng, shape, classes, dtype):
    """Random classes, with 0 and classes - 1 both present where there is room."""
    t = rng.integers(0, classes, size=shape)
    flat = t.reshape(-1)
    if flat.size:
        flat[0] = classes - 1
    if flat.size > 1:
        flat[-1] = 0
    return t.astype(dtype)


def torch_mean_ce(x0, t, g=None):
    """(loss, gradient) of torch's per-row cross-entropy, meaned over the rows axis."""
    shape = x0.shape
    x = torch.tensor(x0, requires_grad=True)
    per = F.cross_entropy(x.reshape(-1, shape[-1]), torch.tensor(t.reshape(-1).astype(np.int64)),
                          reduction="none").reshape(shape[:-1])
    loss = per.mean(-1)
    loss.backward(torch.ones_like(loss) if g is None else torch.tensor(g))
    return loss.detach().numpy(), x.grad.numpy()


def clock_now():
    return next(function.clock)


def assert_records_nothing(fn, error, match):
    """fn raises `error` matching `match`, and no graph node was made meanwhile."""
    before = clock_now()
    with pytest.raises(error, match=match):
        fn()
    assert clock_now() == before + 1, "a node was recorded before the error"


def special_logits(rng, shape, dtype):
    x = rng.standard_normal(shape)
    flat = x.reshape(-1)
    k = max(1, flat.size // 4)
    flat[rng.integers(0, flat.size, k)] = rng.choice([np.nan, np.inf, -np.inf, 1e4, -1e4], k)
    return x.astype(dtype)


SHAPES = [(1, 3), (5, 4), (1, 1), (6, 1), (11, 7), (3, 5, 4), (2, 3, 6, 5), (3, 1, 2)]


# ---- bits against the two-node composition ------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("values", ["normal", "huge", "special"])
def test_loss_and_gradient_bits_equal_softmax_cross_entropy_then_mean(dtype, shape, values):
    rng = np.random.default_rng(hash((np.dtype(dtype).str, shape, values)) % 2 ** 32)
    if values == "special":
        x0 = special_logits(rng, shape, dtype)
    else:
        x0 = (rng.standard_normal(shape) * (1e4 if values == "huge" else 3)).astype(dtype)
    with np.errstate(all="ignore"):
        for tdt in TARGET_DTYPES:
            t = targets(rng, shape[:-1], shape[-1], tdt)
            for g in (None, (rng.standard_normal(shape[:-2]) * 3).astype(dtype)):
                if g is None and len(shape) > 2:
                    g = np.ones(shape[:-2], dtype)
                got, want = one_node(x0, t, g), two_nodes(x0, t, g)
                assert_bits(got[0], want[0])
                assert_bits(got[1], want[1])
                assert got[0].shape == shape[:-2]
                assert got[1].dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64])
@pytest.mark.parametrize("shape", [(4, 3), (1, 5), (2, 3, 4)])
def test_integer_logits_give_the_two_node_bits_and_torchs_values(dtype, shape):
    rng = np.random.default_rng(7)
    x0 = rng.integers(-60, 60, shape).astype(dtype)
    x0.reshape(-1)[0] = 60
    t = targets(rng, shape[:-1], shape[-1], np.int64)
    got, want = one_node(x0, t), two_nodes(x0, t)
    # exp makes a float of numpy's choice: float32 for int16, float64 for int32 / int64
    assert got[0].dtype == np.exp(x0).dtype
    assert_bits(got[0], want[0])
    ref = torch_mean_ce(x0.astype(np.float64), t)[0]
    tol = 1e-6 if got[0].dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got[0], ref, rtol=tol, atol=tol)
    if len(shape) == 2:  # nn.cross_entropy takes the one node: the same value
        assert_bits(nn.cross_entropy(ag.Tensor(x0), t).data, want[0])


@pytest.mark.parametrize("x0", [np.array([[3, 50, 7], [0, 1, 2]], np.uint8),
                                np.array([[-100, 100, 7], [0, 1, 2]], np.int8)])
def test_narrow_integer_logits_do_not_wrap_when_shifted(x0):
    t = np.array([0, 2])
    with np.errstate(all="ignore"):
        loss = ag.mean_softmax_cross_entropy(ag.Tensor(x0), t).data
    want = torch_mean_ce(x0.astype(np.float64), t)[0]
    np.testing.assert_allclose(loss.astype(np.float64), want, rtol=1e-3)


def test_non_contiguous_logits_and_byte_swapped_or_strided_targets_give_the_same_bits():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((10, 12))
    layouts = [np.asfortranarray(big[:, :5]), big[::2, ::3], big.T[:, :4], big[:, ::-1][:6]]
    for x0 in layouts:
        n, c = x0.shape
        base = rng.integers(0, c, 2 * n)
        for t in (base[::2], base[:n].astype(">i8"), base[:n].astype(">u2"),
                  base[:n].astype("<i4")[::-1]):
            for fn in (one_node, two_nodes):
                x = ag.Tensor(x0, requires_grad=True)  # the layout itself, no copy
                loss = (ag.mean_softmax_cross_entropy(x, t) if fn is one_node
                        else ag.softmax_cross_entropy(x, t).mean(axis=-1))
                loss.backward()
                if fn is one_node:
                    got = loss.data, x.grad.data
                else:
                    assert_bits(got[0], loss.data)
                    assert_bits(got[1], x.grad.data)


@pytest.mark.parametrize("hook", [
    lambda g: g * 0.1,
    lambda g: ag.Tensor((g.data * 3).astype(np.float32)),
    lambda g: ag.Tensor(np.asarray(g.data, dtype=">f8")),
])
@pytest.mark.parametrize("shape", [(5, 3), (2, 7, 3)])
def test_a_hook_on_the_loss_gives_the_two_node_bits(hook, shape):
    rng = np.random.default_rng(11)
    x0 = rng.standard_normal(shape)
    t = rng.integers(0, 3, shape[:-1])
    g = np.full(shape[:-2], 1.7)
    out = []
    for two in (False, True):
        x = ag.Tensor(x0, requires_grad=True)
        loss = (ag.softmax_cross_entropy(x, t).mean(axis=-1) if two
                else ag.mean_softmax_cross_entropy(x, t))
        loss.register_hook(hook)
        loss.backward(ag.Tensor(g))
        out.append(x.grad.data)
    assert_bits(out[0], out[1])


# ---- torch and finite differences ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 3), (6, 4), (6, 1), (3, 5, 4), (2, 3, 4, 5)])
@pytest.mark.parametrize("values", ["normal", "huge", "special"])
def test_against_torch(dtype, shape, values):
    rng = np.random.default_rng(5)
    if values == "special":
        x0 = special_logits(rng, shape, dtype)
    else:
        x0 = (rng.standard_normal(shape) * (1e4 if values == "huge" else 2)).astype(dtype)
    t = targets(rng, shape[:-1], shape[-1], np.int64)
    g = (rng.standard_normal(shape[:-2]) + 2).astype(dtype)
    with np.errstate(all="ignore"):
        loss, grad = one_node(x0, t, g)
    want_loss, want_grad = torch_mean_ce(x0, t, g)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    scale = max(1.0, float(np.nanmax(np.abs(np.where(np.isfinite(want_loss), want_loss, 0)))))
    np.testing.assert_allclose(loss, want_loss, rtol=tol, atol=tol * scale, equal_nan=True)
    np.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("shape", [(4, 3), (3, 5, 4), (1, 6)])
def test_float16_against_torch_in_float32(shape):
    rng = np.random.default_rng(9)
    x0 = (rng.standard_normal(shape) * 4).astype(np.float16)
    x0.reshape(-1)[0] = 1e4
    x0.reshape(-1)[-1] = -1e4
    t = targets(rng, shape[:-1], shape[-1], np.uint8)
    g = np.ones(shape[:-2], np.float16)
    loss, grad = one_node(x0, t, g)
    assert loss.dtype == grad.dtype == np.float16
    want_loss, want_grad = torch_mean_ce(x0.astype(np.float32), t, g.astype(np.float32))
    np.testing.assert_allclose(loss.astype(np.float32), want_loss, rtol=2e-3, atol=2e-3 *
                               max(1.0, float(np.max(np.abs(want_loss)))))
    np.testing.assert_allclose(grad.astype(np.float32), want_grad, rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize("shape", [(1, 4), (5, 3), (4, 1), (3, 4, 3), (2, 2, 3, 4)])
def test_gradient_against_central_differences(shape):
    rng = np.random.default_rng(13)
    x0 = rng.standard_normal(shape) * 2
    t = targets(rng, shape[:-1], shape[-1], np.int32)
    g = rng.standard_normal(shape[:-2])
    _, grad = one_node(x0, t, g)

    def f(x):
        return float(np.sum(ag.mean_softmax_cross_entropy(ag.Tensor(x), t).data * g))

    eps = 1e-6
    fd = np.zeros_like(x0)
    for i in np.ndindex(shape):
        e = np.zeros_like(x0)
        e[i] = eps
        fd[i] = (f(x0 + e) - f(x0 - e)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_gradcheck_gradgradcheck_and_anomaly_mode():
    rng = np.random.default_rng(14)
    x = ag.Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    t = rng.integers(0, 4, (2, 3))
    assert ag.gradcheck(lambda a: ag.mean_softmax_cross_entropy(a, t), (x,))
    assert ag.gradgradcheck(lambda a: ag.mean_softmax_cross_entropy(a, t), (x,))
    x0 = rng.standard_normal((3, 4))
    x0[1, 2] = np.nan
    x = ag.Tensor(x0, requires_grad=True)
    with pytest.raises(ag.AnomalyError, match="backward of mean_softmax_cross_entropy produced "
                                              "nan"):
        with ag.detect_anomaly(), np.errstate(all="ignore"):
            nn.cross_entropy(x, [0, 1, 2]).backward()


# ---- targets: dtypes, bad values, errors, nothing recorded --------------------------------
@pytest.mark.parametrize("tdt", TARGET_DTYPES)
def test_every_target_dtype_takes_zero_and_the_last_class(tdt):
    rng = np.random.default_rng(17)
    x0 = rng.standard_normal((4, 5))
    t = np.array([0, 4, 4, 0], dtype=tdt)
    want = one_node(x0, np.array([0, 4, 4, 0]))
    got = one_node(x0, t)
    assert_bits(got[0], want[0])
    assert_bits(got[1], want[1])
    assert_bits(nn.cross_entropy(ag.Tensor(x0), t).data, want[0])


BAD_CLASSES = [
    (np.int64, -1), (np.int64, 5), (np.int8, -128), (np.int8, -1), (np.int16, 5),
    (np.int32, -2 ** 31), (np.int64, -2 ** 63), (np.uint8, 255), (np.uint8, 5),
    (np.uint32, 2 ** 32 - 1), (np.uint64, 2 ** 64 - 1), (np.uint64, 2 ** 63), (">i8", -1),
    (">u4", 5),
]


@pytest.mark.parametrize("tdt, bad", BAD_CLASSES)
def test_a_class_out_of_range_raises_naming_the_op_and_records_nothing(tdt, bad):
    x = ag.Tensor(np.zeros((4, 5)), requires_grad=True)
    t = np.array([0, 1, 2, 3], dtype=tdt)
    t[2] = bad
    assert_records_nothing(lambda: ag.mean_softmax_cross_entropy(x, t), IndexError,
                           r"^mean_softmax_cross_entropy: target class out of range \[0, 5\)")
    assert_records_nothing(lambda: nn.cross_entropy(x, t), IndexError,
                           r"^cross_entropy: target class out of range \[0, 5\)")
    assert_records_nothing(lambda: ag.softmax_cross_entropy(x, t), IndexError,
                           r"^softmax_cross_entropy: target class out of range \[0, 5\)")
    x3 = ag.Tensor(np.zeros((2, 4, 5)), requires_grad=True)
    assert_records_nothing(lambda: ag.mean_softmax_cross_entropy(x3, np.stack([t, t[::-1]])),
                           IndexError, "^mean_softmax_cross_entropy: target class out of range")


def test_int8_targets_with_more_classes_than_int8_holds():
    rng = np.random.default_rng(19)
    x0 = rng.standard_normal((3, 200))
    t = np.array([127, 0, 5], np.int8)
    assert_bits(one_node(x0, t)[1], one_node(x0, t.astype(np.int64))[1])
    x = ag.Tensor(x0, requires_grad=True)
    assert_records_nothing(lambda: ag.mean_softmax_cross_entropy(x, np.array([1, -1, 2], np.int8)),
                           IndexError, "^mean_softmax_cross_entropy: target class out of range")


@pytest.mark.parametrize("target, error, op_match, nn_match", [
    (np.array([0.0, 1.0, 1.0, 2.0]), TypeError, "integer classes, got dtype float64",
     "probability targets must have the logits' shape"),
    (np.array([True, False, True, True]), TypeError, "got dtype bool", "got dtype bool"),
    (np.array([0, 1, 2, 0], dtype=object), TypeError, "got dtype object", "got dtype object"),
    (np.array(1), ValueError, r"target shape \(\)", r"target shape \(\)"),
    (np.array([0, 1, 2]), ValueError, r"target shape \(3,\)", r"target shape \(3,\)"),
    (np.zeros((4, 1), int), ValueError, r"target shape \(4, 1\)", r"target shape \(4, 1\)"),
    (ag.Tensor(np.array([0.0, 1.0, 2.0, 2.0])), TypeError, "got dtype float64",
     "probability targets"),
])
def test_bad_targets_raise_a_named_error(target, error, op_match, nn_match):
    x = ag.Tensor(np.zeros((4, 3)), requires_grad=True)
    assert_records_nothing(lambda: ag.mean_softmax_cross_entropy(x, target), error,
                           "^mean_softmax_cross_entropy: .*" + op_match)
    # through nn.cross_entropy the error names cross_entropy (float targets are probability
    # targets there: their shape is refused)
    with pytest.raises((ValueError, TypeError), match="^cross_entropy: .*" + nn_match):
        nn.cross_entropy(x, target)


@pytest.mark.parametrize("shape, error, match", [
    ((3,), ValueError, "logits need a row and a class axis"),
    ((0, 3), ValueError, "no rows to average"),
    ((2, 0, 3), ValueError, "no rows to average"),
    ((4, 0), IndexError, r"out of range \[0, 0\)"),
])
def test_logits_without_rows_or_classes_raise(shape, error, match):
    x = ag.Tensor(np.zeros(shape), requires_grad=True)
    t = np.zeros(shape[:-1], np.int64)
    assert_records_nothing(lambda: ag.mean_softmax_cross_entropy(x, t), error,
                           "^mean_softmax_cross_entropy: .*" + match)


def test_zero_d_logits_raise():
    with pytest.raises(ValueError, match="^mean_softmax_cross_entropy: "):
        ag.mean_softmax_cross_entropy(ag.Tensor(np.float64(1.0), requires_grad=True),
                                      np.array(0))


def test_an_empty_leading_axis_gives_an_empty_loss_and_gradient():
    x = ag.Tensor(np.zeros((0, 4, 3)), requires_grad=True)
    loss = ag.mean_softmax_cross_entropy(x, np.zeros((0, 4), np.uint8))
    assert loss.shape == (0,) and loss.dtype == np.float64
    loss.sum().backward()
    assert x.grad.shape == (0, 4, 3)


def test_nn_cross_entropy_on_an_empty_batch_still_refuses_the_mean():
    for shape in ((0, 3), (2, 0, 3)):
        assert_records_nothing(
            lambda: nn.cross_entropy(ag.Tensor(np.zeros(shape), requires_grad=True),
                                     np.zeros(shape[:-1], np.int64)),
            ValueError, r"^cross_entropy: the mean over an empty batch is undefined")


@pytest.mark.parametrize("target, kwargs, error, match", [
    (np.array([0.5, 1.0, 0.0]), {}, ValueError, "probability targets must have the logits'"),
    (np.array([True, False, True]), {}, TypeError, "class targets must be integers"),
    (np.array([0, 1, 5]), {"weight": np.ones(4)}, IndexError, r"target class out of range"),
    (np.array([0, 1]), {"axis": 0}, ValueError, r"target shape \(2,\) does not match"),
    (np.array([[0.25] * 4] * 2), {}, ValueError, "probability targets must have the logits'"),
])
def test_nn_cross_entropy_checks_every_target_before_recording(target, kwargs, error, match):
    x = ag.Tensor(np.random.default_rng(5).standard_normal((3, 4)), requires_grad=True)
    assert_records_nothing(lambda: nn.cross_entropy(x, target, **kwargs), error,
                           f"^cross_entropy: {match}" if match[0] != "^" else match)


@pytest.mark.parametrize("make", [list, tuple, ag.Tensor, lambda t: t.astype(np.uint64)])
def test_targets_as_a_list_tuple_or_tensor_give_the_same_bits(make):
    rng = np.random.default_rng(23)
    x0 = rng.standard_normal((2, 4, 3))
    t = rng.integers(0, 3, (2, 4))
    want = one_node(x0, t, np.ones(2))
    given = make(t.tolist()) if make in (list, tuple) else make(t)
    got = one_node(x0, given, np.ones(2))
    assert_bits(got[0], want[0])
    assert_bits(got[1], want[1])
    if make in (list, tuple):
        given = make(t[0].tolist())
    elif make is ag.Tensor:
        given = ag.Tensor(t[0])
    else:
        given = t[0].astype(np.uint64)
    x = ag.Tensor(x0[0], requires_grad=True)
    loss = nn.cross_entropy(x, given)
    assert loss._op.name == "mean_softmax_cross_entropy"
    loss.backward()
    assert_bits(x.grad.data, one_node(x0[0], t[0])[1])


def test_a_broadcast_read_only_target():
    rng = np.random.default_rng(24)
    x0 = rng.standard_normal((4, 3))
    t = np.broadcast_to(np.array(2, np.int16), (4,))
    want = one_node(x0, np.full(4, 2))
    got = one_node(x0, t)
    assert_bits(got[0], want[0])
    assert_bits(got[1], want[1])
    x = ag.Tensor(x0, requires_grad=True)
    assert_records_nothing(
        lambda: ag.mean_softmax_cross_entropy(x, np.broadcast_to(np.array(3, np.int16), (4,))),
        IndexError, "^mean_softmax_cross_entropy: target class out of range")


# ---- in-place changes between forward and backward ----------------------------------------
@pytest.mark.parametrize("through", ["op", "nn"])
@pytest.mark.parametrize("change", ["array", "tensor data", "tensor assigned", "tensor fill_"])
def test_changing_the_target_after_the_forward_changes_nothing(through, change):
    rng = np.random.default_rng(29)
    x0 = rng.standard_normal((5, 4))
    t0 = np.array([3, 0, 1, 2, 3])
    want = one_node(x0, t0)
    t = t0.copy()
    given = t if change == "array" else ag.Tensor(t)
    x = ag.Tensor(x0, requires_grad=True)
    loss = (ag.mean_softmax_cross_entropy(x, given) if through == "op"
            else nn.cross_entropy(x, given))
    assert loss._op.name == "mean_softmax_cross_entropy"
    if change == "array":
        t[:] = 0
    elif change == "tensor data":
        given.data[:] = 1
    elif change == "tensor assigned":
        given.data = np.zeros(5, np.int64)
    else:
        given.fill_(2)
    loss.backward()
    assert_bits(loss.data, want[0])
    assert_bits(x.grad.data, want[1])


@pytest.mark.parametrize("change", ["add_", "data assigned", "setitem", "copy_"])
def test_changing_the_leaf_logits_in_place_makes_backward_raise(change):
    x0 = np.random.default_rng(31).standard_normal((4, 3))
    x = ag.Tensor(x0.copy(), requires_grad=True)
    loss = nn.cross_entropy(x, [0, 1, 2, 0])
    if change == "data assigned":
        x.data = x0 + 1.0
    else:
        with ag.no_grad():
            if change == "add_":
                x.add_(1.0)
            elif change == "setitem":
                x[0, 0] = 5.0
            else:
                x.copy_(np.zeros((4, 3)))
    with pytest.raises(RuntimeError, match="mean_softmax_cross_entropy was modified in place"):
        loss.backward()
    assert x.grad is None


def test_changing_inner_logits_in_place_makes_backward_raise():
    w = ag.Tensor(np.ones((4, 3)), requires_grad=True)
    h = w * 2.0
    loss = ag.mean_softmax_cross_entropy(h, np.array([0, 1, 2, 0]))
    with pytest.raises(RuntimeError, match="in-place change of a tensor recorded in the graph"):
        h.add_(1.0)
    with ag.no_grad():
        h.mul_(3.0)
    with pytest.raises(RuntimeError, match="mean_softmax_cross_entropy was modified in place"):
        loss.backward()


def test_writing_into_the_logits_array_behind_the_engines_back_keeps_the_forwards_gradient():
    # not detectable (no version change): the rule reads the probabilities the forward kept,
    # as softmax_cross_entropy then mean does
    x0 = np.random.default_rng(37).standard_normal((4, 3))
    want = two_nodes(x0, np.array([0, 1, 2, 0]))
    x = ag.Tensor(x0.copy(), requires_grad=True)
    loss = ag.mean_softmax_cross_entropy(x, np.array([0, 1, 2, 0]))
    x.data[...] = 100.0
    loss.backward()
    assert_bits(x.grad.data, want[1])


# ---- freed graphs, threads, retain_graph --------------------------------------------------
FREED = re.compile(r"already freed by backward #(\d+), which released (\d+) nodes")


def second_backward_message(loss):
    with pytest.raises(RuntimeError) as info:
        loss.backward()
    return str(info.value)


def test_a_second_backward_names_the_first_backward_and_its_node_count():
    w = ag.Tensor(np.ones((3, 4)), requires_grad=True)
    x = ag.Tensor(np.ones((2, 3)))
    loss = nn.cross_entropy(x @ w, [0, 3])
    loss.backward()
    message = second_backward_message(loss)
    assert "made by mean_softmax_cross_entropy" in message
    m = FREED.search(message)
    assert m and int(m.group(1)) == loss._epoch and int(m.group(2)) == 2
    deeper = ag.tanh(nn.cross_entropy(ag.tanh(x @ w), [1, 2]))
    deeper.backward()
    m = FREED.search(second_backward_message(deeper))
    assert m and int(m.group(1)) == deeper._epoch and int(m.group(2)) == 4


def test_the_message_forgets_a_backward_64_backwards_ago_but_names_the_latest():
    w = ag.Tensor(np.ones((3, 4)), requires_grad=True)
    x = ag.Tensor(np.ones((2, 3)))
    old = nn.cross_entropy(x @ w, [0, 3])
    old.backward()
    for _ in range(64):
        nn.cross_entropy(x @ w, [1, 2]).backward()
    assert "an earlier backward" in second_backward_message(old)
    new = nn.cross_entropy(x @ w, [1, 2])
    new.backward()
    m = FREED.search(second_backward_message(new))
    assert m and int(m.group(1)) == new._epoch and int(m.group(2)) == 2


def test_two_threads_running_backwards_at_once_keep_their_gradients_and_messages():
    rounds = 120
    errors = []
    barrier = threading.Barrier(2)

    def worker(seed, depth):
        try:
            rng = np.random.default_rng(seed)
            w0 = rng.standard_normal((3, 4))
            x = ag.Tensor(rng.standard_normal((5, 3)))
            t = rng.integers(0, 4, 5)

            def loss_of(w):
                z = x @ w
                for _ in range(depth):
                    z = ag.tanh(z)
                return nn.cross_entropy(z, t)

            ref_w = ag.Tensor(w0, requires_grad=True)
            loss_of(ref_w).backward()
            want = ref_w.grad.data.copy()
            for _ in range(rounds):
                # in step, so that fewer than 64 backwards (the ones the message remembers)
                # run between a thread's two backwards; within a round both run at once
                barrier.wait(30)
                w = ag.Tensor(w0, requires_grad=True)
                loss = loss_of(w)
                loss.backward()
                if w.grad.data.tobytes() != want.tobytes():
                    errors.append(f"thread {seed}: gradient differs")
                try:
                    loss.backward()
                    errors.append(f"thread {seed}: a second backward ran")
                except RuntimeError as e:
                    m = FREED.search(str(e))
                    if not m or int(m.group(1)) != loss._epoch or int(m.group(2)) != depth + 2:
                        errors.append(f"thread {seed}: message {e}")
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(f"thread {seed}: {e!r}")
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(1, 0)),
               threading.Thread(target=worker, args=(2, 3))]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:5]


def test_retain_graph_twice_then_free():
    rng = np.random.default_rng(41)
    x0 = rng.standard_normal((6, 4))
    t = rng.integers(0, 4, 6)
    _, g = one_node(x0, t)
    x = ag.Tensor(x0, requires_grad=True)
    loss = nn.cross_entropy(x, t)
    loss.backward(retain_graph=True)
    assert_bits(x.grad.data, g)
    loss.backward(retain_graph=True)
    assert_bits(x.grad.data, g + g)
    loss.backward()
    assert_bits(x.grad.data, (g + g) + g)
    m = FREED.search(second_backward_message(loss))
    assert m and int(m.group(1)) == loss._epoch and int(m.group(2)) == 1


# ---- create_graph -------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (1, 5), (5, 1), (2, 3, 4), (2, 2, 3, 4)])
def test_second_derivatives_against_finite_differences_and_torch(shape):
    rng = np.random.default_rng(43)
    x0 = rng.standard_normal(shape)
    t = targets(rng, shape[:-1], shape[-1], np.uint16)
    v = rng.standard_normal(shape)
    gout = rng.standard_normal(shape[:-2])

    def eager_grad(x):
        return one_node(x, t, gout)[1]

    x = ag.Tensor(x0, requires_grad=True)
    loss = ag.mean_softmax_cross_entropy(x, t)
    (g,) = ag.grad(loss, [x], grad_outputs=[ag.Tensor(gout)], create_graph=True)
    np.testing.assert_allclose(g.data, eager_grad(x0), rtol=1e-14, atol=1e-15)
    (g * ag.Tensor(v)).sum().backward()
    hv = x.grad.data
    eps = 1e-6
    fd = (eager_grad(x0 + eps * v) - eager_grad(x0 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv, fd, rtol=1e-5, atol=1e-8)
    xt = torch.tensor(x0, requires_grad=True)
    lt = F.cross_entropy(xt.reshape(-1, shape[-1]), torch.tensor(t.reshape(-1).astype(np.int64)),
                         reduction="none").reshape(shape[:-1]).mean(-1)
    (gt,) = torch.autograd.grad(lt, xt, torch.tensor(gout), create_graph=True)
    (gt * torch.tensor(v)).sum().backward()
    np.testing.assert_allclose(hv, xt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_create_graph_derivative_with_respect_to_the_upstream_gradient():
    rng = np.random.default_rng(47)
    x0 = rng.standard_normal((3, 4, 5))
    t = rng.integers(0, 5, (3, 4))
    v = rng.standard_normal(x0.shape)
    go = ag.Tensor(rng.standard_normal(3), requires_grad=True)
    x = ag.Tensor(x0, requires_grad=True)
    (g,) = ag.grad(ag.mean_softmax_cross_entropy(x, t), [x], grad_outputs=[go],
                   create_graph=True)
    (g * ag.Tensor(v)).sum().backward()
    e = np.exp(x0 - x0.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    onehot = np.eye(5)[t]
    want = ((p - onehot) * v).sum(axis=(1, 2)) / 4
    np.testing.assert_allclose(go.grad.data, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("dtype", FLOATS)
def test_create_graph_through_nn_matches_the_two_node_composition(dtype):
    rng = np.random.default_rng(53)
    x0 = rng.standard_normal((6, 4)).astype(dtype)
    t = rng.integers(0, 4, 6).astype(np.uint8)
    v = rng.standard_normal((6, 4)).astype(dtype)
    out = []
    for two in (False, True):
        x = ag.Tensor(x0, requires_grad=True)
        loss = ag.softmax_cross_entropy(x, t).mean() if two else nn.cross_entropy(x, t)
        (g,) = ag.grad(loss, [x], create_graph=True)
        (g * ag.Tensor(v)).sum().backward()
        out.append((g.data, x.grad.data))
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-14}[dtype]
    for a, b in zip(out[0], out[1]):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol,
                                   atol=tol)


# ---- replay -------------------------------------------------------------------------------
def run_call(fn, params, args):
    for p in params:
        p.grad = None
    out = fn(*args)
    value = out.data.copy()
    out.backward()
    return value, [p.grad.data.copy() for p in params]


def assert_close_1e12(got, want):
    (v, gs), (wv, ws) = got, want
    np.testing.assert_allclose(v, wv, rtol=1e-12, atol=1e-12 * max(1.0, np.max(np.abs(wv))))
    scale = max([1.0] + [float(np.max(np.abs(w))) for w in ws])
    for g, w in zip(gs, ws):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * scale)


def assert_same_bits(got, want):
    assert_bits(got[0], want[0])
    for g, w in zip(got[1], want[1]):
        assert_bits(g, w)


def program_ops(step):
    plan = next(iter(step.plans.values()))
    assert isinstance(plan, Plan), plan
    return [entry[0]._op.name for entry in plan.program]


@pytest.mark.parametrize("batch, dtype", [(True, np.float64), (False, np.float64),
                                          (False, np.float32), (False, np.float16)])
def test_replay_of_an_mlp_step_gives_eager_gradients(batch, dtype):
    rng = np.random.default_rng(59)
    model = nn.MLP([6, 8, 5], activation="tanh", rng=rng, dtype=dtype)
    params = list(model.parameters())

    def step_fn(x, y):
        return nn.cross_entropy(model(x), y)

    step = ag.replay(step_fn, batch=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)
        for k in range(5):
            x = ag.Tensor(rng.standard_normal((7, 6)).astype(dtype))
            y = rng.integers(0, 5, 7).astype(np.uint8)
            if k == 3:
                y[:] = 4  # the last class everywhere
            got = run_call(step, params, (x, y))
            want = run_call(step_fn, params, (x, y))
            (assert_close_1e12 if batch else assert_same_bits)(got, want)
    ops = program_ops(step)
    assert ops.count("mean_softmax_cross_entropy") == 1 and "mean" not in ops


def test_replay_with_the_target_tensor_argument_changed_in_place_between_calls():
    rng = np.random.default_rng(60)
    w = ag.Tensor(rng.standard_normal((3, 4)), requires_grad=True)

    def fn(x, y):
        return nn.cross_entropy(ag.tanh(x @ w), y)

    step = ag.replay(fn)
    x = ag.Tensor(rng.standard_normal((5, 3)))
    y = ag.Tensor(rng.integers(0, 4, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)
        for _ in range(5):
            y.data[...] = rng.integers(0, 4, 5)  # the same tensor, other classes
            assert_close_1e12(run_call(step, [w], (x, y)), run_call(fn, [w], (x, y)))


T_STEPS, B, D, C = 6, 4, 5, 3


def loop_params(rng):
    return [ag.Tensor(rng.standard_normal((D, C)), requires_grad=True),
            ag.Tensor(rng.standard_normal(C), requires_grad=True),
            ag.Tensor(rng.standard_normal((C, C)) * 0.5, requires_grad=True)]


def per_step_loss(params, xs, ys):
    w, b, u = params
    loss, h = 0.0, None
    for t in range(T_STEPS):
        z = xs[t] @ w + b
        h = ag.tanh(z if h is None else z + h @ u)
        loss = loss + nn.cross_entropy(h, ys[t])
    return loss


def test_replay_of_a_per_step_loss_loop_with_fixed_targets_batches_and_gives_eager_gradients():
    rng = np.random.default_rng(61)
    params = loop_params(rng)
    xs = ag.Tensor(rng.standard_normal((T_STEPS, B, D)))
    ys = rng.integers(0, C, (T_STEPS, B))
    ys[0] = C - 1
    fn = lambda: per_step_loss(params, xs, ys)  # noqa: E731
    step = ag.replay(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)
        for _ in range(5):
            assert_close_1e12(run_call(step, params, ()), run_call(fn, params, ()))
    ops = program_ops(step)
    assert 1 <= ops.count("mean_softmax_cross_entropy") <= 2  # the steps' losses as one call
    assert "mean" not in ops and "softmax_cross_entropy" not in ops


def test_replay_of_a_per_step_loss_loop_with_targets_as_arguments():
    rng = np.random.default_rng(67)
    params = loop_params(rng)
    xs = ag.Tensor(rng.standard_normal((T_STEPS, B, D)))
    fn = lambda ys: per_step_loss(params, xs, ys)  # noqa: E731
    step = ag.replay(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ag.ReplayWarning)
        for k in range(6):
            ys = rng.integers(0, C, (T_STEPS, B)).astype(np.int32)
            assert_close_1e12(run_call(step, params, (ys,)), run_call(fn, params, (ys,)))
        bad = rng.integers(0, C, (T_STEPS, B)).astype(np.int32)
        bad[4, 2] = C
        with pytest.raises(IndexError, match="target class out of range"):
            step(bad)
        bad[4, 2] = -1
        with pytest.raises(IndexError, match="target class out of range"):
            step(bad)
        ys = rng.integers(0, C, (T_STEPS, B)).astype(np.int32)
        assert_close_1e12(run_call(step, params, (ys,)), run_call(fn, params, (ys,)))


def test_replay_sees_targets_changed_in_place_between_calls():
    rng = np.random.default_rng(71)
    params = loop_params(rng)
    xs = ag.Tensor(rng.standard_normal((T_STEPS, B, D)))
    ys = rng.integers(0, C, (T_STEPS, B))
    fn = lambda: per_step_loss(params, xs, ys)  # noqa: E731
    step = ag.replay(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ag.ReplayWarning)  # "recording again" is expected
        for k in range(6):
            ys[...] = rng.integers(0, C, (T_STEPS, B))
            assert_close_1e12(run_call(step, params, ()), run_call(fn, params, ()))


def test_replay_with_leading_axes_and_with_shared_logits():
    rng = np.random.default_rng(73)
    w = ag.Tensor(rng.standard_normal((D, C)), requires_grad=True)
    xs = ag.Tensor(rng.standard_normal((T_STEPS, B, D)))
    ys = [rng.integers(0, C, (T_STEPS, B)) for _ in range(3)]

    def leading(y):
        return ag.mean_softmax_cross_entropy(ag.tanh(xs @ w), y).sum()

    def shared():
        z = ag.tanh(xs[0] @ w)
        return sum((ag.mean_softmax_cross_entropy(z, y[0]) for y in ys), ag.Tensor(0.0))

    for fn, args in ((leading, (ys[0],)), (shared, ())):
        step = ag.replay(fn)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ag.ReplayWarning)
            for k in range(4):
                a = (ys[k % 3],) if args else ()
                assert_close_1e12(run_call(step, [w], a), run_call(fn, [w], a))


def test_a_bad_target_on_a_replayed_call_names_mean_softmax_cross_entropy():
    w = ag.Tensor(np.ones((3, 4)), requires_grad=True)
    x = ag.Tensor(np.ones((2, 3)))
    step = ag.replay(lambda x, y: ag.mean_softmax_cross_entropy(x @ w, y))
    for _ in range(3):
        step(x, np.array([0, 3])).backward()
    with pytest.raises(IndexError, match="^mean_softmax_cross_entropy: target class out of"):
        step(x, np.array([0, 4]))


# ---- drawing and inspection ---------------------------------------------------------------
def test_to_dot_trace_and_stats_of_a_graph_with_the_op():
    rng = np.random.default_rng(79)
    w = ag.Tensor(rng.standard_normal((5, 3)), requires_grad=True, name="W")
    x = ag.Tensor(rng.standard_normal((4, 5)), name="x")
    t = np.array([0, 2, 1, 2])
    loss = nn.cross_entropy(x @ w, t)
    loss.name = "L"
    src = ag.to_dot(loss, show_grad=True).source
    ops = re.findall(r"label=([a-z_]+) fontsize", src)
    assert sorted(ops) == ["matmul", "mean_softmax_cross_entropy"]
    assert "L\\n() float64\\n|grad| 1" in src
    for view in ("notes", "rolled"):
        assert ag.to_dot(loss, view=view).source.startswith("digraph")
    stats = ag.graph_stats(loss)
    assert stats.nodes == 2
    assert set(stats.by_op) == {"mean_softmax_cross_entropy", "matmul"}
    assert stats.by_op["mean_softmax_cross_entropy"]["nodes"] == 1
    trace = ag.trace_backward(nn.cross_entropy(x @ w, t), params={"W": w})
    assert trace.rows[0]["op"] == "mean_softmax_cross_entropy"
    assert trace.rows[0]["rule"] == "(softmax(x) - onehot(target)) g / N"
    want = one_node((x.data @ w.data), t)[1]
    np.testing.assert_allclose(trace.gradients["W"], x.data.T @ want, rtol=1e-13, atol=1e-15)
    loss.backward()  # the drawing did not free or change the graph
    np.testing.assert_allclose(w.grad.data, x.data.T @ want, rtol=1e-13, atol=1e-15)


# ---- nn.cross_entropy's other forms keep their graphs and values --------------------------
def graph_ops(root):
    """The names of the ops of the graph behind `root`, one per node."""
    return [t._op.name for t in ag.walk_graph(root) if t._op is not None]


def torch_loss_and_grad(x0, fn):
    xt = torch.tensor(x0, requires_grad=True)
    loss = fn(xt)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def ours_loss_and_grad(x0, fn):
    x = ag.Tensor(x0, requires_grad=True)
    loss = fn(x)
    ops = graph_ops(loss)
    loss.sum().backward()
    return loss.data, x.grad.data, ops


def check_against_torch(x0, ours, theirs):
    loss, grad, ops = ours_loss_and_grad(x0, ours)
    want_loss, want_grad = torch_loss_and_grad(x0, theirs)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-13)
    return ops, loss, grad


def test_nn_cross_entropy_mean_of_a_batch_is_the_one_node():
    rng = np.random.default_rng(83)
    x0 = rng.standard_normal((6, 4))
    t = rng.integers(0, 4, 6)
    ops, loss, grad = check_against_torch(x0, lambda x: nn.cross_entropy(x, t),
                                          lambda x: F.cross_entropy(x, torch.tensor(t)))
    assert ops == ["mean_softmax_cross_entropy"]
    want = two_nodes(x0, t)
    assert_bits(loss, ag.softmax_cross_entropy(ag.Tensor(x0), t).mean().data)
    assert_bits(grad, want[1])


def test_nn_cross_entropy_sum_none_weight_axis0_and_probabilities_keep_their_graphs():
    rng = np.random.default_rng(89)
    x0 = rng.standard_normal((6, 4))
    t = rng.integers(0, 4, 6)
    tt = torch.tensor(t)
    ops, loss, _ = check_against_torch(
        x0, lambda x: nn.cross_entropy(x, t, reduction="sum"),
        lambda x: F.cross_entropy(x, tt, reduction="sum"))
    assert ops == ["sum", "softmax_cross_entropy"]
    assert_bits(loss, ag.softmax_cross_entropy(ag.Tensor(x0), t).sum().data)
    ops, loss, _ = check_against_torch(
        x0, lambda x: nn.cross_entropy(x, t, reduction="none"),
        lambda x: F.cross_entropy(x, tt, reduction="none"))
    assert ops == ["softmax_cross_entropy"]
    wt = rng.uniform(0.5, 2.0, 4)
    ops, _, _ = check_against_torch(
        x0, lambda x: nn.cross_entropy(x, t, weight=wt),
        lambda x: F.cross_entropy(x, tt, weight=torch.tensor(wt)))
    assert "log_softmax" in ops and "mean_softmax_cross_entropy" not in ops
    ops, _, _ = check_against_torch(
        x0.T.copy(), lambda x: nn.cross_entropy(x, t, axis=0),
        lambda x: F.cross_entropy(x.T, tt))
    assert "log_softmax" in ops and "mean_softmax_cross_entropy" not in ops
    probs = rng.dirichlet(np.ones(4), 6)
    ops, _, _ = check_against_torch(
        x0, lambda x: nn.cross_entropy(x, probs),
        lambda x: F.cross_entropy(x, torch.tensor(probs)))
    assert "log_softmax" in ops and "mean_softmax_cross_entropy" not in ops


def test_nn_cross_entropy_mean_of_3d_and_1d_logits_keeps_the_old_graph():
    rng = np.random.default_rng(97)
    x0 = rng.standard_normal((3, 5, 4))
    t = rng.integers(0, 4, (3, 5))
    ops, loss, _ = check_against_torch(
        x0, lambda x: nn.cross_entropy(x, t),
        lambda x: F.cross_entropy(x.reshape(-1, 4), torch.tensor(t.reshape(-1))))
    assert ops == ["mean", "softmax_cross_entropy"]
    assert_bits(loss, ag.softmax_cross_entropy(ag.Tensor(x0), t).mean().data)
    x1 = rng.standard_normal(4)
    ops, _, _ = check_against_torch(
        x1, lambda x: nn.cross_entropy(x, np.array(2)),
        lambda x: F.cross_entropy(x[None], torch.tensor([2])))
    assert ops == ["mean", "softmax_cross_entropy"]


# ---- the benchmark harness ----------------------------------------------------------------
@pytest.fixture
def harness(monkeypatch):
    from benchmarks import _common
    monkeypatch.setattr(_common, "repeats_for", lambda quick: (1, 2))
    was = gc.isenabled()
    yield _common
    (gc.enable if was else gc.disable)()


def counting_cases(log, names=("a", "b", "c"), fail=None):
    def case(name):
        def setup():
            log.append((name, "setup", gc.isenabled()))
            if fail == (name, "setup", len([e for e in log if e[:2] == (name, "setup")])):
                raise KeyError("setup failed")
            return {"name": name}

        def phase(k):
            def fn(state):
                log.append((state["name"], f"phase{k}", gc.isenabled()))
                calls = len([e for e in log if e[:2] == (name, f"phase{k}")])
                if fail == (name, f"phase{k}", calls):
                    raise KeyError("phase failed")
            return fn
        return setup, (phase(0), phase(1))
    return {n: case(n) for n in names}


def test_time_phases_measures_every_implementation(harness):
    gc.enable()
    log = []
    result = harness.time_phases(counting_cases(log))
    assert set(result) == {"a", "b", "c"}
    for name, (per_phase, total) in result.items():
        assert len(per_phase) == 2 and all(p >= 0 for p in per_phase) and total >= 0
        setups = [e for e in log if e[:2] == (name, "setup")]
        assert len(setups) == 2 * (1 + 2)  # an untimed and a timed run per repeat
        # the collector is off in the untimed run, on in the timed one
        assert [e[2] for e in setups] == [False, True] * 3
        for k in (0, 1):
            phases = [e[2] for e in log if e[:2] == (name, f"phase{k}")]
            assert phases == [False, True] * 3
    assert gc.isenabled()


@pytest.mark.parametrize("fail", [("b", "setup", 1), ("b", "phase1", 1), ("a", "phase0", 2),
                                  ("c", "setup", 4)])
def test_an_exception_in_a_run_leaves_the_collector_enabled(harness, fail):
    gc.enable()
    with pytest.raises(KeyError):
        harness.time_phases(counting_cases([], fail=fail))
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled(harness):
    gc.disable()
    log = []
    harness.time_phases(counting_cases(log, names=("a",)))
    assert not gc.isenabled()
    assert not any(e[2] for e in log)
    with pytest.raises(KeyError):
        harness.time_phases(counting_cases([], names=("a",), fail=("a", "phase0", 1)))
    assert not gc.isenabled()


def test_the_mlp_benchmark_prints_a_row_for_every_implementation():
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "mlp", "--quick"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {}
    for line in out.stdout.splitlines():
        m = re.match(r"^(.+?)\s{2,}ms\s+(.*)$", line)
        if m:
            rows[m.group(1).strip()] = m.group(2).split()
    for name in ("autograd_core", "autograd_core replay", "lean eager engine (reference)",
                 "torch eager (CPU)", "numpy by hand (floor)"):
        assert name in rows, (name, out.stdout)
        step = float(rows[name][-2])
        assert step > 0
