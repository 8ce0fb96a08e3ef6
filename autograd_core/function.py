"""How an operation records itself in the graph.

A tensor produced by a differentiable op *is* the graph node: it keeps the op (a class holding
the derivative rule), its input tensors and the few extra values the rule needs. Nothing points
back from an input to its output, so the graph holds no reference cycles and is freed by plain
reference counting once the last output is dropped or a backward releases it.
"""
import itertools

from numpy import asarray, ndarray

from .anomaly import remember
from .grad_mode import _state
from .op_texts import DESCRIBES, check_class_text, check_class_texts
from .tensor import Tensor, fill

_new = object.__new__

# One clock for creation order and in-place writes. An output is always stamped after its
# inputs, so sorting by stamp is a topological order; an input whose `_version` is newer than
# the output's stamp was modified in place after it was used.
clock = itertools.count(1)
# The stamp of the latest in-place change anywhere: a backward skips the per-input version
# checks of every node recorded after it.
last_inplace = 0


def stamp_inplace():
    """A new version stamp for a tensor modified in place."""
    global last_inplace
    last_inplace = next(clock)
    return last_inplace

REGISTRY = {}

_UNDECLARED = object()
# What every registered op class must say about itself (see Op).
DECLARATIONS = ("inputs", "saves", "view", "rule", "hazard", "memory", "forward")


class Memory:
    """What an op's derivative rule allocates, for the backward-memory replay (peak_memory):
    - `same`: input positions handed the incoming gradient itself (no new buffer) when the
      input has the output's shape;
    - `view`: every contribution is a view of the incoming gradient (slices, reshapes);
    - `temporaries`: output-sized arrays the rule holds beside its result while it runs.
    Anything else is a new buffer of the input's size per contribution."""

    __slots__ = ("same", "view", "temporaries")

    def __init__(self, same=(), view=False, temporaries=0):
        self.same, self.view, self.temporaries = tuple(same), bool(view), int(temporaries)

    def __repr__(self):
        return f"Memory(same={self.same}, view={self.view}, temporaries={self.temporaries})"


class _OpClass(type):
    """The class of op classes: keeps what the sweep runs for a node of the op (`eager_step`,
    `fast_backward`) in line with the rule they were made for, whenever the rule, the step,
    the fast path or the bases are set or deleted on the class or an op parent (a learner's
    rule put in place, a test's mock), so that the sweep asks one attribute per node instead
    of comparing the rule each time."""

    def __setattr__(cls, name, value):
        if name in DESCRIBES and value is not None and not callable(value):
            check_class_text(cls, name, value)  # as when the class is defined, naming the op
        type.__setattr__(cls, name, value)
        if name in _SYNCED_BY:
            _sync_fast_paths(cls)

    def __delattr__(cls, name):
        type.__delattr__(cls, name)
        if name in _SYNCED_BY:
            _sync_fast_paths(cls)


_SYNCED_BY = ("backward", "sweep_step", "fast_path", "__bases__")


def _sync_fast_paths(cls):
    """`eager_step` and `fast_backward` of `cls` and every class below it: the step of
    `sweep_step` and the function of `fast_path` while the rule each was made for is the
    class's `backward`, else None (the general path runs the rule). A class with a plain
    (non-op) class among its parents, a mixin, gets them guarded: a rule put on the mixin
    reaches the class without passing through here."""
    todo = [cls]
    while todo:
        c = todo.pop()
        todo.extend(type.__subclasses__(c))
        rule = getattr(c, "backward", None)
        made, fast = getattr(c, "sweep_step", None), getattr(c, "fast_path", None)
        step = made[1] if made is not None and made[0] is rule else None
        fast = fast[1] if fast is not None and fast[0] is rule else None
        if any(b is not object and not isinstance(b, _OpClass) for b in c.__mro__):
            step = None if step is None else _guarded_step(step, rule)
            fast = None if fast is None else _guarded_fast(fast, rule)
        type.__setattr__(c, "eager_step", step)
        type.__setattr__(c, "fast_backward", fast)


def _guarded_step(step, rule):
    def guarded(t, g, acc, owned, sweep):  # False: the sweep runs the rule in place now
        return step(t, g, acc, owned, sweep) if t._op.backward is rule else False
    return guarded


def _guarded_fast(fast, rule):
    def guarded(op, g, t, sweep):
        return fast(op, g, t, sweep) if op.backward is rule else op.backward(g, t, sweep.xp)
    return guarded


