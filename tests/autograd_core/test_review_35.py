"""Review 35: b47fcf3 attacked (Op.declared, function.as_declared / fast_path_serves, replay
under a replaced rule, kernel or capability).

What held: every registered op's rule tripled in turn under nn.RNN, nn.GRU (both variants),
nn.LSTM and nn.MLP + nn.cross_entropy, replayed batched and not, bit for bit with eager mode
and again after the rule is put back; a rule put on a learner's mixin, an abstract family's
rule, a class made with type(...), bases reassigned after the plan was confirmed; a rule
replaced between the recording and the confirming call; a replaced kernel (`forward`: replay
runs it, as the Op docstring says, consistent with eager mode over the values it computes);
a correct rule of another code path agrees with central differences through a replayed GRU.

The bugs (test_bug_*):
1. batching's rewrites stand for the declared *capabilities* too, but as_declared asks only
   forward and backward: a learner's AddMM.backward_split is brought into a loop that eager
   mode runs without addmm (fuse_products), and a learner's MatMul.backward_split runs once on
   the stacked steps of a batched group instead of once per product.
2. batching merges repeated nodes (_merge_repeats: w.T inside the loop) whatever their op's
   rule: a replaced rule then runs once on the summed gradient instead of once per node.
3. MeanSoftmaxCrossEntropy's declared rule calls SoftmaxCrossEntropy.backward for 2-D targets:
   a batched group of per-step means (targets stacked to 2-D) runs a replaced
   SoftmaxCrossEntropy rule that eager mode (1-D targets) never calls.
4. a learner's GetItem.backward_into is skipped by a batched plan (its extractions batched,
   then ROW steps: replay_sweep._row_extractions compares it with GetItem.backward_into,
   which is itself).
5. backward_into set to None after the plan was confirmed: the replayed backward calls None
   (compare.functions_of does not watch backward_into; eager mode falls back to the rule).
6. a rule replaced between a replayed call's forward and its backward: eager mode runs the
   rule in place at backward time, the replayed backward the old one (its generated code).
7. a subclass made while its parent's capability is None loses its fast path for good.

All fixed: Op.declared holds backward_into too and as_declared asks all four functions (1);
repeats merge only for ops as declared (2); the mean calls softmax_cross_entropy's declared
kernel and rule (3); row extractions need a GetItem as declared (4); functions_of watches
backward_into (5); a replayed backward refuses, naming the op, when a rule was replaced
after its forward (6: there is no eager graph to run the new rule on; the next call
records anew); a class's fast path comes from its declared capabilities (7).

Reading: the eager sweep's hot loop (engine._sweep) is unchanged; _split_backward gains its
None check, and _sparse_backward one more attribute read and compare per indexing node
(`op.backward_into is None`), which the commit's claim does not mention.
"""
import warnings
from unittest import mock

import numpy as np
import pytest

import autograd_core as ag
import nn
from autograd_core.function import Memory, Op, as_declared, fast_path_serves, record
from autograd_core.ops.cross_entropy import SoftmaxCrossEntropy
from autograd_core.ops.indexing import GetItem
from autograd_core.ops.linalg import AddMM, Linear, MatMul
from autograd_core.ops.reductions import Max, _Extremum
from autograd_core.ops.shape import Transpose
from autograd_core.ops.unary import Sigmoid, Tanh
from nn.models import RecurrentClassifier
from tests.finite_differences import central_differences
from tests.autograd_core.replaced_rules import close as _close, cross_entropy_loop, loop_sum
from tests.autograd_core.replaced_rules import same_bits as _same_bits, scaled_rule as _scaled

RNG = np.random.default_rng(3535)
T, B, I, H, C = 5, 3, 4, 4, 3
XS = RNG.standard_normal((T, B, I))
YS = RNG.integers(0, C, (T, B))
loop_cross_entropy = cross_entropy_loop(YS)
U, W = RNG.standard_normal((I, H)), RNG.standard_normal((H, H))
V = RNG.standard_normal((H, C))
XM, YM = RNG.standard_normal((6, 4)), RNG.integers(0, 3, 6)


