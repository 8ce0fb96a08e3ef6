"""Review 28: hostile tests of the cheaper loss path (commit "The loss's path made cheaper").

What is attacked, each against the parent commit's code (copied below as the reference) or torch:
- cross_entropy._check_classes: the one-pass unsigned view of signed targets must reject exactly
  what the two reductions reject, for every integer dtype (native and byte-swapped, signed and
  unsigned, 0-d, strided), at the class counts where the one pass stops applying
  (2**(bits-1) and one past it) and beyond;
- the errors of nn.cross_entropy and ag.softmax_cross_entropy for bad targets (negative, too
  large, huge, int8 with many classes, uint, bool, float, object, wrong shapes, empty batches),
  type and message, raised before anything is recorded;
- softmax_cross_entropy_arrays' 2-D path: the bits of the loss and of the probabilities for
  float16/32/64 and integer logits, C- and F-ordered and strided logits, inf / NaN / all -inf
  rows, 1-D and 3-D logits (the old path);
- the eager losses and gradients of nn.cross_entropy / sum / mean / max / min / logsumexp with
  the old _spread, Mean.backward and softmax_cross_entropy_arrays patched back in: the same bits,
  with hooks on the loss (that change g's value or dtype), retain_graph, anomaly mode, and a
  byte-swapped gradient; create_graph (double backward) against torch;
- Mean.backward's scale: g * exact[g.dtype][1/count] against g * (1/count) over many counts,
  dtypes and special values of g (subnormals, inf, NaN, -0.0);
- ag.replay of a loop over time steps whose targets change every call (int8 with 128 classes,
  uint8, a bad target on a replayed call, then good ones again): eager mode's values;
- _record_constants: the saved target is still a copy (changing the caller's array later
  changes nothing); linear with non-tensor arguments; Tensor.shape/ndim/size/dtype (values,
  docs, the error of a tensor without data, subclasses, pickling and copying).
"""
import copy
import pickle
import warnings

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.backmath import ArrayMath
from autograd_core.exact_scalars import exact
from autograd_core.ops import cross_entropy, reductions
from autograd_core.ops._checks import kept_shape


# ---- the parent commit's code, the reference -----------------------------------------------
def old_check_classes(target, classes, op="softmax_cross_entropy"):
    if target.size and (np.minimum.reduce(target, axis=None) < 0
                        or np.maximum.reduce(target, axis=None) >= classes):
        raise IndexError(f"{op}: target class out of range [0, {classes})")


def old_softmax_cross_entropy_arrays(x, target):
    if x.dtype.kind in "biu":  # (review 29's fix: x - max wrapped around in a narrow dtype)
        x = x.astype(np.result_type(x.dtype, np.float16))
    shifted = x - np.maximum.reduce(x, axis=-1, keepdims=True)
    flat = shifted.reshape(-1, x.shape[-1])
    picked = flat[np.arange(flat.shape[0]), target.reshape(-1)]
    if shifted.dtype.kind != "f":
        e = np.exp(shifted)
        total = np.add.reduce(e, axis=-1, keepdims=True)
        return (np.log(total) - picked.reshape(total.shape))[..., 0], e / total
    e = np.exp(shifted, out=shifted)
    total = np.add.reduce(e, axis=-1, keepdims=True)
    return (np.log(total) - picked.reshape(total.shape))[..., 0], np.divide(e, total, out=e)


def old_spread(g, x, axes, xp):
    return xp.broadcast_to(g.reshape(kept_shape(x.shape, axes)), x.shape)


def old_mean_backward(g, out, xp):
    x = out._inputs[0]
    count = x._data.size // out._data.size
    return (reductions._spread(g * (1.0 / count), x, out._saved, xp),)


@pytest.fixture
def parent_code(monkeypatch):
    """A context in which the reductions run the parent commit's code."""
    class Patch:
        def __enter__(self):
            self.mp = pytest.MonkeyPatch()
            self.mp.setattr(reductions, "_spread", old_spread)
            self.mp.setattr(cross_entropy, "_check_classes", old_check_classes)
            self.mp.setattr(cross_entropy, "softmax_cross_entropy_arrays",
                            old_softmax_cross_entropy_arrays)
            self.mp.setattr(reductions.Mean, "backward", staticmethod(old_mean_backward))
            return self

        def __exit__(self, *exc):
            self.mp.undo()
    return Patch()


