"""Review 36: 33dbb6c attacked (Op.declared with backward_into, as_declared asking all four
functions, batching standing aside for ops not as declared, the mean cross-entropy on the
declared rows kernel/rule, functions_of watching backward_into, the replayed backward's
RuntimeError when a rule was replaced after its forward, fast paths from declared
capabilities).

What held (tests without the bug_ prefix): the new RuntimeError leaves no .grad, keeps the
result usable after the rule is put back (retain_graph=True, twice), also through ag.grad,
through a replayed result inside a larger eager graph, for two results of two calls with
other inputs; a rule replaced and put back between forward and backward, or a rule of an op
the plan does not hold, raises nothing; learners' subclasses of the cross-entropy ops (plain,
and with a rule calling the parent's) replay with eager mode's bits under a replaced parent
rule, batched or not.

The bugs (test_bug_*):
1. Plan.functions (what Plan.changed / Plan.replaced watch) is taken in Plan.__init__ from
   the recorded program, before confirm() batches it: the ops that batching brings in
   (Reshape, Stack: batching.SYNTHESIZED) are never watched. A rule of Reshape or Stack
   replaced after a batched plan was confirmed runs in the replayed backward (no re-record,
   no RuntimeError), though eager mode has no such node: gradients several times off.
2. The same gap the other way: a plan confirmed while Reshape's rule is replaced is left
   unbatched (batching.rewrite refuses while a SYNTHESIZED op is not as declared), and after
   the rule is put back it is never recorded again: batching lost for good.
3. __init_subclass__ takes `fast_path` from the declared capabilities but `sweep_step` of a
   split op still from `cls.backward_split` in place: a subclass of Linear/MatMul/AddMM made
   while backward_split is patched to None has no generated eager step for good.

All fixed: a plan that batches watches batching.SYNTHESIZED too (a rule put in place of one
of them, or put back, records the plan anew), and a split op's step is made for the declared
split rule.
"""
import warnings
from unittest import mock

import numpy as np
import pytest

import autograd_core as ag
from autograd_core.function import as_declared, record
from autograd_core.ops.cross_entropy import MeanSoftmaxCrossEntropy, SoftmaxCrossEntropy
from autograd_core.ops.joining import Stack
from autograd_core.ops.linalg import AddMM, Linear, MatMul
from autograd_core.ops.shape import Reshape
from autograd_core.ops.unary import Sigmoid, Tanh
from tests.autograd_core.replaced_rules import close as _close, cross_entropy_loop, loop_sum
from tests.autograd_core.replaced_rules import same_bits as _same_bits, scaled_rule as _scaled

RNG = np.random.default_rng(3636)
T, B, I, H, C = 5, 3, 4, 4, 3
XS = RNG.standard_normal((T, B, I))
XS2 = RNG.standard_normal((T, B, I))
YS = RNG.integers(0, C, (T, B))
loop_cross_entropy = cross_entropy_loop(YS)
U, W = RNG.standard_normal((I, H)), RNG.standard_normal((H, H))
V = RNG.standard_normal((H, C))
ARRAYS = (XS, U, W, V)


def _quiet():
    warnings.simplefilter("ignore", ag.ReplayWarning)


def _leaves(arrays=ARRAYS):
    return [ag.Tensor(a.copy(), requires_grad=True) for a in arrays]


def _grads(fn, arrays=ARRAYS):
    leaves = _leaves(arrays)
    fn(*leaves).backward()
    return [t.grad.numpy() for t in leaves]


def _warm(fn, batch, calls=3):
    step = ag.replay(fn, batch=batch)
    with warnings.catch_warnings():
        _quiet()
        for _ in range(calls):  # recorded, confirmed, replayed
            _grads(step)
    return step


def _plan(step):
    (plan,) = [p for p in step.plans.values() if not isinstance(p, str)]
    return plan


# ---- 1. ops brought in by batching are not watched ----------------------------------------------
@pytest.mark.parametrize("fn", [loop_sum, loop_cross_entropy], ids=["sum", "cross_entropy"])
@pytest.mark.parametrize("op", [Reshape, Stack], ids=["reshape", "stack"])
def test_bug_a_rule_of_an_op_batching_brought_in_replaced_after_confirm_is_run(op, fn):
    """Reshape's (Stack's) rule tripled after a batched plan was confirmed. Eager mode's
    graph has no reshape (stack) node: its gradients are the plain ones. The batched plan
    holds reshape and stack nodes of its own (batching's gathers), but Plan.functions was
    taken before batching, so Plan.changed sees nothing: the replayed backward calls the
    replaced rule on those nodes (gradients ~3x-9x off), silently."""
    plain = _grads(fn)
    step = _warm(fn, batch=True)
    assert _plan(step).batched
    with mock.patch.object(op, "backward", _scaled(op)):
        eager = _grads(fn)
        with warnings.catch_warnings():
            _quiet()
            during = [_grads(step) for _ in range(3)]
    _same_bits(eager, plain)
    for got in during:
        _close(got, eager)