def _quiet():
    warnings.simplefilter("ignore", ag.ReplayWarning)


def _grads(fn, arrays=(XS, U, W, V)):
    leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in arrays]
    fn(*leaves).backward()
    return [t.grad.numpy() for t in leaves]


def _replayed(fn, batch, calls=4, arrays=(XS, U, W, V)):
    """(the replayed function, the gradients of `calls` calls: recorded, confirmed,
    replayed...)."""
    step = ag.replay(fn, batch=batch)
    with warnings.catch_warnings():
        _quiet()
        return step, [_grads(step, arrays) for _ in range(calls)]


# ---- what held: nn models under every replaced rule --------------------------------------
def _model(kind):
    if kind == "mlp":
        m = nn.MLP([4, 5, 3], rng=np.random.default_rng(1), dtype=np.float64)
        return m, (lambda x: nn.cross_entropy(m(x), YM)), XM
    cell, kw = {"rnn": ("rnn", {}), "gru": ("gru", {}), "gru_torch": ("gru", {"variant": "torch"}),
                "lstm": ("lstm", {})}[kind]
    m = RecurrentClassifier(I, H, C, cell=cell, rng=np.random.default_rng(2), dtype=np.float64,
                            **kw)
    return m, (lambda xs: m.loss(xs, YS)), XS


def _model_grads(m, fn, x):
    params = list(m.parameters())
    for p in params:
        p.grad = None
    fn(ag.Tensor(x.copy(), requires_grad=True)).backward()
    return [p.grad.numpy().copy() for p in params]


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("kind", ["rnn", "gru", "gru_torch", "lstm", "mlp"])
def test_nn_models_replay_under_every_replaced_rule_with_eager_bits(kind, batch):
    m, fn, x = _model(kind)
    plain = _model_grads(m, fn, x)
    used = 0
    for op in sorted(set(ag.ops_registry.values()), key=lambda c: c.__name__):
        with mock.patch.object(op, "backward", _scaled(op)):
            eager = _model_grads(m, fn, x)
            if all(np.array_equal(a, b) for a, b in zip(eager, plain)):
                continue  # the op is not in this model's graph
            used += 1
            step = ag.replay(fn, batch=batch)
            with warnings.catch_warnings():
                _quiet()
                during = [_model_grads(m, step, x) for _ in range(4)]
        with warnings.catch_warnings():
            _quiet()
            after = [_model_grads(m, step, x) for _ in range(4)]
        for got in during:
            _same_bits(got, eager)
        for got in after:  # batched: the plain rules' plan, batching's rounding
            (_close if batch else _same_bits)(got, plain)
    assert used >= (3 if kind == "mlp" else 6)


def test_a_correct_rule_of_another_code_path_agrees_with_finite_differences_in_a_gru():
    """Sigmoid's rule replaced by an equivalent one computed from the input (no inline
    text, no fast path): the replayed batched GRU's weight gradient is the true one."""
    m, fn, x = _model("gru")

    def from_input(g, out, xp):
        s = 1 / (1 + np.exp(-xp.val(out._inputs[0])))
        return (g * s * (1 - s),)

    with mock.patch.object(Sigmoid, "backward", staticmethod(from_input)):
        assert not as_declared(Sigmoid)
        step = ag.replay(fn)
        with warnings.catch_warnings():
            _quiet()
            got = [_model_grads(m, step, x) for _ in range(3)][-1]
    w = m.rnn.weight_hh_l0
    k = next(j for j, p in enumerate(m.parameters()) if p is w)
    original = w.data.copy()

    def loss_at(array):
        w.data = array
        with ag.no_grad():
            return float(fn(ag.Tensor(x)).numpy())

    try:
        fd = central_differences(loss_at, [original], 0)
    finally:
        w.data = original
    np.testing.assert_allclose(got[k], fd, rtol=1e-6, atol=1e-8)


# ---- what held: learners' classes, bases, timing of the replacement ----------------------
def _learner_loop(op):
    def fn(xs, u, w, v):
        h = ag.zeros((B, H), dtype=np.float64)
        loss = 0.0
        for t in range(xs.shape[0]):
            z = xs[t] @ u + h @ w
            h = record(op, np.tanh(z._data), (z,))
            loss = loss + (h @ v).sum()
        return loss
    return fn


