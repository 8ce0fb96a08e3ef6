"""One truth per op: every registered op class declares what its rule saves, whether it is a
view, its rule text, its hazard check and its memory, and the engine keeps to it.

The promise checked here, for every registered op: after the forward, change in place any
tensor its rule could read (each input, the output, each non-differentiated argument such as
a target, a condition or an index). The backward then raises, or gives the gradient of the
values the forward saw. Never a silently different gradient.
"""
import ast
import pathlib
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd_core as ag
import nn
from autograd_core.function import DECLARATIONS, Memory, Op
from tests.autograd_core import test_ops_table, test_ops_table_shapes

CASES = test_ops_table.CASES + test_ops_table_shapes.CASES
ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---- the declarations --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ag.ops_registry))
def test_every_op_declares_everything(name):
    op = ag.ops_registry[name]
    roles = op.inputs
    assert isinstance(roles, tuple) and roles and all(isinstance(r, str) for r in roles)
    assert isinstance(op.saves, tuple) and all(isinstance(r, str) for r in op.saves)
    constants = [r for r in op.saves if r in op.arguments]
    assert all(r in roles or r in op.arguments or r == "output" for r in op.saves)
    # non-differentiated arguments come first in `_saved`, in the declared order
    assert op.saves[:len(constants)] == tuple(constants), op.saves
    assert op.constants == len(constants)
    assert op.reads_output == ("output" in op.saves)
    assert isinstance(op.view, bool)
    assert isinstance(op.rule, str) and op.rule.strip()
    assert op.hazard is None or callable(op.hazard)
    assert isinstance(op.memory, Memory)
    assert all(0 <= k < len(roles) for k in op.memory.same)
    assert callable(op.forward)  # what ag.replay runs


@pytest.mark.parametrize("missing", DECLARATIONS)
def test_an_op_that_leaves_a_declaration_out_is_refused(missing):
    body = {"inputs": ("x",), "saves": ("x",), "view": False, "rule": "g", "hazard": None,
            "memory": Memory(), "name": f"test_incomplete_{missing}",
            "forward": staticmethod(lambda out, x: x),
            "backward": staticmethod(lambda g, out, xp: (g,))}
    del body[missing]
    with pytest.raises(TypeError, match=f"must declare {missing}"):
        type("Incomplete", (Op,), body)
    assert f"test_incomplete_{missing}" not in ag.ops_registry


def _op_name_collections(tree, names):
    """Line numbers of tuple, list, set or dict literals holding two or more op names, apart
    from an op class's role names and a module's `__all__`."""
    skipped = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id in ("inputs", "saves", "__all__")
                       for t in node.targets)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        items = (node.keys if isinstance(node, ast.Dict) else node.elts
                 if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else ())
        if sum(isinstance(i, ast.Constant) and i.value in names for i in items) >= 2:
            yield node.lineno