def bits(a):
    a = np.asarray(a)
    return a.dtype.str, a.shape, np.ascontiguousarray(a).tobytes()


def rejects(check, target, classes):
    try:
        check(target, classes)
    except IndexError as e:
        assert str(e) == f"softmax_cross_entropy: target class out of range [0, {classes})"
        return True
    return False


# ---- _check_classes ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", ">i2",
                                   ">i4", ">i8", ">u4", "q", "l", "p", "h", "b", "B"])
def test_class_check_rejects_exactly_what_the_two_reductions_reject(dtype):
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    values = {v for v in (0, 1, 2, -1, -2, 127, 128, 129, 255, 256, 32767, 32768, 65535,
                          2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63 - 1, info.min, info.min + 1,
                          info.max, info.max - 1) if info.min <= v <= info.max}
    half = 2 ** (8 * dtype.itemsize - 1)
    for classes in sorted({0, 1, 2, 6, 127, 128, 129, 255, 256, 257, 32768, 32769, 2 ** 31,
                           2 ** 31 + 1, 2 ** 32, 2 ** 63, 2 ** 64, half - 1, half, half + 1}):
        for v in sorted(values):
            for target in (np.array([v], dtype), np.array(v, dtype),
                           np.array([[0, v], [v, 0]], dtype)[:, ::-1],
                           np.array([0, 9, v, 9], dtype)[::2]):
                want = rejects(old_check_classes, target, classes)
                assert want == (v < 0 or v >= classes)  # the reference itself
                assert rejects(cross_entropy._check_classes, target, classes) == want, (
                    dtype, classes, v, target.shape)
        for empty in (np.zeros((0,), dtype), np.zeros((3, 0), dtype)):
            cross_entropy._check_classes(empty, classes)  # nothing to check


def test_class_check_on_every_int8_value_and_class_count():
    target = np.arange(-128, 128, dtype=np.int8)
    for classes in range(0, 260):
        for v in target:
            t = np.array([0, v, 0], np.int8)
            assert rejects(cross_entropy._check_classes, t, classes) == (v < 0 or v >= classes)
        assert rejects(cross_entropy._check_classes, target, classes)  # holds negatives