class Op(metaclass=_OpClass):
    """A differentiable operation: one class says everything about it.

    Declarations (a registered op that leaves one out is refused when its class is made):
    - `name`: registers the op (`ag.ops_registry`).
    - `inputs`: the role of each input tensor, in order, e.g. ("x", "weight", "bias");
      ("*tensors",) for any number.
    - `saves`: what the derivative reads, by role: input roles, "output" (its own value), and
      roles of non-differentiated arguments (targets, conditions, indices) listed in
      `arguments`, which the forward passes to `record` first in `saved`, in this order, and
      which are copied there. The engine checks exactly the declared inputs and output for in-place
      changes before a backward (as PyTorch's save_for_backward), so a rule never reads a
      value other than the one its forward saw.
    - `view`: True when the output may share the first input's memory (they then share one
      version counter: a change through either is a change of both).
    - `rule`: the derivative in words, as the trace prints it.
    - `hazard`: None, or a function(out) -> message when the op received values about to make
      an Inf/NaN or stop the gradient (anomaly mode's warn_hazards).
    - `memory`: a `Memory`, what the rule allocates (the backward-memory replay).
    - `forward(out, *arrays)`: the output computed again from its inputs' arrays, for
      `ag.replay`; `out` is the recorded node (its `_saved`, and the shape and dtype its
      output had). It runs the same numpy calls as the op's function, without the checks;
      an op whose saved values depend on the inputs' values writes this call's into
      `out._saved`.

    `backward(g, out, xp)` returns one gradient per input (None where an input gets none).
    `out` is the output tensor: its `_inputs` and `_saved` are what the forward kept. Rules are
    written once for two array types: `xp` is `ArrayMath` (numpy arrays, the fast path) or
    `TensorMath` (tensors, recorded, for `create_graph=True`); `xp.val(t)` gives the value of
    a tensor in the current kind. Gradients may come back in a broadcast shape: the engine
    sums them back to each input's shape.

    Optional capabilities (fast paths the sweep uses when nothing watches it):
    - `backward_into(g, out, buf)`: for one input with a sparse gradient (indexing), add the
      input's gradient into `buf` in place.
    - `backward_split(g, out)` with `split_input`: the input at `split_input` is a matrix W
      with gradient left^T @ right (left and right 2-D); return (the inputs' gradients with
      None for W, left, right), or None where it does not apply. The sweep keeps the (left, right) pairs of
      every use of W and multiplies once, stacked, when it reaches W (a W that no other use
      reads gets left^T @ right at once).
    - `batch`: how replay may run several copies of the op as one call on stacked operands
      (see batching.py for the kinds), or None.
    - `layout`: positions of the inputs whose memory order the forward kernel's speed depends
      on (a matrix product's operands); replay may hand the kernel a copy of one in another
      order (see replay_layout.py).
    - `inline_forward`, `inline_backward`, `inline_split`: the kernel, the rule and the split
      rule as Python expressions that replay's generated code runs in place of the calls
      (replay_codegen.py): `{x0}`, `{x1}`.. stand for the inputs' arrays, `{out}` for the
      node, `{g}` for the incoming gradient (an array), and `np`, `product` (linalg),
      `one` (`one[dtype]`: 1 of that dtype) and `exact` (`exact[dtype][c]`: the number c
      as an array of that dtype where it holds c exactly; see exact_scalars.py) may be
      named. `inline_forward` is one expression; `inline_backward` one per input (None
      where the rule gives None); `inline_split` is (those, left, right). Each is the text,
      or a function of the recorded node (and, for the kernel, its inputs' arrays) that
      returns it, or None where that node needs the call (a dtype or shape the text does not
      cover). The text makes the same numpy calls in the same order as the function: the
      same bits (tests hold every op that declares one to it). A subclass that brings another
      forward or rule (its own, or a mixin's) does not inherit its parent's text for it, and
      a function put in place of the one a text was declared for leaves the text unused.
      The eager sweep runs an op whose rule is text through one generated step
      (sweep_steps.py); an op with a split rule gets one where `inline_split(None)` gives
      texts for any node of the op (each input's gradient then asked for as it runs; the
      left and right texts name only inputs up to the weight), or None where it has none.
      An elementwise op (`batch = "elementwise"`) whose one rule reads
      `"{g} * (F)"`, F computed from `{out}._data` or `{x0}` alone, lets a replayed loop
      compute F for all its steps at once (replay_texts.factor).
    """

    name = None
    inputs = saves = view = rule = hazard = memory = forward = _UNDECLARED
    arguments = ()  # roles of the non-differentiated arguments `saves` may name
    backward_into = None
    backward_split = None
    split_input = None
    batch = None
    layout = ()
    inline_forward = inline_backward = inline_split = None
    # Derived from the declarations when the class is made (never set by hand):
    checked_inputs = ()  # input positions whose versions a backward checks; None: all
    reads_output = False
    constants = 0  # leading entries of `_saved` that are non-differentiated arguments
    declared = {}  # forward, backward and its fast paths as the class declared them (its op
    # parent's where it brings none): what its texts and fast paths were made for, even when
    # the class is made while a parent's function is replaced (a mock, a learner's rule)
    fast_path = None  # (rule, the sweep's entry to the capability above), or None
    fast_backward = None  # fast_path's entry while its rule is `backward` (kept by _OpClass)
    described = {}  # inline text name -> the function it was declared for (see inline_text)
    sweep_step = None  # (rule, step): the sweep's step made from inline_backward (at first a
    # stand-in, _first_step, that makes it when the sweep first meets the op)
    eager_step = None  # sweep_step's step while its rule is `backward` (kept by _OpClass)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # What the class brings that its nearest op parent does not have: its own, or a
        # mixin's ahead of that parent (class T(Mixin, Tanh)).
        mro = cls.__mro__
        parent = next(c for c in mro[1:] if issubclass(c, Op))
        ahead = mro[:mro.index(parent)]

        def new(name):
            return any(name in c.__dict__ for c in ahead)

        if new("backward"):  # a new rule: inherited fast paths would bypass it
            for capability in ("backward_into", "backward_split"):
                if not new(capability):
                    setattr(cls, capability, None)
        if (new("forward") or new("backward")) and not new("batch"):
            cls.batch = None  # a new kernel or rule: how the parent batches need not hold
        if new("forward") and not new("layout"):
            cls.layout = ()  # a new kernel: its parent's need not be a product
        for text, made in DESCRIBES.items():
            if new(made) and not new(text):
                setattr(cls, text, None)  # a new kernel or rule: its parent's text is not it
        # the functions this class brings, else those its op parent was declared with (not
        # one put in the parent's place meanwhile, which is not what the texts describe)
        cls.declared = declared = {made: getattr(cls, made) if new(made)
                                   else parent.declared.get(made) for made in _DECLARED}
        declared.update((text, getattr(cls, text)) for text in DESCRIBES)  # see inline_text
        rule = declared["backward"]
        fast = (_sparse_backward if declared["backward_into"] is not None else
                _split_backward if declared["backward_split"] is not None else None)
        cls.fast_path = None if fast is None else (rule, fast)
        check_class_texts(cls)
        # a text declared here describes the function the class was declared with; an
        # inherited one the function it was declared for
        cls.described = {text: declared[made] if new(text) else parent.described.get(text)
                         for text, made in DESCRIBES.items()}
        if cls.split_input is not None:  # a split rule's step, where it has a text
            cls.sweep_step = ((rule, _first_step) if cls.inline_split is not None
                              and declared["backward_split"] is not None else None)
        elif isinstance(cls.inline_backward, tuple):
            cls.sweep_step = (cls.described["inline_backward"], _first_step)
        else:
            cls.sweep_step = None
        if cls.name is None:  # an abstract family (declarations may be partial)
            return
        missing = [d for d in DECLARATIONS if getattr(cls, d) is _UNDECLARED]
        if missing:
            raise TypeError(f"op {cls.name!r} ({cls.__name__}) must declare "
                            f"{', '.join(missing)} (see autograd_core.Op)")
        _derive_checks(cls)
        if cls.name in REGISTRY:
            raise RuntimeError(f"op {cls.name!r} registered twice")
        REGISTRY[cls.name] = cls

    def __repr__(self):
        return f"<{type(self).__name__}Backward>"

    @staticmethod
    def backward(g, out, xp):
        raise NotImplementedError