@pytest.mark.parametrize("batch", [True, False])
def test_a_rule_put_on_a_learners_mixin_after_confirm_is_replayed(batch):
    class M:
        pass

    class T(M, Tanh):
        name = None

    fn = _learner_loop(T)
    plain = _grads(fn)
    step, _ = _replayed(fn, batch)
    M.backward = _scaled(Tanh)
    try:
        assert not as_declared(T) and as_declared(Tanh)
        eager = _grads(fn)
        with warnings.catch_warnings():
            _quiet()
            during = [_grads(step) for _ in range(4)]
    finally:
        del M.backward
    with warnings.catch_warnings():
        _quiet()
        after = [_grads(step) for _ in range(4)]
    assert not np.allclose(eager[2], plain[2])
    for got in during:
        _same_bits(got, eager)
    for got in after:
        (_close if batch else _same_bits)(got, plain)


@pytest.mark.parametrize("batch", [True, False])
def test_bases_reassigned_after_confirm_are_noticed_by_replay(batch):
    class WithRule:
        backward = _scaled(Tanh)

    T = type("T", (Tanh,), {"name": None})
    fn = _learner_loop(T)
    plain = _grads(fn)
    step, _ = _replayed(fn, batch)
    T.__bases__ = (WithRule, Tanh)
    try:
        eager = _grads(fn)
        with warnings.catch_warnings():
            _quiet()
            during = [_grads(step) for _ in range(4)]
    finally:
        T.__bases__ = (Tanh,)
    assert not np.allclose(eager[2], plain[2])
    for got in during:
        _same_bits(got, eager)
    assert as_declared(T) and T.eager_step is not None


@pytest.mark.parametrize("batch", [True, False])
def test_an_abstract_familys_rule_replaced_reaches_its_replayed_ops(batch):
    def fn(xs, u, w, v):
        h = ag.zeros((B, H), dtype=np.float64)
        loss = 0.0
        for t in range(xs.shape[0]):
            h = ag.tanh(xs[t] @ u + h @ w)
            loss = loss + ag.max(h @ v, axis=1).sum()
        return loss

    plain = _grads(fn)
    with mock.patch.object(_Extremum, "backward", _scaled(_Extremum)):
        assert not as_declared(Max)
        eager = _grads(fn)
        _, during = _replayed(fn, batch)
    assert not np.allclose(eager[3], plain[3])
    for got in during:
        _same_bits(got, eager)


def test_a_rule_replaced_between_the_recording_and_the_confirming_call():
    """Each call gives the gradients of the rules in place during it."""
    plain = _grads(loop_sum)
    step = ag.replay(loop_sum, batch=False)
    with warnings.catch_warnings():
        _quiet()
        _same_bits(_grads(step), plain)  # recorded
        with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
            eager = _grads(loop_sum)
            for _ in range(4):  # recorded again, confirmed, replayed
                _same_bits(_grads(step), eager)
        for _ in range(4):
            _same_bits(_grads(step), plain)


@pytest.mark.parametrize("batch", [True, False])
def test_a_replaced_kernel_is_replays_own_and_consistent_with_its_values(batch):
    """Op docstring: `forward` is replay's kernel; eager mode computes in the op's function.
    With a kernel giving tanh/2, the replayed value is the kernel's, and the gradients are
    eager mode's over nodes recording those values (the same rule, the same bits)."""
    def kernel(out, x):
        return np.tanh(x) * 0.5

    def recorded_half(xs, u, w, v):
        h = ag.zeros((B, H), dtype=np.float64)
        loss = 0.0
        for t in range(xs.shape[0]):
            z = xs[t] @ u + h @ w
            h = record(Tanh, np.tanh(z._data) * 0.5, (z,))
            loss = loss + (h @ v).sum()
        return loss

    want = _grads(recorded_half)
    with mock.patch.object(Tanh, "forward", staticmethod(kernel)):
        assert not as_declared(Tanh)
        step = ag.replay(loop_sum, batch=batch)
        with warnings.catch_warnings():
            _quiet()
            for _ in range(2):
                _grads(step)
            leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in (XS, U, W, V)]
            out = step(*leaves)
            out.backward()
    assert float(out.numpy()) == float(recorded_half(
        *[ag.Tensor(a) for a in (XS, U, W, V)]).numpy())
    _same_bits([t.grad.numpy() for t in leaves], want)