# ---- errors ------------------------------------------------------------------------------
ERRORS = {
    "negative": (np.array([0, -1, 1]), IndexError,
                 "cross_entropy: target class out of range [0, 4) (min -1, max 1)",
                 "softmax_cross_entropy: target class out of range [0, 4)"),
    "too large": (np.array([0, 4, 1]), IndexError,
                  "cross_entropy: target class out of range [0, 4) (min 0, max 4)",
                  "softmax_cross_entropy: target class out of range [0, 4)"),
    "huge": (np.array([0, 2 ** 62, 1]), IndexError,
             "cross_entropy: target class out of range [0, 4) (min 0, max 4611686018427387904)",
             "softmax_cross_entropy: target class out of range [0, 4)"),
    "int8 -128": (np.array([0, -128, 1], np.int8), IndexError,
                  "cross_entropy: target class out of range [0, 4) (min -128, max 1)",
                  "softmax_cross_entropy: target class out of range [0, 4)"),
    "int16 min": (np.array([0, -32768, 1], np.int16), IndexError,
                  "cross_entropy: target class out of range [0, 4) (min -32768, max 1)",
                  "softmax_cross_entropy: target class out of range [0, 4)"),
    "uint8 255": (np.array([0, 255, 1], np.uint8), IndexError,
                  "cross_entropy: target class out of range [0, 4) (min 0, max 255)",
                  "softmax_cross_entropy: target class out of range [0, 4)"),
    "uint64 max": (np.array([0, 2 ** 64 - 1, 1], np.uint64), IndexError,
                   "cross_entropy: target class out of range [0, 4) "
                   "(min 0, max 18446744073709551615)",
                   "softmax_cross_entropy: target class out of range [0, 4)"),
    "big-endian -1": (np.array([0, -1, 3], ">i4"), IndexError,
                      "cross_entropy: target class out of range [0, 4) (min -1, max 3)",
                      "softmax_cross_entropy: target class out of range [0, 4)"),
    "big-endian 4": (np.array([0, 1, 4], ">i8"), IndexError,
                     "cross_entropy: target class out of range [0, 4) (min 0, max 4)",
                     "softmax_cross_entropy: target class out of range [0, 4)"),
    "strided": (np.array([0, 9, -1, 9, 2, 9])[::2], IndexError,
                "cross_entropy: target class out of range [0, 4) (min -1, max 2)",
                "softmax_cross_entropy: target class out of range [0, 4)"),
    "list": ([0, 5, 1], IndexError,
             "cross_entropy: target class out of range [0, 4) (min 0, max 5)",
             "softmax_cross_entropy: target class out of range [0, 4)"),
    "bool": (np.array([True, False, True]), TypeError,
             "cross_entropy: class targets must be integers, got dtype bool",
             "softmax_cross_entropy: target must hold integer classes, got dtype bool"),
    "object": (np.array([0, 2 ** 70, 1], dtype=object), TypeError,
               "cross_entropy: class targets must be integers, got dtype object",
               "softmax_cross_entropy: target must hold integer classes, got dtype object"),
    "wrong shape": (np.array([0, 1]), ValueError,
                    "cross_entropy: target shape (2,) does not match input shape (3, 4) "
                    "without its class axis 1 ((3,))",
                    "softmax_cross_entropy: target shape (2,) must be the logits' shape "
                    "(3, 4) without its last axis"),
    "0-d": (np.array(1), ValueError,
            "cross_entropy: target shape () does not match input shape (3, 4) without its "
            "class axis 1 ((3,))",
            "softmax_cross_entropy: target shape () must be the logits' shape (3, 4) "
            "without its last axis"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bad_targets_raise_the_parents_errors(case, reduction):
    target, kind, nn_message, ag_message = ERRORS[case]
    logits = ag.Tensor(np.zeros((3, 4), np.float32), requires_grad=True)
    with pytest.raises(kind) as info:
        nn.cross_entropy(logits, target, reduction=reduction)
    assert str(info.value) == nn_message
    with pytest.raises(kind) as info:
        ag.softmax_cross_entropy(logits, target)
    assert str(info.value) == ag_message
    assert logits.grad is None


def test_float_targets_are_probabilities_for_nn_and_refused_by_ag():
    logits = ag.Tensor(np.zeros((3, 4), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=r"^cross_entropy: probability targets must have the "
                                         r"logits' shape \(3, 4\), got \(3,\)$"):
        nn.cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match=r"^softmax_cross_entropy: target must hold integer "
                                        r"classes, got dtype float64$"):
        ag.softmax_cross_entropy(logits, np.array([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("classes", [127, 128, 129, 200, 256, 300])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
def test_small_integer_targets_with_many_classes(classes, dtype):
    info = np.iinfo(dtype)
    for vals in ([0, 1, 2, 3], [0, -1, 2, 3], [0, 127, 2, 3], [0, -128, 2, 3],
                 [0, 126, 1, 1], [0, 255, 1, 1], [0, 199, 1, 1]):
        if not all(info.min <= v <= info.max for v in vals):
            continue
        target = np.array(vals, dtype)
        bad = any(v < 0 or v >= classes for v in vals)
        logits = ag.Tensor(np.linspace(-1, 1, 4 * classes).reshape(4, classes),
                           requires_grad=True)
        if bad:
            with pytest.raises(IndexError, match=rf"^cross_entropy: target class out of range "
                                                 rf"\[0, {classes}\) \(min {min(vals)}, "
                                                 rf"max {max(vals)}\)$"):
                nn.cross_entropy(logits, target)
            with pytest.raises(IndexError, match=rf"^softmax_cross_entropy: target class out "
                                                 rf"of range \[0, {classes}\)$"):
                ag.softmax_cross_entropy(logits, target)
        else:
            loss = nn.cross_entropy(logits, target)
            loss.backward()
            want = old_softmax_cross_entropy_arrays(logits.numpy(), target.astype(np.int64))
            assert loss.item() == want[0].mean()


@pytest.mark.parametrize("shape", [(0, 4), (0, 3, 4), (3, 0, 4)])
def test_empty_batches(shape):
    x = ag.Tensor(np.zeros(shape), requires_grad=True)
    target = np.zeros(shape[:-1], np.int64)
    with pytest.raises(ValueError, match="^cross_entropy: the mean over an empty batch is "
                                         "undefined"):  # (checked first since review 29)
        nn.cross_entropy(x, target)
    loss = nn.cross_entropy(x, target, reduction="sum")
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.shape == shape and x.grad.dtype == np.float64
    assert nn.cross_entropy(x, target, reduction="none").shape == shape[:-1]


def test_no_classes():
    x = ag.Tensor(np.zeros((2, 0)), requires_grad=True)
    with pytest.raises(IndexError, match=r"^softmax_cross_entropy: target class out of "
                                         r"range \[0, 0\)$"):
        ag.softmax_cross_entropy(x, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="zero-size array to reduction operation maximum"):
        ag.softmax_cross_entropy(ag.Tensor(np.zeros((0, 0))), np.zeros(0, np.int64))


# ---- softmax_cross_entropy_arrays ----------------------------------------------------------
def logits_variants(dtype, shape, rng):
    base = (rng.standard_normal(shape) * 4).astype(dtype)
    yield "c", base
    yield "F", np.asfortranarray(base)
    yield "strided", np.repeat(base, 2, axis=-1)[..., ::2]
    yield "rows strided", np.repeat(base, 2, axis=0)[::2] if base.ndim > 1 else base[::-1]
    if base.size:
        inf = base.copy()
        inf.flat[0] = np.inf
        yield "inf", inf
        nan = base.copy()
        nan.flat[-1] = np.nan
        yield "nan", nan
    yield "all -inf", np.full(shape, -np.inf, dtype)
    with np.errstate(over="ignore"):
        yield "big", (base * 1000).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (7, 5), (1, 1), (1, 5), (6, 1), (2, 3, 5), (0, 5)])
def test_cross_entropy_arrays_have_the_parents_bits(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    target = rng.integers(0, shape[-1], shape[:-1])
    for name, x in logits_variants(dtype, shape, rng):
        with np.errstate(all="ignore"):
            want_loss, want_probs = old_softmax_cross_entropy_arrays(x, target)
            got_loss, got_probs = cross_entropy.softmax_cross_entropy_arrays(x, target)
        assert bits(got_loss) == bits(want_loss), name
        assert bits(got_probs) == bits(want_probs), name
        assert got_probs.flags.c_contiguous == want_probs.flags.c_contiguous, name


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)])
def test_integer_logits_have_the_parents_bits(dtype, shape):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 100, shape).astype(dtype)
    target = rng.integers(0, shape[-1], shape[:-1])
    with np.errstate(all="ignore"):  # uint8 logits wrap around when shifted
        for got, want in zip(cross_entropy.softmax_cross_entropy_arrays(x, target),
                             old_softmax_cross_entropy_arrays(x, target)):
            assert bits(got) == bits(want)
        assert bits(ag.softmax_cross_entropy(ag.Tensor(x), target).numpy()) == bits(
            old_softmax_cross_entropy_arrays(x, target)[0])