@pytest.mark.parametrize("op", [Reshape, Stack], ids=["reshape", "stack"])
def test_bug_a_replaced_rule_of_a_batching_op_after_a_replayed_forward_is_not_refused(op):
    """The replayed backward's new check (plan.replaced()) asks the same Plan.functions: a
    result of a batched replayed call whose backward runs while Reshape's (Stack's) rule is
    replaced neither refuses nor gives eager mode's gradients: it runs the replaced rule."""
    plain = _grads(loop_sum)
    step = _warm(loop_sum, batch=True)
    leaves = _leaves()
    with warnings.catch_warnings():
        _quiet()
        out = step(*leaves)
    with mock.patch.object(op, "backward", _scaled(op)):
        try:
            out.backward()
        except RuntimeError:
            assert all(t.grad is None for t in leaves)
            return  # refusing loudly is acceptable
    _close([t.grad.numpy() for t in leaves], plain)


def test_bug_a_plan_confirmed_while_a_batching_ops_rule_is_replaced_never_batches_again():
    """Reshape's rule replaced while the plan is recorded and confirmed: batching.rewrite
    stands aside (right: its gathers would run the learner's rule). Once the rule is put
    back, the plan is never recorded again (Plan.functions does not hold Reshape: nothing
    changed, as far as Plan.changed sees), so the function stays unbatched for good, unlike
    a plan confirmed under any other replaced rule (Tanh's: recorded anew, batched)."""
    step = ag.replay(loop_sum, batch=True)
    with mock.patch.object(Reshape, "backward", _scaled(Reshape)):
        with warnings.catch_warnings():
            _quiet()
            for _ in range(3):
                _grads(step)
        assert not _plan(step).batched
    with warnings.catch_warnings():
        _quiet()
        for _ in range(4):
            _grads(step)
    assert _plan(step).batched


def test_a_plan_confirmed_while_tanhs_rule_is_replaced_batches_once_it_is_back():
    step = ag.replay(loop_sum, batch=True)
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
        with warnings.catch_warnings():
            _quiet()
            for _ in range(3):
                _grads(step)
        during = _plan(step)
    with warnings.catch_warnings():
        _quiet()
        got = [_grads(step) for _ in range(4)]
    assert _plan(step) is not during and _plan(step).batched  # recorded anew
    _close(got[-1], _grads(loop_sum))


# ---- 3. a split op's generated step from the capability in place --------------------------------
@pytest.mark.parametrize("op", [Linear, MatMul, AddMM], ids=["linear", "matmul", "addmm"])
def test_bug_a_subclass_made_while_backward_split_is_none_loses_its_generated_step(op):
    """class S(op) made while op.backward_split is mock-patched to None: review 35 gave S
    its fast_path back from the declared capability, but __init_subclass__ still makes
    sweep_step from `cls.backward_split is not None` (the capability in place): S.sweep_step
    and S.eager_step stay None after the capability is back, while a subclass made a moment
    later (and op itself) gets the generated split step."""
    with mock.patch.object(op, "backward_split", None):
        class S(op):
            name = None

    class Later(op):
        name = None

    assert Later.sweep_step is not None and Later.eager_step is not None
    assert S.backward_split is op.backward_split and as_declared(S)
    assert S.sweep_step is not None
    assert S.eager_step is not None


# ---- the new RuntimeError: what it leaves ------------------------------------------------------
def _replayed_out(batch, arrays=ARRAYS):
    step = _warm(loop_sum, batch)
    leaves = _leaves(arrays)
    with warnings.catch_warnings():
        _quiet()
        out = step(*leaves)
    assert out._op is not None and out._op.name == "replay"
    return step, leaves, out


@pytest.mark.parametrize("batch", [True, False])
def test_the_refusal_with_retain_graph_leaves_the_result_usable_twice(batch):
    plain = _grads(loop_sum)
    _, leaves, out = _replayed_out(batch)
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
        for _ in range(2):
            with pytest.raises(RuntimeError, match="op 'tanh' was replaced"):
                out.backward(retain_graph=True)
    assert all(t.grad is None for t in leaves)
    out.backward(retain_graph=True)
    first = [t.grad.numpy().copy() for t in leaves]
    out.backward()
    (_close if batch else _same_bits)(first, plain)
    _close([t.grad.numpy() for t in leaves], [2 * p for p in plain])


@pytest.mark.parametrize("batch", [True, False])
def test_the_refusal_through_ag_grad_then_ag_grad_after_restore(batch):
    plain = _grads(loop_sum)
    _, leaves, out = _replayed_out(batch)
    with mock.patch.object(MatMul, "backward", _scaled(MatMul)):
        with pytest.raises(RuntimeError, match="op 'matmul' was replaced"):
            ag.grad(out, leaves, retain_graph=True)
    got = ag.grad(out, leaves)
    assert all(t.grad is None for t in leaves)
    (_close if batch else _same_bits)([np.asarray(g.numpy()) for g in got], plain)