def test_a_learners_addmm_split_rule_with_batching_off_is_eager_modes():
    """(batch=False: no fusing, no addmm node; the learner's rule never runs, as in eager.)"""
    plain = _grads(loop_sum)
    with mock.patch.object(AddMM, "backward_split", _tripled_left_split(AddMM)):
        _, during = _replayed(loop_sum, batch=False)
    for got in during:
        _same_bits(got, plain)


# ---- 1. a learner's split rule and batching -----------------------------------------------
def _tripled_left_split(op):
    split = op.__dict__["backward_split"].__func__

    def tripled(g, out):
        found = split(g, out)
        if found is None:
            return None
        grads, left, right = found
        return grads, 3 * left, right
    return staticmethod(tripled)


def test_bug_batched_replay_runs_a_learners_addmm_split_rule():
    """AddMM.backward_split replaced by a learner's (the weight's gradient 3x): eager mode
    runs no addmm in loop_sum (h @ w and + are two nodes), so its gradients are the plain
    ones. Batched replay fuses each step's h @ w + x_t u into an AddMM node
    (_Graph.fuse_products) because as_declared(AddMM) asks only forward and backward, and
    runs the learner's split rule on it: w's gradient comes out ~3x."""
    plain = _grads(loop_sum)
    with mock.patch.object(AddMM, "backward_split", _tripled_left_split(AddMM)):
        eager = _grads(loop_sum)
        _, during = _replayed(loop_sum, batch=True)
    _same_bits(eager, plain)
    for got in during:
        _close(got, eager)


def _clipped_right_split(op, most=0.5):
    """op's split rule with each use's right factor (its g) clipped to norm `most`: a
    learner's per-product clipping, nonlinear in g."""
    split = op.__dict__["backward_split"].__func__

    def clipped(g, out):
        found = split(g, out)
        if found is None:
            return None
        grads, left, right = found
        return grads, left, right * min(1.0, most / max(np.linalg.norm(right), 1e-300))
    return staticmethod(clipped)


def test_bug_batched_replay_runs_a_learners_matmul_split_rule_once_on_stacked_steps():
    """MatMul.backward_split replaced by a learner's clipping each product's g to norm 0.5:
    eager mode runs it once per product (x_t @ u, h @ w, h @ v). Batched replay (as_declared
    asks forward and backward only) groups the x_t @ u and the h_t @ v into products on
    stacked operands, running the learner's rule once on each (one clip of the stacked g),
    and fuses each h @ w into an AddMM node whose declared split rule runs instead (no clip
    at all: w's gradient is the plain one, far from eager mode's)."""
    with mock.patch.object(MatMul, "backward_split", _clipped_right_split(MatMul)):
        eager = _grads(loop_sum)
        _, unbatched = _replayed(loop_sum, batch=False)
        _, batched = _replayed(loop_sum, batch=True)
    for got in unbatched:
        _same_bits(got, eager)
    for got in batched:
        _close(got, eager)


# ---- 2. repeats merged whatever their rule --------------------------------------------------
def loop_transposed(xs, u, w, v):
    """w.T written inside the loop: one transpose node per step, which batching merges."""
    h = ag.zeros((B, H), dtype=np.float64)
    loss = 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ u + h @ w.T)
        loss = loss + (h @ v).sum()
    return loss