def test_cross_entropy_arrays_raise_what_the_parent_raised_under_errstate():
    x = np.array([[0.0, 1e308, -1e308], [np.inf, 0.0, 1.0]])
    target = np.array([2, 1])
    with np.errstate(all="raise"):
        with pytest.raises(FloatingPointError) as want:
            old_softmax_cross_entropy_arrays(x, target)
        with pytest.raises(FloatingPointError) as got:
            cross_entropy.softmax_cross_entropy_arrays(x, target)
    assert str(got.value) == str(want.value)


# ---- eager losses and gradients: the parent's bits ---------------------------------------
def run_losses(make, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    x0 = (rng.standard_normal(shape) * 3).astype(dtype)
    target = rng.integers(0, shape[-1], shape[:-1]) if shape else None
    x = ag.Tensor(x0.copy(), requires_grad=True)
    seen = []
    loss = make(x, target, seen)
    return bits(loss.numpy()), bits(x.grad.numpy()), seen


def _hooked(loss, seen, hook):
    loss.register_hook(hook)
    loss.backward()
    return loss


LOSSES = {
    "ce mean": lambda x, t, s: _go(nn.cross_entropy(x * 1.5, t)),
    "ce sum": lambda x, t, s: _go(nn.cross_entropy(x * 1.5, t, reduction="sum")),
    "ce none": lambda x, t, s: _go(nn.cross_entropy(x, t, reduction="none"),
                                   gradient=np.linspace(-1, 2, t.size).reshape(t.shape)),
    "ag ce mean": lambda x, t, s: _go(ag.softmax_cross_entropy(x, t).mean()),
    "sum": lambda x, t, s: _go((x * 1.5).sum()),
    "mean": lambda x, t, s: _go((x * 1.5).mean()),
    "mean keepdims": lambda x, t, s: _go((x * 1.5).mean(keepdims=True)),
    "mean all axes": lambda x, t, s: _go(x.mean(axis=tuple(range(x.ndim)))),
    "max": lambda x, t, s: _go(x.max()),
    "min": lambda x, t, s: _go(x.min()),
    "logsumexp": lambda x, t, s: _go(ag.logsumexp(x)),
    "row sum": lambda x, t, s: _go(x[..., :1].sum(axis=0),
                                   gradient=np.full(x[..., :1].shape[1:], 0.75, x.dtype)),
    "hook changes value": lambda x, t, s: _hooked(nn.cross_entropy(x, t), s,
                                                  lambda g: g * 7.0),
    "hook to float16": lambda x, t, s: _hooked(x.mean(), s,
                                               lambda g: ag.Tensor(np.array(3.0, np.float16))),
    "hook to int": lambda x, t, s: _hooked(x.mean(), s,
                                           lambda g: ag.Tensor(np.array(3, np.int64))),
    "hook sees g": lambda x, t, s: _hooked(x.mean(), s,
                                           lambda g: s.append(bits(g.numpy()))),
    "retain graph": lambda x, t, s: _go_thrice((x * x).mean()),
    "anomaly": lambda x, t, s: _anomaly(lambda: nn.cross_entropy(x * 2.0, t)),
    "big-endian gradient": lambda x, t, s: _go(
        (x * 1.0).mean(), gradient=ag.Tensor(np.array(3.0, ">f8"))),
    "nan gradient": lambda x, t, s: _go(x.mean(), gradient=np.array(np.nan, x.dtype)),
    "-0.0 gradient": lambda x, t, s: _go(x.sum(), gradient=np.array(-0.0, x.dtype)),
}


def _go(loss, gradient=None):
    loss.backward(gradient=gradient)
    return loss


def _go_thrice(loss):
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    return loss


def _anomaly(make):
    with ag.detect_anomaly():
        loss = make()
        loss.backward()
    return loss


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5), (1, 1), (3,), (2, 3, 4)])
def test_eager_losses_and_gradients_have_the_parents_bits(name, dtype, shape, parent_code):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with parent_code:
            want = run_losses(LOSSES[name], dtype, shape, seed=len(name))
        got = run_losses(LOSSES[name], dtype, shape, seed=len(name))
    assert got == want


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.longdouble])
def test_a_means_scale_is_g_times_one_over_count(dtype):
    rng = np.random.default_rng(0)
    fi = np.finfo(dtype)
    g = np.concatenate([
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, fi.tiny, fi.eps, fi.max,
                  -fi.max, fi.smallest_subnormal, -fi.smallest_subnormal], dtype),
        (rng.standard_normal(500) * 10.0 ** rng.integers(-8, 8, 500)).astype(dtype)])
    if dtype == np.float16:
        g = np.concatenate([g, np.arange(2 ** 16, dtype=np.uint16).view(np.float16)])
    counts = (list(range(1, 1200)) + [2 ** k for k in range(11, 70)]
              + [3 * 2 ** k for k in range(10, 40)] + [10 ** k for k in range(4, 19)])
    with np.errstate(all="ignore"):
        for c in counts:
            got, want = g * exact[g.dtype][1.0 / c], g * (1.0 / c)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want, strict=True)
            if dtype != np.longdouble:
                assert got.tobytes() == want.tobytes(), c
            g0 = g[5:6].reshape(())
            assert type(g0 * exact[g.dtype][1.0 / c]) is type(g0 * (1.0 / c))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((6,), None), ((3, 4), None), ((3, 4), 1),
                                         ((2, 1, 3), (0, 2)), ((1,), 0), ((), None)])
