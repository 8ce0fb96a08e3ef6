"""Per-step gradient norms for drawings that show one tensor once per time step.

The notes-level view draws a tensor that holds the whole sequence (the logits y, the
per-step losses L, the input projection of every step) as one copy per step: y_1, y_2, ...
The edge into y_t should then carry step t's gradient, not the whole tensor's. Here a second
sweep over the recorded graph cuts each such tensor's gradient along its first axis into T
equal blocks (time-major: (T, ...) or (T * B, ...)), and what block t sends to each input
comes from the op's own rule (`node_vjp`) on the gradient with every other block zeroed.
"""
import numpy as np

from .engine import grad, node_vjp
from .observers import SweepObserver


def blocks(array, steps):
    """The norms of `array`'s first axis cut into `steps` equal blocks (t = 1..T), or None
    when it does not cut evenly (a shared tensor, not a sequence)."""
    a = np.asarray(array)
    if steps < 1 or a.ndim == 0 or a.shape[0] % steps:
        return None
    return [float(np.linalg.norm(b)) for b in np.split(a, steps)]


def sequence_tensors(tensors, drawn_steps):
    """(sequences, shared): the tensors that hold a sequence, time-major, are those drawn in
    more than one step (`drawn_steps`: tensor -> the set of steps its drawn copies are in)
    and not computed from parameters alone; `shared` are the ops computed from parameters
    alone (the bias sum b_ih + b_hh, a transposed weight), which every step reads."""
    from_params_only = {}
    for t in reversed(tensors):  # oldest first
        from_params_only[t] = (t.requires_grad if t.is_leaf else
                               all(from_params_only.get(i, False) for i in t.inputs))
    sequences = {t for t in tensors
                 if len(drawn_steps.get(t, ())) > 1 and not from_params_only[t]}
    shared = {t for t in tensors if from_params_only[t] and not t.is_leaf}
    return sequences, shared


class StepShares(SweepObserver):
    """incoming[t]: the per-step norms of the gradient t received; sent[t][k]: the per-step
    norms of what t sent to its input k. A sequence's gradient is cut into blocks; what a
    block sends to a shared op (the bias sum) is carried on through it, step by step."""

    def __init__(self, sequences, shared, steps):
        self.sequences, self.shared, self.steps = sequences, shared, steps
        self.incoming, self.sent = {}, {}
        self.pending = {}  # shared op -> [its gradient from step t, for t = 1..T]

    def node(self, tensor, g, sent):
        steps = self.steps
        parts = self.pending.pop(tensor, None)
        if parts is None and tensor in self.sequences and blocks(g, steps) is not None:
            g = np.asarray(g)
            size = g.shape[0] // steps
            parts = []
            for s in range(steps):
                masked = np.zeros_like(g)
                masked[s * size:(s + 1) * size] = g[s * size:(s + 1) * size]
                parts.append(masked)
        if parts is not None:
            self.incoming[tensor] = [float(np.linalg.norm(p)) for p in parts]
            self.sent[tensor] = self._carry(tensor, parts)
            return
        per_input = {}
        for k, inp, gi in sent:
            split = blocks(gi, steps) if inp in self.sequences else None
            if split is not None:
                per_input[k] = split
        if per_input:
            self.sent[tensor] = per_input

    def _carry(self, tensor, parts):
        """Each step's part through the node's rule: the norms per input and step; a shared
        op input gets its parts to carry on when the sweep reaches it."""
        shares = {}
        for s, part in enumerate(parts):
            for k, (inp, gi) in enumerate(zip(tensor.inputs, node_vjp(tensor, part))):
                if gi is None:
                    continue
                shares.setdefault(k, [0.0] * self.steps)[s] = float(np.linalg.norm(gi))
                if inp in self.shared:
                    todo = self.pending.setdefault(inp, [0.0] * self.steps)
                    todo[s] = todo[s] + gi
        return shares


def step_shares(loss, tensors, drawn_steps, steps):
    """A StepShares filled by one sweep of the scalar `loss` (graph kept, `.grad` untouched).
    `tensors`: walk(loss); `drawn_steps`: tensor -> steps of its drawn copies."""
    sequences, shared = sequence_tensors(tensors, drawn_steps)
    observer = StepShares(sequences, shared, steps)
    leaves = [t for t in tensors if t.is_leaf and t.requires_grad]
    if sequences and leaves:
        grad(loss, leaves, retain_graph=True, allow_unused=True, observer=observer)
    return observer
