"""Review 37: 94e3cb6 attacked (a plan that batches watches batching.SYNTHESIZED; a split op's
generated eager step made for the declared split rule).

What held (tests without the bug_ prefix): in normal use nothing is recorded anew (nn.RNN,
nn.GRU and a hand loop through ag.replay, 10 calls over two shapes: no ReplayWarning after
the first recordings, the same confirmed, batched plan); a plan confirmed while Reshape's,
Stack's or AddMM's rule is replaced records anew once it is put back, batches, and gives
eager mode's gradients (within 1e-12 batched, bit for bit with batch=False); a rule put on an
abstract parent family or on a mixin after confirm records anew with eager mode's gradients;
threads sharing a fresh replayed function all get eager mode's gradients.

The bugs (test_bug_*):
1. batch_builder makes plain MatMul nodes for a "matmul" group whose weight is shared (and
   batching's fuse_products AddMM nodes) whatever the group's op class: a learner's subclass
   of MatMul with a rule of its own that declares batch = "matmul" loses its rule in a
   batched replay (MatMul's runs instead, gradients off), silently.
2. The same for a "sum" chain: a learner's subclass of Add with its own rule and
   batch = "sum" is flattened into Stack + Sum, whose rules replace the learner's.
   (Cause of 1 and 2: batching's _kind trusts `op.batch` as declared by a class with a rule
   of its own, and the builder stands the built ops in for the group's op.)
3. Plan.functions (functions_of) holds forward/backward/backward_split/backward_into but
   not `fast_path`, which _OpClass syncs and eager mode follows: MatMul.fast_path taken
   away after a batch=False plan was confirmed makes eager mode run the plain rule, while
   the replayed backward keeps its SPLIT steps (deferred stacked products): not eager
   mode's bits, and no re-record.

All fixed: the kinds whose groups and rewrites are made of this package's own ops ("sum",
"matmul", "index") hold only for ops with those ops' own kernel and rule (a learner's
subclass with a rule of its own runs copy by copy), and a plan watches `fast_path` too.
"""
import copy
import threading
import warnings
from unittest import mock

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.function import record
from autograd_core.ops.arithmetic import Add
from autograd_core.ops.joining import Stack
from autograd_core.ops.linalg import AddMM, MatMul, product
from autograd_core.ops.shape import Reshape
from autograd_core.ops.unary import Tanh
from tests.autograd_core.learner_ops import cube_class
from tests.autograd_core.replaced_rules import close, loop_squares as loop_sum
from tests.autograd_core.replaced_rules import same_bits as _same_bits, scaled_rule as _scaled

RNG = np.random.default_rng(3737)
T, B, I, H = 5, 3, 4, 4
XS = RNG.standard_normal((T, B, I))
U, W = RNG.standard_normal((I, H)), RNG.standard_normal((H, H))
ARRAYS = (XS, U, W)


def _close(got, want, rtol=1e-12, atol=1e-12):
    close(got, want, rtol=rtol, atol=atol)


def _leaves(arrays=ARRAYS):
    return [ag.Tensor(a.copy(), requires_grad=True) for a in arrays]


def _grads(fn, arrays=ARRAYS):
    leaves = _leaves(arrays)
    fn(*leaves).backward()
    return [t.grad.numpy() for t in leaves]


def _plans(step):
    return [p for p in step.plans.values() if not isinstance(p, str)]


def _warm(fn, batch, calls=3, arrays=ARRAYS):
    step = ag.replay(fn, batch=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ag.ReplayWarning)
        got = [_grads(step, arrays) for _ in range(calls)]
    return step, got


# ---- learners' ops that declare how they batch, with rules of their own ------------------------
class TwiceMatMul(MatMul):
    """A learner's product whose rule is its own (twice MatMul's, so that it shows)."""
    name = None  # (unregistered: the op table and the fuzzer cover registered ops)
    batch = "matmul"

    @staticmethod
    def backward(g, out, xp):
        return tuple(None if r is None else 2.0 * r for r in MatMul.backward(g, out, xp))