def _op_name_lookups(tree):
    """Line numbers where an op's name is looked up in a collection (`t.op.name in (...)`,
    `table[t.op.name]`): knowledge about ops kept outside their classes."""
    def is_op_name(node):
        return (isinstance(node, ast.Attribute) and node.attr == "name"
                and isinstance(node.value, ast.Attribute) and node.value.attr in ("op", "_op"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and is_op_name(node.left) and any(
                isinstance(o, (ast.In, ast.NotIn)) for o in node.ops):
            yield node.lineno
        if isinstance(node, ast.Subscript) and is_op_name(node.slice):
            yield node.lineno
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "get" and node.args and is_op_name(node.args[0]):
            yield node.lineno


def test_no_list_keyed_by_op_names_outside_the_op_classes():
    """What the engine knows about an op is in its class: the engine keeps no tuple, list,
    set or dict of op names, and neither it nor nn looks an op's name up in one."""
    names = set(ag.ops_registry)
    found = []
    for path in sorted((ROOT / "autograd_core").rglob("*.py")):
        tree = ast.parse(path.read_text())
        found += [f"{path.relative_to(ROOT)}:{n} op names" for n in
                  _op_name_collections(tree, names)]
    for path in sorted((ROOT / "autograd_core").rglob("*.py")) + sorted(
            (ROOT / "nn").rglob("*.py")):
        found += [f"{path.relative_to(ROOT)}:{n} op name lookup" for n in
                  _op_name_lookups(ast.parse(path.read_text()))]
    assert not found, "\n".join(found)


def test_views_share_the_version_of_their_input():
    """An op declared a view makes its output share its input's version counter (a change
    through one is seen through the other); the others do not."""
    x = ag.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    views = {"reshape": lambda t: t.reshape(3, 2), "transpose": lambda t: t.T,
             "getitem": lambda t: t[0], "broadcast_to": lambda t: ag.broadcast_to(t, (4, 2, 3))}
    assert {n for n, op in ag.ops_registry.items() if op.view} == set(views)
    for name, make in views.items():
        y = make(x)
        assert y.op.name == name
        before = y.version
        with ag.no_grad():
            x.add_(0.0)
        assert y.version > before, name
    y = ag.exp(x)
    before = y.version
    with ag.no_grad():
        x.add_(0.0)
    assert y.version == before


# ---- in-place changes after the forward: every input and output --------------------------------
def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _loss(outs, weights):
    loss = None
    for o, w in zip(outs, weights):
        term = (o * w).sum()
        loss = term if loss is None else loss + term
    return loss


def _gradients(ex, weights, change=None):
    """Leaves' gradients of sum(w * out); `change(tensors)` runs between forward and
    backward. Returns the gradients, or the RuntimeError the backward raised."""
    leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in ex.arrays]
    outs = _as_tuple(ex.fn(*leaves))
    loss = _loss(outs, weights)
    if change is not None:
        with ag.no_grad():
            change(leaves, outs)
    try:
        loss.backward()
    except RuntimeError as exc:
        return exc
    return [None if t.grad is None else t.grad.numpy().copy() for t in leaves]


def _targets(ex):
    """(label, pick) for every tensor a rule of the example's graph could read: each node's
    inputs and each node itself, found by position in the graph so the pick works on a
    fresh forward."""
    leaves = [ag.Tensor(a.copy(), requires_grad=True) for a in ex.arrays]
    outs = _as_tuple(ex.fn(*leaves))
    graph = ag.walk_graph(list(outs))
    picks = []
    for k, t in enumerate(graph):
        if t.is_leaf:
            continue
        picks.append((f"output of {t.op.name} (node {k})", ("node", k)))
        for j, inp in enumerate(t.inputs):
            picks.append((f"input {j} of {t.op.name} (node {k})", ("input", k, j)))
    return picks


def _pick(leaves, outs, where):
    t = ag.walk_graph(list(outs))[where[1]]
    return t if where[0] == "node" else t.inputs[where[2]]


def _disturb(t):
    if t.dtype.kind != "f" or not t.data.flags.writeable or t.size == 0:
        return False  # a read-only view (broadcast_to) cannot be changed in place
    t.mul_(-1.5)
    t.add_(0.25)
    return True


@pytest.mark.parametrize("case", CASES, ids=repr)
@settings(max_examples=3)
@given(data=st.data())
def test_a_changed_input_or_output_raises_or_leaves_the_gradient_as_it_was(case, data):
    ex = data.draw(case.strategy, label="example")
    rng = np.random.default_rng(0)
    outs = _as_tuple(ex.fn(*[ag.Tensor(a) for a in ex.arrays]))
    weights = [rng.standard_normal(o.shape) for o in outs]
    reference = _gradients(ex, weights)
    for label, where in _targets(ex):
        changed = []

        def change(leaves, outs):
            changed.append(_disturb(_pick(leaves, outs, where)))

        result = _gradients(ex, weights, change)
        if isinstance(result, RuntimeError):
            assert "modified in place" in str(result), f"{ex}: {label}: {result}"
            continue
        for got, want in zip(result, reference):
            if want is None:
                assert got is None
            else:
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12,
                                           err_msg=f"{ex}: after changing the {label}")


def test_every_op_is_reached_by_the_in_place_test():
    covered = {op for c in CASES for op in c.ops}
    # the engine's own ops (a README example run earlier in the session registers one more)
    assert covered == {name for name, cls in ag.ops_registry.items()
                       if cls.__module__.startswith("autograd_core.")}


# ---- non-differentiated arguments: targets, conditions, indices, bounds -----------------------
def _constant_cases():
    """op name -> (forward(leaf, constant) -> output, leaf array, constant, change): the
    constant is a tensor (or an array) the rule reads without differentiating it."""
    x = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    return {
        "where": (lambda a, c: ag.where(c, a, 0.0), x, ag.Tensor(x > 0),
                  lambda c: c.__setitem__(slice(None), True)),
        "getitem": (lambda a, c: a[c], x, ag.Tensor(np.array([0, 2])),
                    lambda c: c.add_(1)),
        "scatter": (lambda a, c: ag.scatter(a, (6, 3), c), x, ag.Tensor(np.array([0, 2, 2, 5])),
                    lambda c: c.add_(1)),
        "softmax_cross_entropy": (lambda a, c: ag.softmax_cross_entropy(a, c), x,
                                  ag.Tensor(np.array([0, 1, 2, 0])),
                                  lambda c: c.fill_(2)),
        "mean_softmax_cross_entropy": (lambda a, c: ag.mean_softmax_cross_entropy(a, c), x,
                                       ag.Tensor(np.array([0, 1, 2, 0])),
                                       lambda c: c.fill_(2)),
        "clip": (lambda a, c: ag.clip(a, c, None), x, np.full((4, 3), -0.5),
                 lambda c: c.fill(0.5)),
    }