def _derive_checks(cls):
    where = f"op {cls.name!r} ({cls.__name__})"
    for what in ("inputs", "saves", "arguments"):
        value = getattr(cls, what)
        if not isinstance(value, tuple) or not all(isinstance(r, str) for r in value):
            raise TypeError(f"{where}: {what} must be a tuple of role names, got {value!r} "
                            f"(a one-role tuple needs its comma: ('x',))")
    roles, saves, arguments = cls.inputs, cls.saves, cls.arguments
    unknown = [r for r in saves if r not in roles and r not in arguments and r != "output"]
    if unknown:
        raise TypeError(f"{where}: saves names {unknown}, which is no input role {roles}, "
                        f"'output', or non-differentiated argument {arguments}")
    if not isinstance(cls.memory, Memory):
        raise TypeError(f"{where}: memory must be a Memory, got {cls.memory!r}")
    input_saves = [r for r in saves if r in roles]
    cls.reads_output = "output" in saves
    cls.constants = len([r for r in saves if r in arguments])
    variadic = any(r.startswith("*") for r in roles)
    if input_saves and (variadic or set(input_saves) == set(roles)):
        cls.checked_inputs = None  # every input
    else:
        cls.checked_inputs = tuple(sorted(roles.index(r) for r in input_saves))


# what `Op.declared` holds of each class: the functions its texts and fast paths stand for
_DECLARED = (*DESCRIBES.values(), "backward_into")
Op.declared = {made: getattr(Op, made) for made in (*_DECLARED, *DESCRIBES)}