class TwiceAdd(Add):
    name = None
    batch = "sum"

    @staticmethod
    def backward(g, out, xp):
        return 2.0 * g, 2.0 * g


def loop_twice_matmul(xs, u, w):
    h = ag.zeros((B, H), dtype=np.float64)
    loss = 0.0
    for t in range(xs.shape[0]):
        x = xs[t]
        h = ag.tanh(record(TwiceMatMul, product(x._data, u._data), (x, u)) + h @ w)
        loss = loss + h.sum()
    return loss


def loop_twice_add(xs, u, w):
    h = ag.zeros((B, H), dtype=np.float64)
    loss = None
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ u + h @ w)
        term = (h * h).sum()
        loss = term if loss is None else record(TwiceAdd, np.add(loss._data, term._data),
                                                 (loss, term))
    return loss


def test_bug_a_learners_matmul_with_its_own_rule_loses_it_when_batched():
    """TwiceMatMul(MatMul) declares batch = "matmul" and a rule of its own. Eager mode runs
    that rule; the batched replay stands a plain MatMul node (batch_builder._batch, shared
    weight) in for the group, so MatMul's rule runs: xs's and u's gradients half eager
    mode's. batch=False gives eager mode's bits."""
    eager = _grads(loop_twice_matmul)
    _, unbatched = _warm(loop_twice_matmul, batch=False, calls=4)
    _same_bits(unbatched[-1], eager)
    step, got = _warm(loop_twice_matmul, batch=True, calls=4)
    _close(got[-1], eager)


def test_bug_a_learners_add_with_its_own_rule_loses_it_in_a_flattened_chain():
    """TwiceAdd(Add), batch = "sum", rule g -> (2g, 2g): the accumulating chain of
    TwiceAdd nodes is flattened into Stack + Sum (rules of declared ops), so the factors of
    2 along the chain are lost in the batched replay (gradients up to 16x off)."""
    eager = _grads(loop_twice_add)
    _, unbatched = _warm(loop_twice_add, batch=False, calls=4)
    _same_bits(unbatched[-1], eager)
    _, got = _warm(loop_twice_add, batch=True, calls=4)
    _close(got[-1], eager)


# ---- fast_path is not watched ----------------------------------------------------------------------
def test_bug_matmuls_fast_path_taken_away_after_confirm_is_not_seen_by_an_unbatched_plan():
    """MatMul.fast_path set to None (the metaclass syncs fast_backward: eager mode then runs
    MatMul.backward per step, summing the weight's gradient step by step). The batch=False
    plan confirmed before keeps its SPLIT steps (one stacked product for the weight): the
    gradients of w are not eager mode's bits, and nothing is recorded anew."""
    step, _ = _warm(loop_sum, batch=False)
    with mock.patch.object(MatMul, "fast_path", None):
        eager = _grads(loop_sum)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ag.ReplayWarning)
            got = [_grads(step) for _ in range(3)]
    for g in got:
        _same_bits(g, eager)


# ---- what held -------------------------------------------------------------------------------------
def _rnn_loss(model):
    def fn(x):
        out, _ = model(x)
        return (out * out).sum()
    return fn


@pytest.mark.parametrize("kind", ["rnn", "gru", "loop"])
def test_no_recording_anew_in_normal_use_across_calls_and_shapes(kind):
    rng = np.random.default_rng(37)
    if kind == "loop":
        u = ag.Tensor(U.copy(), requires_grad=True)
        w = ag.Tensor(W.copy(), requires_grad=True)
        params = [u, w]

        def fn(xs):
            return loop_sum(xs, u, w)
    else:
        model = (nn.RNN if kind == "rnn" else nn.GRU)(I, H, rng=rng, dtype=np.float64)
        params = list(model.parameters())
        fn = _rnn_loss(model)
    step = ag.replay(fn)
    shapes = [(T, B, I), (T + 2, B, I)]
    inputs = {s: [rng.standard_normal(s) for _ in range(10)] for s in shapes}
    plans = {}
    for k in range(10):
        for s in shapes:
            x = inputs[s][k]
            for p in params:
                p.grad = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step(ag.Tensor(x)).backward()
            got = [p.grad.numpy().copy() for p in params]
            for p in params:
                p.grad = None
            fn(ag.Tensor(x)).backward()
            want = [p.grad.numpy().copy() for p in params]
            _close(got, want, rtol=1e-10, atol=1e-12)
            if k >= 2:
                assert not [c for c in caught if issubclass(c.category, ag.ReplayWarning)]
                plan = _plans(step)
                assert len(plan) == 2 and all(p.confirmed for p in plan)
                if s in plans:  # the same plan every call: nothing recorded anew
                    assert set(map(id, plan)) == plans[s]
                plans[s] = set(map(id, plan))
    if kind == "loop":  # (nn's layers run Linear, which does not batch: nothing to batch)
        assert all(p.batched for p in _plans(step))