def test_every_op_with_a_non_differentiated_argument_has_a_case():
    with_constants = {n for n, op in ag.ops_registry.items() if op.constants}
    assert with_constants == set(_constant_cases())


@pytest.mark.parametrize("name", sorted(_constant_cases()))
def test_a_changed_non_differentiated_argument_does_not_change_the_gradient(name):
    forward, x, constant, change = _constant_cases()[name]
    w = np.random.default_rng(1).standard_normal(forward(ag.Tensor(x), constant).shape)

    def gradient(changed):
        a = ag.Tensor(x.copy(), requires_grad=True)
        c = constant if not changed else _fresh(constant)
        loss = (forward(a, c) * w).sum()
        if changed:
            with ag.no_grad():
                change(c)
        loss.backward()
        return a.grad.numpy()

    np.testing.assert_array_equal(gradient(changed=True), gradient(changed=False))


def _fresh(constant):
    return ag.Tensor(constant.numpy().copy()) if isinstance(constant, ag.Tensor) \
        else constant.copy()


def test_the_cases_of_the_issue():
    """What was silently wrong before: cross_entropy's targets, where's condition, an index
    tensor, and the output of max and pow changed after the forward."""
    logits = ag.Tensor(np.linspace(-1, 1, 12).reshape(4, 3), requires_grad=True)
    tgt = ag.Tensor(np.array([0, 1, 2, 0]))
    loss = nn.cross_entropy(logits, tgt)
    with ag.no_grad():
        tgt[:] = 2
    loss.backward()
    assert list(logits.grad.numpy().argmin(axis=1)) == [0, 1, 2, 0]

    a = ag.Tensor(np.arange(6.0), requires_grad=True)
    idx = ag.Tensor(np.array([0, 1]))
    y = a[idx].sum()
    idx.add_(2)
    y.backward()
    assert a.grad.numpy().tolist() == [1, 1, 0, 0, 0, 0]

    for make in (lambda b: b.max(), lambda b: b.min(), lambda b: b ** ag.Tensor(2.0)):
        b = ag.Tensor(np.array([1.0, 5.0, 3.0]), requires_grad=True)
        y = make(b)
        with ag.no_grad():
            y[...] = 7
        with pytest.raises(RuntimeError, match="modified in place"):
            y.sum().backward()


# ---- two threads, one graph --------------------------------------------------------------------
@pytest.mark.parametrize("trial", range(20))
def test_two_threads_sweeping_one_graph_one_wins_the_other_gets_the_freed_graph_error(trial):
    rng = np.random.default_rng(trial)
    model = nn.RNN(4, 16, dtype=np.float64, rng=trial)
    out, _ = model(rng.standard_normal((30, 2, 4)))
    loss = (out * out).sum()
    barrier, results = threading.Barrier(2), []

    def sweep():
        barrier.wait()
        try:
            loss.backward()
            results.append("ok")
        except RuntimeError as exc:
            results.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1, results
    (error,) = [r for r in results if r != "ok"]
    assert "already freed" in str(error)
    solo = nn.RNN(4, 16, dtype=np.float64, rng=trial)
    out, _ = solo(np.random.default_rng(trial).standard_normal((30, 2, 4)))
    (out * out).sum().backward()
    for (name, p), q in zip(model.named_parameters(), solo.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12, err_msg=name)


# ---- the tools that watch the sweep use only public names ---------------------------------------
PRIVATE_TENSOR_ATTRIBUTES = {"_data", "_op", "_inputs", "_saved", "_seq", "_step", "_version",
                             "_hooks", "_retain", "_epoch"}
WATCHERS = ["anomaly.py", "hazards.py", "observers.py", "trace.py", "peak_memory.py", "stats.py"]


def _private_uses(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_TENSOR_ATTRIBUTES and not (
                isinstance(node.value, ast.Name) and node.value.id == "self"):  # its own
            yield f"{node.lineno}: .{node.attr}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autograd_core"):
            for alias in node.names:
                if alias.name.startswith("_") or node.module != "autograd_core":
                    yield f"{node.lineno}: from {node.module} import {alias.name}"


@pytest.mark.parametrize("path", [ROOT / "autograd_core" / name for name in WATCHERS]
                         + sorted((ROOT / "nn").rglob("*.py")), ids=lambda p: p.name)
def test_watchers_and_nn_use_only_public_names(path):
    """Anomaly mode, the trace, the memory replay, graph_stats and all of nn read tensors through
    their public attributes and import only autograd_core's public names."""
    found = [u for u in _private_uses(path)
             if not (path.parent.name == "autograd_core" and "import" in u)]
    assert not found, f"{path.relative_to(ROOT)}: " + ", ".join(found)