def _first_step(t, g, acc, owned, sweep):
    """An op's sweep step until the sweep first meets the op: makes it (sweep_steps, kept as
    Op.sweep_step), then runs it; False (the op's rule runs) where it has none after all."""
    from .sweep_steps import check_learners_text, make_step  # (they read this module's texts)
    check_learners_text(t._op, t, g)  # before the step is kept
    step = make_step(t._op)
    return False if step is None else step(t, g, acc, owned, sweep)


def declared_by_package(op, name):
    """Whether the class that gives `op` its attribute `name` (its nearest in the mro) is one
    of this package's ops: its texts are held to its functions by the tests, its rules give
    two uses' sum as one use does; a learner's need not."""
    owner = next((c for c in op.__mro__ if name in c.__dict__), None)
    return owner is not None and owner.__module__.startswith(f"{__package__}.ops.")


def as_declared(op):
    """Whether `op`'s kernel, rule and fast paths are those its class was declared with, not
    functions put in place since (a learner's, a mock): replay's rewrites (batching, buffers)
    stand for the declared ones, so a node of an op that is not as declared runs as eager
    mode runs it."""
    declared = op.declared
    return all(getattr(op, made) is declared.get(made) for made in _DECLARED)


def fast_path_serves(op):
    """Whether `op`'s fast path is the sweep's entry to its backward_into or backward_split,
    made for the rule in place: one put in place since (a learner's, a mock) runs itself."""
    fast = op.fast_path
    return (fast is not None and fast[0] is op.backward
            and fast[1] in (_split_backward, _sparse_backward))


def _sparse_backward(op, g, out, sweep):
    if op.backward_into is None:  # taken away since the class was made: the rule runs
        return op.backward(g, out, sweep.xp)
    sweep.add_into(op, g, out)
    return ()


def _split_backward(op, g, out, sweep):
    weight = out._inputs[op.split_input]
    split_rule = op.backward_split  # None: taken away since the class was made
    split = split_rule(g, out) if weight.requires_grad and split_rule is not None else None
    if split is None:
        return op.backward(g, out, sweep.xp)
    grads, left, right = split
    sweep.defer(weight, left, right, out)
    return grads


def snapshot(value):
    """A copy of the arrays in a non-differentiated argument (an index may be a tuple of
    them): changing the caller's array later cannot change the gradient."""
    if type(value) is ndarray:
        return value.copy()
    if type(value) is tuple:
        return tuple(snapshot(v) for v in value)
    if type(value) is list:  # an index or bound given as a (nested) list
        return [snapshot(v) for v in value]
    return value


def record(op, data, inputs, saved=None):
    """Wrap `data` as the output of `op`; link it to `inputs` when a gradient can flow.
    An op that saves non-differentiated arguments passes them first in `saved` (a tuple);
    they are copied here (see Op.saves)."""
    if type(data) is not ndarray:  # numpy gives 0-d results as scalars
        data = asarray(data)
    mode = _state.recording  # None, or (step, anomaly): see grad_mode
    if mode is not None:
        for t in inputs:
            if t.requires_grad:
                if op.constants:
                    return _record_constants(op, data, inputs, saved)
                step, anomaly = mode
                # tensor.fill, written out: this runs once per recorded op
                out = _new(Tensor)
                out._data = data
                out.requires_grad = True
                out.grad = None
                out._op = op
                out._inputs = inputs
                out._saved = saved
                out._seq = next(clock)
                out._version = 0
                out.name = None
                out._hooks = None
                out._step = step
                out._epoch = None
                if anomaly:
                    remember(out)
                return out
    return fill(_new(Tensor), data)


def _record_constants(op, data, inputs, saved):
    """record() for an op that saves non-differentiated arguments: they are copied, and a
    recording ag.replay is shown the originals (to bind them to the function's arguments)."""
    count = op.constants
    if type(saved) is not tuple or len(saved) < count:
        raise TypeError(f"record: op {op.name!r} saves {count} non-differentiated argument(s) "
                        f"first in a tuple `saved`, got {type(saved).__name__}")
    copied = ((snapshot(saved[0]),) + saved[1:] if count == 1  # (the common case: no loop)
              else tuple(snapshot(v) for v in saved[:count]) + saved[count:])
    out = fill(_new(Tensor), data, True, op, inputs, copied, next(clock), _state.step)
    if _state.anomaly:
        remember(out)
    if _state.recorder is not None:
        _state.recorder.saw_constants(out, saved)
    return out


def as_tensor(value):
    """A tensor for `value`; tensors pass through unchanged (no copy)."""
    return value if isinstance(value, Tensor) else Tensor(value)