def test_bug_batched_replay_merges_repeats_of_an_op_whose_rule_is_replaced():
    """Transpose's rule replaced by a learner's that clips its gradient to [-0.05, 0.05]:
    eager mode runs it once per step's w.T and adds the clipped results. Batched replay
    merges the repeated w.T nodes into one (batch_kinds.merge_repeats, which asks no op
    whether it is as declared) and clips the summed gradient once: w's gradient differs."""
    rule = Transpose.backward

    def clipped(g, out, xp):
        return tuple(None if r is None else np.clip(r, -0.05, 0.05) for r in rule(g, out, xp))

    with mock.patch.object(Transpose, "backward", staticmethod(clipped)):
        eager = _grads(loop_transposed)
        _, unbatched = _replayed(loop_transposed, batch=False)
        _, batched = _replayed(loop_transposed, batch=True)
    for got in unbatched:
        _same_bits(got, eager)
    for got in batched:
        _close(got, eager)


# ---- 3. a declared rule that calls a replaced one --------------------------------------------
def test_bug_batched_replay_runs_a_replaced_softmax_cross_entropy_rule_eager_never_runs():
    """SoftmaxCrossEntropy.backward tripled. Eager mode's per-step means have 1-D targets,
    whose branch of MeanSoftmaxCrossEntropy.backward computes the gradient itself: the
    replaced rule never runs, the gradients are the plain ones. Batched replay groups the
    steps' means (as_declared(MeanSoftmaxCrossEntropy) is True: its own rule is in place);
    the stacked node has 2-D targets, whose branch calls SoftmaxCrossEntropy.backward, the
    replaced rule: v's and w's gradients come out 3x."""
    plain = _grads(loop_cross_entropy)
    with mock.patch.object(SoftmaxCrossEntropy, "backward", _scaled(SoftmaxCrossEntropy)):
        eager = _grads(loop_cross_entropy)
        _, unbatched = _replayed(loop_cross_entropy, batch=False)
        _, batched = _replayed(loop_cross_entropy, batch=True)
    _same_bits(eager, plain)
    for got in unbatched:
        _same_bits(got, eager)
    for got in batched:
        _close(got, eager)


# ---- 4. and 5. a learner's backward_into --------------------------------------------------------
def _tripled_into():
    into = GetItem.__dict__["backward_into"].__func__

    def tripled(g, out, buf):
        into(3 * g, out, buf)
    return staticmethod(tripled)


def loop_rows(xs, u, w, v):
    """loop_sum over p = xs * 1.0, a node: its rows p[t] go through backward_into."""
    return loop_sum(xs * 1.0, u, w, v)


def test_bug_batched_replay_skips_a_learners_backward_into(batch=True):
    """GetItem.backward_into replaced by a learner's (3x): eager mode runs it for each p[t]
    (the sparse fast path), so xs gets 3x its gradient. Batching goes on
    (as_declared(GetItem) asks only forward and backward): the six p[t] @ u become one
    product of p reshaped, whose rows the Builder's extractions hand on as ROW steps
    (replay_sweep._row_extractions accepts them: it compares u._op.backward_into with
    GetItem.backward_into, i.e. the replaced rule with itself). The learner's rule never
    runs: xs's gradient is 1x. (Unbatched replay runs it: the test after this one.)"""
    plain = _grads(loop_rows)
    with mock.patch.object(GetItem, "backward_into", _tripled_into()):
        eager = _grads(loop_rows)
        _, during = _replayed(loop_rows, batch)
    np.testing.assert_allclose(eager[0], 3 * plain[0], rtol=1e-9, atol=1e-12)
    for got in during:
        (_close if batch else _same_bits)(got, eager)


def test_unbatched_replay_runs_a_learners_backward_into():
    test_bug_batched_replay_skips_a_learners_backward_into(batch=False)


def test_bug_backward_into_set_to_none_after_confirm_crashes_replay():
    """mock.patch.object(GetItem, 'backward_into', None) (the "no capability" value, which
    eager mode now follows by running the rule) after the plan was confirmed: the plan is not
    recorded again (replay_compare.functions_of watches forward, backward, backward_split,
    not backward_into), its SPARSE step calls op.backward_into(...): TypeError 'NoneType'
    object is not callable in the replayed backward."""
    plain = _grads(loop_rows)
    step, _ = _replayed(loop_rows, batch=False)
    with mock.patch.object(GetItem, "backward_into", None):
        eager = _grads(loop_rows)
        with warnings.catch_warnings():
            _quiet()
            got = _grads(step)
    _close(eager, plain)
    _same_bits(got, eager)