@pytest.mark.parametrize("batch", [True, False])
def test_the_refusal_inside_a_larger_eager_graph_writes_no_grad(batch):
    _, leaves, out = _replayed_out(batch)
    total = out * 2.0 + (leaves[1] * leaves[1]).sum() + leaves[3].sum()
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
        with pytest.raises(RuntimeError, match="tanh"):
            total.backward(retain_graph=True)
    assert all(t.grad is None for t in leaves)
    total.backward()
    plain = _grads(loop_sum)
    want = [2 * p for p in plain]
    want[1] = want[1] + 2 * U
    want[3] = want[3] + 1.0
    _close([t.grad.numpy() for t in leaves], want)


@pytest.mark.parametrize("batch", [True, False])
def test_two_results_of_two_calls_refuse_then_give_their_own_gradients(batch):
    """Two results of one plan: the second call overwrites the shells, so the first one's
    backward refuses (generation) whatever the rule; the second's refuses
    while Tanh's rule is replaced, and gives its own inputs' gradients once it is back."""
    step = _warm(loop_sum, batch)
    a, b = _leaves(ARRAYS), _leaves((XS2, U, W, V))
    with warnings.catch_warnings():
        _quiet()
        out_a = step(*a)
        out_b = step(*b)
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
        with pytest.raises(RuntimeError):
            out_b.backward()
        with pytest.raises(RuntimeError):
            out_a.backward()
    assert all(t.grad is None for t in a + b)
    out_b.backward()
    (_close if batch else _same_bits)([t.grad.numpy() for t in b],
                                      _grads(loop_sum, (XS2, U, W, V)))
    with pytest.raises(RuntimeError, match="later call"):
        out_a.backward()
    assert all(t.grad is None for t in a)


@pytest.mark.parametrize("batch", [True, False])
def test_a_rule_replaced_and_put_back_or_of_another_op_between_forward_and_backward(batch):
    plain = _grads(loop_sum)
    _, leaves, out = _replayed_out(batch)
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
        pass
    with mock.patch.object(Sigmoid, "backward", _scaled(Sigmoid)):  # not in the plan
        out.backward()
    (_close if batch else _same_bits)([t.grad.numpy() for t in leaves], plain)


def test_the_next_call_after_a_refusal_records_with_the_rule_in_place():
    step, leaves, out = _replayed_out(False)
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
        with pytest.raises(RuntimeError):
            out.backward()
        eager = _grads(loop_sum)
        with warnings.catch_warnings():
            _quiet()
            got = [_grads(step) for _ in range(4)]
    for g in got:
        _same_bits(g, eager)
    with warnings.catch_warnings():
        _quiet()
        after = [_grads(step) for _ in range(4)]
    for g in after:
        _same_bits(g, _grads(loop_sum))


# ---- learners' subclasses of the cross-entropy ops ------------------------------------------
class LearnerMean(MeanSoftmaxCrossEntropy):
    name = None


class LearnerClippedMean(MeanSoftmaxCrossEntropy):
    """A learner's rule that calls the parent's at call time, clipped."""
    name = None

    @staticmethod
    def backward(g, out, xp):
        (grad,) = MeanSoftmaxCrossEntropy.backward(g, out, xp)
        return (np.clip(grad, -0.1, 0.1),)


class LearnerRows(SoftmaxCrossEntropy):
    name = None


def _loop_of(op, mean=True):
    from autograd_core.ops.cross_entropy import softmax_cross_entropy_arrays

    def fn(xs, u, w, v):
        h = ag.zeros((B, H), dtype=np.float64)
        loss = 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(xs[t] @ u + h @ w)
            z = h @ v
            target = YS[t].copy()
            rows, probs = softmax_cross_entropy_arrays(z._data, target)
            if mean:
                node = record(op, np.asarray(rows.mean(axis=-1)), (z,), (target, probs))
            else:
                node = record(op, rows, (z,), (target, probs)).mean()
            loss = loss + node
        return loss
    return fn


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("op,mean,patched", [
    (LearnerMean, True, MeanSoftmaxCrossEntropy),
    (LearnerMean, True, SoftmaxCrossEntropy),
    (LearnerClippedMean, True, MeanSoftmaxCrossEntropy),
    (LearnerClippedMean, True, SoftmaxCrossEntropy),
    (LearnerRows, False, SoftmaxCrossEntropy)],
    ids=["mean-mean", "mean-rows", "clipped-mean", "clipped-rows", "rows-rows"])
def test_learners_cross_entropy_subclasses_replay_with_eager_bits(op, mean, patched, batch):
    fn = _loop_of(op, mean)
    plain = _grads(fn)
    step = _warm(fn, batch)
    with mock.patch.object(patched, "backward", _scaled(patched)):
        eager = _grads(fn)
        with warnings.catch_warnings():
            _quiet()
            during = [_grads(step) for _ in range(4)]
    for got in during:
        _same_bits(got, eager)
    with warnings.catch_warnings():
        _quiet()
        after = [_grads(step) for _ in range(4)]
    for got in after:
        (_close if batch else _same_bits)(got, plain)


def test_the_clipped_learner_mean_is_run_by_eager_mode():
    plain = _grads(_loop_of(LearnerMean))
    clipped = _grads(_loop_of(LearnerClippedMean))
    assert not np.allclose(clipped[3], plain[3])