def test_reduction_rules_match_the_parents_rules(dtype, shape, axis, parent_code):
    rng = np.random.default_rng(1)
    x = ag.Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)
    for reduce in (ag.sum, ag.mean, ag.max, ag.min, ag.logsumexp):
        out = reduce(x, axis=axis)
        for g in (np.ones(out.shape, dtype), np.full(out.shape, -2.5, dtype)):
            got = out._op.backward(g, out, ArrayMath)[0]
            with parent_code:
                want = out._op.backward(g, out, ArrayMath)[0]
            assert bits(got) == bits(want), reduce.__name__


# ---- create_graph, against torch ----------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_double_backward_of_cross_entropy_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x0, t0 = rng.standard_normal((5, 6)), rng.integers(0, 6, 5)
    x = ag.Tensor(x0, requires_grad=True)
    loss = nn.cross_entropy(ag.tanh(x), t0, reduction=reduction)
    (g,) = ag.grad(loss, [x], create_graph=True)
    (g * g).sum().backward()
    tx = torch.tensor(x0, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(torch.tanh(tx), torch.tensor(t0), reduction=reduction)
    (tg,) = torch.autograd.grad(tl, [tx], create_graph=True)
    (tg * tg).sum().backward()
    assert loss.item() == pytest.approx(tl.item(), rel=1e-13)
    np.testing.assert_allclose(g.numpy(), tg.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eager_cross_entropy_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x0, t0 = (rng.standard_normal((9, 4)) * 5).astype(dtype), rng.integers(0, 4, 9)
    for reduction in ("mean", "sum", "none"):
        x = ag.Tensor(x0, requires_grad=True)
        loss = nn.cross_entropy(x, t0.astype(np.int8), reduction=reduction)
        loss.sum().backward() if reduction == "none" else loss.backward()
        tx = torch.tensor(x0, requires_grad=True)
        tl = torch.nn.functional.cross_entropy(tx, torch.tensor(t0), reduction=reduction)
        tl.sum().backward()
        tol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(loss.numpy(), tl.detach().numpy(), rtol=tol)
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)


# ---- replay over time steps whose targets change ------------------------------------------
def step_loss(p, xs, ys, kind):
    B, H = xs.shape[1], p["w"].shape[0]
    h, loss = ag.zeros((B, H), dtype=p["w"].dtype), 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ p["u"] + h @ p["w"] + p["b"])
        logits = h @ p["v"] + p["c"]
        if kind == "nn":
            loss = loss + nn.cross_entropy(logits, ys[t])
        elif kind == "row":  # one row a step (a view of the targets' argument)
            loss = loss + ag.softmax_cross_entropy(logits[1:2], ys[t][1:2]).sum()
        else:  # "3d"
            loss = loss + nn.cross_entropy(ag.reshape(logits, (1,) + logits.shape), ys[t][None])
    return loss