# ---- 6. a rule replaced between a replayed call's forward and its backward ---------------------
@pytest.mark.parametrize("batch", [True, False])
def test_bug_a_rule_replaced_after_a_replayed_forward_is_not_run_by_its_backward(batch):
    """loss = step(...); then Tanh's rule tripled (with mock.patch around loss.backward(), a
    natural way to try one's rule); eager mode's backward runs the rule in place then
    (the sweep looks it up per node). The replayed backward ran the plan's generated code,
    which inlines Tanh's old text: the old rule ran, silently (Plan.changed was asked only
    when a call starts). Fixed: the replayed backward refuses, naming the op and saying to
    call the function again (a replayed call has no eager graph to run the new rule on),
    before it writes any .grad; with the rule put back the same result's backward runs."""
    step, _ = _replayed(loop_sum, batch, calls=3)
    leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in (XS, U, W, V)]
    eager_leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in (XS, U, W, V)]
    out, eager_out = step(*leaves), loop_sum(*eager_leaves)
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
        eager_out.backward()
        with pytest.raises(RuntimeError, match="op 'tanh' was replaced after this replayed "
                                               "call ran its forward.*Call the function again"):
            out.backward()
    assert all(t.grad is None for t in leaves)
    out.backward()  # the rule put back: the plain gradients
    plain_leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in (XS, U, W, V)]
    loop_sum(*plain_leaves).backward()
    got = [t.grad.numpy() for t in leaves]
    want = [t.grad.numpy() for t in plain_leaves]
    (_close if batch else _same_bits)(got, want)
    # and the next call records anew with the rule in place, giving eager mode's gradients
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)):
        again = [ag.Tensor(a.copy(), requires_grad=True) for a in (XS, U, W, V)]
        with pytest.warns(ag.ReplayWarning, match="replaced since it was recorded"):
            step(*again).backward()
    (_close if batch else _same_bits)([t.grad.numpy() for t in again],
                                      [t.grad.numpy() for t in eager_leaves])


# ---- 7. a subclass made while a capability is taken away ----------------------------------------
@pytest.mark.parametrize("op,capability", [(GetItem, "backward_into"),
                                           (Linear, "backward_split")],
                         ids=["getitem", "linear"])
def test_bug_a_subclass_made_while_a_capability_is_none_loses_its_fast_path_for_good(
        op, capability):
    """class S(op) made while op.backward_into / backward_split is mock-patched to None:
    __init_subclass__ sets S.fast_path = None (and, for the split op, S.sweep_step = None)
    from the capability in place, not the declared one. Once the capability is back, S
    inherits exactly op's rule and capability, but has neither fast path for good (eager
    mode runs the general rule; replay's fast_path_serves(S) is False: no SPARSE/SPLIT)."""
    with mock.patch.object(op, capability, None):
        class S(op):
            name = None
    assert getattr(S, capability) is getattr(op, capability) is not None
    assert S.backward is op.backward
    assert op.fast_backward is not None
    assert S.fast_backward is not None  # fails: None
    assert fast_path_serves(S)


# ---- reading: what as_declared, fast_path_serves and declared say ------------------------------
def test_declared_of_a_class_made_while_its_parents_rule_and_kernel_are_replaced():
    with mock.patch.object(Tanh, "backward", _scaled(Tanh)), \
            mock.patch.object(Tanh, "forward", staticmethod(lambda out, x: np.tanh(x))):
        class S(Tanh):
            name = None
        assert not as_declared(S)
    assert S.declared["backward"] is Tanh.declared["backward"] is Tanh.backward
    assert S.declared["forward"] is Tanh.forward and as_declared(S)
    assert S.eager_step is not None or S.sweep_step[1] is not None

    class Own(Op):
        name = None
        inputs, saves, view, rule, hazard, memory = ("x",), ("x",), False, "-", None, Memory()
        forward = staticmethod(lambda out, x: x)
        backward = staticmethod(lambda g, out, xp: (g,))

    assert as_declared(Own) and not fast_path_serves(Own)
