"""One recorded call made runnable again (ag.replay, replayer.py): shells of the graph's
nodes in creation order, where each leaf's array comes from, the constants bound to the
arguments, the checks that a later call still matches the recording, and the generated forward
and backward that run it."""
import threading
import weakref
from operator import attrgetter, is_

import numpy as np

from . import batching, replay_buffers, replay_codegen, replay_layout, replay_sweep
from . import replay_compare as compare
from .replay_step import ReplayedStep
from .function import record
from .replay_arguments import Arg, Refused, argument_at, bind, flatten, rebuild
from .graph import walk
from .tensor import Tensor, _new, fill
from .versions import version_of, versions_of


class Plan:
    """One recorded graph, ready to run again: shells of its nodes in creation order, where
    each leaf's array comes from, and the constants bound to arguments."""

    def __init__(self, out, args, probed, recorder):
        if recorder.value_read:
            raise Refused(f"the function read a value of the graph ({recorder.value_read}): "
                           f"its control flow may depend on values")
        if not isinstance(out, Tensor) or out._op is None or not out.requires_grad:
            raise Refused("its result is not one tensor computed from something that "
                           "requires grad")
        places = {}  # id(array or tensor) -> argument path
        for path, a in flatten(probed):
            places.setdefault(id(a), path)
            if isinstance(a, Tensor):
                places.setdefault(id(a._data), path)
        for path, a in flatten(args):
            places.setdefault(id(a._data if isinstance(a, Tensor) else a), path)
        self.arg_tensors = [(path, a) for path, a in flatten(args)
                            if isinstance(a, Tensor) and a.requires_grad]
        # (array, path) of every argument: a saved constant inside one is bound to it
        self.arg_arrays = [(a._data if isinstance(a, Tensor) else a, path)
                           for path, a in flatten(args)]
        shells, self.program, self.sources, self.bound = {}, [], [], []
        self.outside, self._watching = [], []  # see _watch
        self.structure, self.index = [], {}  # what differs() compares; shell -> position
        self.grad_leaves = []  # (shell, argument path or the tensor itself)
        for t in reversed(walk((out,), "replay")):  # oldest first, leaves before nodes
            shells[t] = self._shell(t, shells, places, recorder)
        self.root = shells[out]
        self._watch_outside()
        # the leaves whose array is a tensor's (parameters, closures, tensors made inside):
        # checked and read together each call, in C loops (a long unroll has thousands)
        self.tensor_shells = [s for s, src in self.sources if isinstance(src, Tensor)]
        self.tensor_sources = [src for s, src in self.sources if isinstance(src, Tensor)]
        self.arg_sources = [(s, src) for s, src in self.sources if not isinstance(src, Tensor)]
        self.masks = compare.masks(self.bound)  # see changed
        self.functions = compare.functions(self.program)  # see changed
        if not self.root.requires_grad:
            raise Refused("its result does not depend on anything that requires grad")
        self.batched = False  # set once batching.rewrite changed the graph
        self._compile_backward([shells[t] for t in walk((out,), "replay") if t._op is not None])
        self.forward_blocks = self.backward_blocks = None  # see _generate
        # where the generated forward writes states (replay_buffers), and whether this
        # call's did (the loop below writes none: the backward's stacks are then made)
        self.placement, self.placed = replay_buffers.NOTHING, False
        self.generation = 0
        self.confirmed = False  # set once a second recording gave the same graph
        # one call at a time writes or reads the shells (threads sharing the function)
        self.lock = threading.Lock()

    def confirm(self, batch):
        """The second recording gave the same graph: batch it (unless told not to), and let
        go of what only the comparison needed (a long unroll's plan keeps hundreds of
        thousands of objects that every pass of the cycle collector walks)."""
        self.confirmed = True
        if batch:
            self.batch()
            self.program = replay_layout.reorder(self.program)
        self.structure = None
        self.masks = compare.masks(self.bound)  # the batched nodes' copies of the bound ones
        self._generate()

    def _generate(self):
        """The forward's and the backward's loops as generated code (replay_codegen), each
        where it compiles little enough; the loops below stay for the rest."""
        placement = replay_buffers.place(self.program, self.steps)
        self.forward_blocks = replay_codegen.compile_forward(self.program, placement)
        self.backward_blocks = replay_codegen.compile_backward(
            self.steps, len(self.index), self.root_slot, placement.gradients)
        if self.forward_blocks is None:  # the states are not written into rows
            placement.windows = placement.buffers = ()
        if self.backward_blocks is None:  # nor the gradients
            placement.gradient_windows = placement.gradient_buffers = ()
        self.placement = placement

    def batch(self):
        """Run the copies of an op that a loop recorded as one call where batching.rewrite
        finds them (after the second recording confirmed the graph)."""
        nodes = [entry[0] for entry in self.program]
        # the ops whose nodes the rewrites make are read by the plan too: a rule put in place
        # of one of them (or put back) records the plan anew, as one of its own ops' does
        watched = {op for op, _ in self.functions}
        self.functions += [(op, compare.functions_of(op)) for op in batching.SYNTHESIZED
                           if op not in watched]
        result = batching.rewrite(nodes, self.root, keep={s for s, _, _ in self.bound})
        if result is None:
            return
        self.batched = True
        order, self.root, copies = result
        self.bound = [(copies[s], template, count) for s, template, count in self.bound]
        leaves = [s for s in self.index if s._op is None]
        self.index = {s: k for k, s in enumerate(leaves + order)}
        self.program = [(s, s._op.forward, s._inputs, len(s._inputs)) for s in order]
        self._compile_backward(order[::-1])

    def _shell(self, t, shells, places, recorder):
        if t._op is None:
            return self._leaf(t, places)
        op = t._op
        if not callable(op.forward):
            raise Refused(f"op {op.name} declares no forward kernel")
        hooks = t._hooks
        if hooks is not None and (hooks or hooks.retain):
            raise Refused("a hook or retain_grad() on a tensor inside the function")
        inputs = tuple(shells[i] for i in t._inputs)
        needs = any(i.requires_grad for i in inputs)
        s = fill(_new(Tensor), t._data, needs, op, inputs, t._saved, t._seq, t._step)
        s.name = t.name
        constants = t._saved[:op.constants] if op.constants else ()
        if t in recorder.constants:
            originals = recorder.constants[t][:op.constants]
            template = bind(originals, t._saved[:op.constants], self.arg_arrays)
            if template is not None:
                self.bound.append((s, template, op.constants))
                constants = template
            self._watch(originals, template)
        # what must be the same when the call is recorded again: the op, where its inputs
        # come from, its constants, and its other saved parameters (axes, scalars; arrays
        # there are values its forward computes again, as softmax_cross_entropy's)
        rest = compare.parameters(t._saved[op.constants:] if op.constants else t._saved)
        self.structure.append((op, tuple(self.index[i] for i in inputs), constants, rest,
                               t._data.shape, t._data.dtype))
        self.index[s] = len(self.index)
        self.program.append((s, op.forward, inputs, len(inputs)))
        return s

    def _watch(self, value, template):
        """Note the arrays of constants that are not arguments (`template` says which parts
        are): targets held by the caller's closure, which `changed` compares each call."""
        if isinstance(value, (tuple, list)):
            parts = template if isinstance(template, tuple) else (None,) * len(value)
            for v, part in zip(value, parts):
                self._watch(v, part)
        elif isinstance(value, np.ndarray) and not isinstance(template, Arg):
            self._watching.append(value)

    def _watch_outside(self):
        """What `changed` compares each call with its recorded copy: for the arrays noted by
        _watch, the array they are views of, weakly (an array made inside the function is
        gone after the call and cannot change), or the views themselves where that array is
        much larger (a few targets out of a whole dataset)."""
        by_base = {}
        for value in self._watching:
            base = value
            while isinstance(base.base, np.ndarray):
                base = base.base
            entry = by_base.setdefault(id(base), (base, {}))
            entry[1][id(value)] = value
        for base, views in by_base.values():
            covered = sum(v.nbytes for v in views.values())
            if base.nbytes <= 4 * covered + 65536:
                self.outside.append((weakref.ref(base), compare.Recorded(base)))
            else:
                for v in views.values():  # held: their base is the caller's anyway
                    self.outside.append(((lambda v=v: v), compare.Recorded(v)))
        self._watching = None

    def _leaf(self, t, places):
        path = places.get(id(t)) or places.get(id(t._data))
        s = fill(_new(Tensor), t._data, False)
        if t.requires_grad and path is None:  # a parameter (or any leaf from outside)
            s.requires_grad = True
            self.grad_leaves.append((s, t))
            self.sources.append((s, t))
        elif path is not None:  # an argument, or its data wrapped again inside the function
            arg_is_grad = t.requires_grad and any(p == path for p, _ in self.arg_tensors)
            s.requires_grad = arg_is_grad
            if arg_is_grad:
                self.grad_leaves.append((s, path))
            self.sources.append((s, path))
        else:  # made inside the function or read from outside: its current array each call
            self.sources.append((s, t))
        # a parameter is the same tensor in both recordings; other leaves may be new each call
        who = id(t) if t.requires_grad and path is None else None
        # a leaf made inside the function (a random mask) is replayed with the recorded values:
        # they must be the same in both recordings, unless it reads an array from outside
        content = compare.Content(t._data) if path is None and not t.requires_grad else None
        self.structure.append(("leaf", s.requires_grad, path, who, t._data.shape,
                               t._data.dtype, content))
        self.index[s] = len(self.index)
        return s

    def differs(self, other):
        """Why a second recording of the same signature cannot share this plan, or None."""
        if len(self.structure) != len(other.structure) or not all(
                compare.same(a, b) for a, b in zip(self.structure, other.structure)):
            return ("the graph changed between two calls with the same argument shapes (its "
                    "control flow, or an array an op saved, depends on values)")
        return None

    # ---- a replayed call --------------------------------------------------------------------
    def replaced(self):
        """The first op of the plan whose kernel, rule or fast paths are no longer those it
        was recorded with, or None."""
        for op, functions in self.functions:
            if compare.functions_of(op) != functions:  # functions compare by identity
                return op
        return None

    def changed(self, args):
        """Why what the plan reads from outside is no longer as recorded, or None: a tensor
        of another shape or dtype, an array an op saved (a target, an index) that was
        changed in place since it was recorded, or a boolean mask among the arguments that
        selects another number of elements (the shapes after it would change), or an op whose
        kernel or rule was replaced since (a learner's own rule: the generated code may run
        the text of the one it replaced)."""
        replaced = self.replaced()
        if replaced is not None:
            return f"the kernel or rule of op {replaced.name!r} was replaced since it was recorded"
        for arg, selected in self.masks:
            if np.count_nonzero(arg.array(args)) != selected:
                return "a boolean mask among the arguments selects another number of elements"
        if not _same_arrays(self.tensor_sources, self.tensor_shells):
            for s, src in zip(self.tensor_shells, self.tensor_sources):
                d = src._data
                if d.shape != s._data.shape or d.dtype != s._data.dtype:
                    return "a tensor the function reads changed shape or dtype"
        for ref, recorded in self.outside:
            a = ref()
            if a is not None and not recorded.holds(a):
                return ("an array the function reads from outside (a target or an index an op "
                        "saved) changed since it was recorded")
        return None

    def run(self, args):
        with self.lock:
            return self._run(args)

    def _run(self, args):
        self.generation += 1
        shells, tensors = self.tensor_shells, self.tensor_sources
        if not _same_arrays(tensors, shells):  # a tensor's array was replaced (`.data = `)
            for sh, t in zip(shells, tensors):
                sh._data = t._data
        versions = versions_of(tensors)  # checked again before the backward
        read = []  # the same for the tensors among the arguments: (tensor, version)
        for sh, path in self.arg_sources:
            a = argument_at(args, path)
            if isinstance(a, Tensor):
                read.append((a, version_of(a)))
                a = a._data
            sh._data = a
        for s, template, count in self.bound:
            s._saved = rebuild(template, args) + tuple(s._saved[count:])
        if self.forward_blocks is not None:
            self.placement.ready()
            for block, rows in self.forward_blocks:
                block(rows)
        else:
            self._forward()
        self.placed = self.forward_blocks is not None
        leaves = tuple(src if isinstance(src, Tensor) else argument_at(args, src)
                       for _, src in self.grad_leaves)
        return record(ReplayedStep, self.root._data.copy(), leaves,
                      (self, self.generation, (tensors, versions, tuple(read))))

    def _forward(self):
        for s, forward, inputs, arity in self.program:
            # the common arities get their own call: no argument list built per node
            if arity == 1:
                s._data = forward(s, inputs[0]._data)
            elif arity == 2:
                a, b = inputs
                s._data = forward(s, a._data, b._data)
            elif arity == 3:
                a, b, c = inputs
                s._data = forward(s, a._data, b._data, c._data)
            else:
                s._data = forward(s, *[i._data for i in inputs])

    def _compile_backward(self, nodes):
        """The backward's steps (replay_sweep.compile_steps), and the slots of the result
        and of the leaves whose gradients it returns."""
        self.steps = replay_sweep.compile_steps(nodes, self.index, self.batched)
        self.root_slot = self.index[self.root]
        self.leaf_slots = [self.index[s] for s, _ in self.grad_leaves]

    def backward(self, g):
        """The sweep of engine._sweep over the shells (its fast paths, its order of
        accumulation), with none of its per-node checks: the gradient of each grad leaf.
        Only arrays this sweep allocated are added into in place (`owned`): a rule may hand
        one array to two inputs, as add does."""
        return self.gradients(g)[0]

    def gradients(self, g):
        """backward's gradients, and for each whether it is an array this sweep allocated
        (nothing else holds it: the outer sweep may keep it as the leaf's .grad)."""
        acc = [None] * len(self.index)
        owned = [False] * len(self.index)
        pending = {}  # what steps keep for later ones (replay_sweep.WEIGHT, ROWS)
        placement = self.placement
        if placement.gradient_windows:  # stacks the backward's rules will have written
            placement.seed_gradients(pending.setdefault(replay_sweep.STACKS, {}))
        if self.placed and placement.windows:  # stacks the forward wrote already
            placement.seed(pending.setdefault(replay_sweep.STACKS, {}))
        if self.placed and placement.buffers:
            pending[replay_sweep.BUFFERS] = placement.buffers
        acc[self.root_slot] = g
        if self.backward_blocks is not None:
            for block, rows in self.backward_blocks:
                block(rows, acc, owned, pending)
        else:
            replay_sweep.sweep(self.steps, acc, owned, pending)
        result, fresh = [], []
        for slot in self.leaf_slots:
            parts = pending.pop(slot, None)
            g = acc[slot]
            if parts is None:
                result.append(g)
                fresh.append(owned[slot])
            else:  # the weight's product, a new array
                result.append(replay_sweep.weight_products(parts, g, pending))
                fresh.append(True)
        if placement.buffers or placement.gradient_buffers:  # handed out: not to be rewritten
            placement.let_go_of([r for r, new in zip(result, fresh) if not new])
        return tuple(result), fresh


def _same_arrays(tensors, shells):
    """Whether every tensor still holds the array its shell was given (one C loop)."""
    return all(map(is_, map(_data_of, tensors), map(_data_of, shells)))


_data_of = attrgetter("_data")