@pytest.mark.parametrize("kind", ["nn", "row", "3d"])
@pytest.mark.parametrize("tdtype, classes", [(np.int8, 128), (np.uint8, 6), (np.int64, 6),
                                             (np.int16, 200)])
def test_replay_with_changing_targets_gives_eager_values_and_errors(kind, tdtype, classes):
    rng = np.random.default_rng(classes)
    T, B, I, H = 5, 3, 4, 5
    p = {k: ag.Tensor(rng.standard_normal(s) * 0.5, requires_grad=True)
         for k, s in {"u": (I, H), "w": (H, H), "b": (H,), "v": (H, classes),
                      "c": (classes,)}.items()}
    xs = ag.Tensor(rng.standard_normal((T, B, I)))
    step = ag.replay(lambda xs, ys: step_loss(p, xs, ys, kind))

    def run(fn, ys):
        for t in p.values():
            t.grad = None
        loss = fn(xs, ys)
        loss.backward()
        return loss.item(), {k: t.grad.numpy().copy() for k, t in p.items()}

    bad_value = -128 if np.dtype(tdtype).kind == "i" else classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in range(7):
            ys = rng.integers(0, classes, (T, B)).astype(tdtype)
            ys[:, 1] = classes - 1  # the largest class, in every row that "row" reads
            if call in (3, 5):
                ys[2, 1] = bad_value
                # a replayed call runs the op's own check (its message, as in the parent;
                # nn.cross_entropy of a batch of rows records mean_softmax_cross_entropy);
                # an eager call, nn's (which names the call and the range it saw)
                op = "mean_softmax_cross_entropy" if kind == "nn" else "softmax_cross_entropy"
                with pytest.raises(IndexError, match=rf"^{op}: target class "
                                                     rf"out of range \[0, {classes}\)$"):
                    step(xs, ys)
                message = (rf"^cross_entropy: target class out of range \[0, {classes}\) "
                           rf"\(min {ys[2].min()}, max {ys[2].max()}\)$"
                           if kind != "row" else
                           rf"^softmax_cross_entropy: target class out of range \[0, {classes}\)$")
                with pytest.raises(IndexError, match=message):
                    step_loss(p, xs, ys, kind)
                continue
            got, want = run(step, ys), run(lambda a, b: step_loss(p, a, b, kind), ys)
            assert got[0] == pytest.approx(want[0], rel=1e-12)
            for k in p:
                np.testing.assert_allclose(got[1][k], want[1][k], rtol=1e-11, atol=1e-13)