@pytest.mark.parametrize("op", [Reshape, Stack, AddMM], ids=["reshape", "stack", "addmm"])
def test_confirmed_while_a_synthesized_op_is_replaced_then_put_back_batches(op):
    eager = _grads(loop_sum)
    step = ag.replay(loop_sum, batch=True)
    plain = ag.replay(loop_sum, batch=False)
    with mock.patch.object(op, "backward", _scaled(op)):
        assert _same_bits(_grads(loop_sum), eager) is None  # no such node in eager mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ag.ReplayWarning)
            for _ in range(3):
                _close(_grads(step), eager)
                _same_bits(_grads(plain), eager)
        (during,) = _plans(step)
        assert during.confirmed and not during.batched
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ag.ReplayWarning)
        got = [_grads(step) for _ in range(4)]
        bits = [_grads(plain) for _ in range(4)]
    (after,) = _plans(step)
    assert after is not during and after.confirmed and after.batched
    for g in got:
        _close(g, eager)
    for g in bits:
        _same_bits(g, eager)


Cube = cube_class(None)  # an abstract family


class CubeOp(Cube):
    name = None


class Loud:
    """A mixin whose rule would be the class's once put on it."""


class LoudTanh(Loud, Tanh):
    name = None


def _loop_with(op):
    def fn(xs, u, w):
        h = ag.zeros((B, H), dtype=np.float64)
        loss = 0.0
        for t in range(xs.shape[0]):
            pre = xs[t] @ u + h @ w
            h = record(op, op.forward(None, pre._data), (pre,))
            loss = loss + (0.1 * h).sum()
        return loss
    return fn


@pytest.mark.parametrize("where", ["parent", "mixin"])
def test_a_rule_put_on_a_parent_or_a_mixin_after_confirm_records_anew(where):
    op, owner = (CubeOp, Cube) if where == "parent" else (LoudTanh, Loud)
    fn = _loop_with(op)
    step, _ = _warm(fn, batch=True)
    (before,) = _plans(step)
    with mock.patch.object(owner, "backward", _scaled(op), create=True):
        assert op.backward is not Tanh.backward
        eager = _grads(fn)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ag.ReplayWarning)
            got = [_grads(step) for _ in range(3)]
    assert _plans(step)[0] is not before
    for g in got:
        _close(g, eager)
    _close(_grads(step), _grads(fn))


def test_threads_sharing_a_fresh_replayed_function_get_eager_gradients():
    eager = _grads(loop_sum)
    step = ag.replay(loop_sum, batch=True)
    results, errors = [], []

    def work():
        try:
            for _ in range(4):
                leaves = _leaves()
                step(*leaves).backward()
                results.append([t.grad.numpy() for t in leaves])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ag.ReplayWarning)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # a call's result overwritten by another thread's call may refuse loudly (RuntimeError)
    assert all(isinstance(e, RuntimeError) for e in errors), errors
    assert results
    for g in results:
        _close(g, eager)


def test_a_confirmed_replayed_function_copies_or_refuses_loudly():
    step, _ = _warm(loop_sum, batch=True)
    try:
        twin = copy.deepcopy(step)
    except TypeError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ag.ReplayWarning)
        _close(_grads(twin), _grads(loop_sum))