# ---- _record_constants, linear, the properties --------------------------------------------
def test_the_saved_target_is_a_copy():
    x = ag.Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    target = np.array([0, 1, 2])
    loss = ag.softmax_cross_entropy(x, target).sum()
    saved = loss._inputs[0]._saved[0]
    assert saved is not target and np.array_equal(saved, [0, 1, 2])
    target[:] = [3, 3, 3]  # changed after the forward: the gradient is the forward's
    loss.backward()
    want = old_softmax_cross_entropy_arrays(np.arange(12.0).reshape(3, 4), np.array([0, 1, 2]))[1]
    want[[0, 1, 2], [0, 1, 2]] -= 1
    assert bits(x.grad.numpy()) == bits(want)


def test_linear_takes_arrays_lists_and_tensors():
    got = ag.linear([[1.0, 2.0]], [[3.0, 4.0]], [0.5])
    assert bits(got.numpy()) == bits(np.array([[11.5]], np.float32))
    w = ag.Tensor(np.ones((4, 3)), requires_grad=True)
    out = ag.linear(np.ones((2, 3)), w)
    assert out.shape == (2, 4) and out.dtype == np.float64 and out.requires_grad
    out.sum().backward()
    assert bits(w.grad.numpy()) == bits(np.full((4, 3), 2.0))
    with pytest.raises(ValueError, match=r"^linear: needs x \(n, in\) and weight \(out, in\), "
                                         r"got shapes \(3,\) and \(2, 3\)"):
        ag.linear(np.ones(3), np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"^Tensor: unsupported dtype <U2"):
        ag.linear("ab", np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"^Tensor: unsupported dtype <U1"):
        ag.linear(np.ones((2, 3)), "a")


def test_tensor_properties():
    t = ag.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert (t.shape, t.ndim, t.size, t.dtype) == ((2, 3), 2, 6, np.dtype(np.float64))
    assert type(t.shape) is tuple and type(t.ndim) is int and type(t.size) is int
    docs = {name: getattr(ag.Tensor, name).__doc__ for name in ("shape", "ndim", "size", "dtype")}
    assert docs == {"shape": "Shape tuple, as ndarray.shape.", "ndim": "Number of dimensions.",
                    "size": "Number of elements.", "dtype": "numpy dtype of the data."}
    for name in ("shape", "ndim", "size", "dtype"):
        with pytest.raises(AttributeError, match=r"^property '%s' of 'Tensor' object has no "
                                                 r"setter$" % name):
            setattr(t, name, 1)
        with pytest.raises(AttributeError, match=r"^'Tensor' object has no attribute '_data'$"):
            getattr(ag.Tensor.__new__(ag.Tensor), name)
    t.data = np.zeros((2, 3), np.float32)  # read through _data each time
    assert t.dtype == np.float32
    p = nn.Parameter(np.ones((4, 2)))
    assert (p.shape, p.ndim, p.size, p.dtype) == ((4, 2), 2, 8, np.dtype(np.float64))
    for clone in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t), copy.copy(t),
                  pickle.loads(pickle.dumps(p))):
        assert (clone.shape, clone.ndim, clone.size) == (t.shape, t.ndim, t.size) or \
            (clone.shape, clone.size) == ((4, 2), 8)

    class Sub(ag.Tensor):
        __slots__ = ()

        @property
        def shape(self):  # a subclass may still override one
            return ("sub",) + self._data.shape

    s = Sub(np.ones(3))
    assert (s.shape, s.ndim, s.size) == (("sub", 3), 1, 3)
