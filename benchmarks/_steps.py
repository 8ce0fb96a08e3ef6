"""Shared by the model benchmarks (mlp, rnn, gru): one training step, forward + backward,
timed for several implementations that first prove they compute the same loss and gradients.

An implementation is an `Impl`: `setup()` (untimed), the timed `phases` (forward then backward
for the engines; one phase for the hand-written numpy, whose forward and backward are one
function), and `result()` -> (loss, {state-dict name: gradient}) for the agreement check.
Rows are milliseconds per step; ratio rows divide two rows of the same run (the
implementations take turns inside every repeat, see `_common.time_phases`).
"""
import numpy as np

from ._common import time_phases

try:
    import resource
except ImportError:  # not on Windows: the page-fault column is then left empty
    resource = None

LOSS_RTOL = 1e-4   # float32 losses of the implementations agree to this (relative)
GRAD_RTOL = 1e-3   # float32 gradients: max |a - b| / max |b|, per parameter


class Impl:
    """`phases`: (forward, backward) or (step,), each called as fn(state)."""
    __slots__ = ("name", "setup", "phases", "result")

    def __init__(self, name, setup, phases, result):
        self.name, self.setup, self.phases, self.result = name, setup, phases, result


class _State:
    __slots__ = ("loss",)


def _new_state():
    s = _State()
    s.loss = None
    return s


def engine(name, params, loss_fn, grad_of):
    """An engine's step: the forward forgets the previous gradients (grad = None, as
    `zero_grad()` / `zero_grad(set_to_none=True)` at the top of a training step) and builds
    the graph; the backward runs it and drops it, both inside the timing."""
    leaves = list(params.values())

    def forward(s):
        for p in leaves:
            p.grad = None
        s.loss = loss_fn()

    def backward(s):
        s.loss.backward()
        s.loss = None

    def result():
        s = _new_state()
        forward(s)
        loss = float(s.loss.item())
        backward(s)
        return loss, {n: grad_of(p) for n, p in params.items()}

    return Impl(name, _new_state, (forward, backward), result)


def ours(name, model, loss_fn):
    """autograd_core: `loss_fn()` runs the model's forward and returns the loss Tensor."""
    return engine(name, dict(model.named_parameters()), loss_fn, lambda p: p.grad.numpy())


def torch_eager(name, params, loss_fn):
    """PyTorch eager: `params` maps our state-dict names to the torch leaf tensors."""
    return engine(name, params, loss_fn, lambda p: p.grad.numpy())


def numpy_by_hand(name, fn, *args):
    """The hand-written floor: `fn(*args)` -> (loss, grads), forward and backward in one."""

    def step(s):
        s.loss = fn(*args)

    return Impl(name, _new_state, (step,), lambda: fn(*args))


def torch_params(torch, state_dict, names):
    """{our name: torch leaf that requires grad}, values copied from `state_dict`;
    `names` maps our names to the torch modules' (module, attribute) pairs or None for a
    new plain leaf."""
    out = {}
    for ours_name, target in names.items():
        value = torch.tensor(np.asarray(state_dict[ours_name]))
        if target is None:
            out[ours_name] = value.requires_grad_(True)
        else:
            module, attr = target
            param = getattr(module, attr)
            with torch.no_grad():
                param.copy_(value)
            out[ours_name] = param
    return out


def check_agreement(benchmark, impls, reference):
    """Every implementation's loss and gradients equal `reference`'s (float32 tolerances):
    otherwise they do not compute the same thing and timing them side by side means nothing."""
    want_loss, want = reference.result()
    for impl in impls:
        if impl is reference:
            continue
        for _ in range(3):  # the third call of a replayed step is replayed
            loss, grads = impl.result()
        if not abs(loss - want_loss) <= LOSS_RTOL * abs(want_loss):
            raise AssertionError(f"{benchmark}: the loss of {impl.name} ({loss!r}) differs from "
                                 f"{reference.name}'s ({want_loss!r}) by more than rtol "
                                 f"{LOSS_RTOL:g}")
        if set(grads) != set(want):
            raise AssertionError(f"{benchmark}: {impl.name} has gradients for {sorted(grads)}, "
                                 f"{reference.name} for {sorted(want)}")
        for key, w in want.items():
            g = np.asarray(grads[key], dtype=np.float64)
            w = np.asarray(w, dtype=np.float64)
            err = np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-30) if g.shape == w.shape \
                else np.inf
            if not err <= GRAD_RTOL:
                raise AssertionError(f"{benchmark}: the gradient of {key} from {impl.name} "
                                     f"differs from {reference.name}'s by {err:.2e} "
                                     f"(relative to its largest element)")


COLUMNS = ("fwd", "bwd", "step")


def page_faults(impl, steps=10):
    """Minor page faults per step (untimed, after the timing): memory the allocator handed
    back to the system and took again. Each costs a kernel entry and a zeroed page, more so
    in a VM; a count, so it does not depend on the machine's load."""
    if resource is None:
        return None
    s = impl.setup()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        for fn in impl.phases:
            fn(s)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


def time_steps(impls, quick, burst=1):
    """{name: {"fwd", "bwd", "step"} in ms per step, "faults": minor page faults per step}
    (fwd / bwd None for one-phase implementations). Each timed sample is `burst` consecutive
    steps, as in a training loop, after an identical untimed one (see `_common.time_phases`).
    "step" is the median of the samples' totals; under load from other processes a preemption
    lands in most totals but in few single phases, so "step" can then exceed fwd + bwd."""
    timed = time_phases({i.name: (i.setup, i.phases * burst) for i in impls}, quick=quick)
    out = {}
    for impl in impls:
        phases, total = timed[impl.name]
        row = dict.fromkeys(COLUMNS)
        if len(phases) == 2 * burst:
            row["fwd"] = sum(phases[0::2]) / burst * 1e3
            row["bwd"] = sum(phases[1::2]) / burst * 1e3
        row["step"] = total / burst * 1e3
        faults = page_faults(impl)
        row["faults"] = None if faults is None else round(faults)
        out[impl.name] = row
    return out


def rows(times, ratios):
    """Time rows in order, then one ratio row per (label, numerator, denominator) whose
    implementations both ran (e.g. torch is optional)."""
    out = [{"impl": name, "unit": "ms", **t} for name, t in times.items()]
    for label, num, den in ratios:
        if num in times and den in times:
            out.append({"impl": label, "unit": "x",
                        **{c: (times[num][c] / times[den][c]
                               if times[num][c] is not None and times[den][c] is not None
                               else None) for c in COLUMNS}})
    return out


# ---- the sequence workload of rnn and gru ------------------------------------------------------
STEPS, BATCH, INPUT, HIDDEN, CLASSES = 50, 32, 32, 128, 32
SEQ_TITLE = (f"batch {BATCH}, input {INPUT}, hidden {HIDDEN}, {CLASSES} classes, T = {STEPS}, "
             f"float32, 1 thread")


def sequence_task(cell, seed=0, **layer_kwargs):
    """(model, state_dict, xs (T, B, I) float32, targets (T, B) int64)."""
    import nn

    rng = np.random.default_rng(seed)
    model = nn.RecurrentClassifier(INPUT, HIDDEN, CLASSES, cell=cell, rng=rng, **layer_kwargs)
    xs = rng.standard_normal((STEPS, BATCH, INPUT)).astype(np.float32)
    targets = rng.integers(0, CLASSES, (STEPS, BATCH))
    return model, model.state_dict(), xs, targets


def ours_sequence(name, model, xs, targets, replayed=False):
    """autograd_core: `model.loss(xs, targets)`, L = sum_t mean_b CE_t; with `replayed`
    through `ag.replay` (recorded on the first calls, replayed after)."""
    import autograd_core as ag

    xt = ag.Tensor(xs)
    loss = lambda: model.loss(xt, targets)  # noqa: E731
    return ours(name, model, ag.replay(loss) if replayed else loss)


def torch_sequence_loss(torch, out_layer, hidden, targets):
    """The torch side of L = sum_t mean_b CE(h_t V^T + b, y_t): one Linear on the states
    (a list of h_t, stacked here, or a (T, B, H) tensor), then F.cross_entropy summed over
    T*B and divided by B."""
    import torch.nn.functional as F

    if isinstance(hidden, (list, tuple)):
        hidden = torch.stack(hidden)
    logits = out_layer(hidden)
    return F.cross_entropy(logits.reshape(-1, CLASSES), targets.reshape(-1),
                           reduction="sum") / BATCH


def torch_cell_loop(torch, cell, out_layer, xt, yt):
    """A closure running a torch.nn.*Cell over the T steps of xt, then the sequence loss."""
    def loop():
        h, outs = torch.zeros(xt.shape[1], HIDDEN), []
        for t in range(xt.shape[0]):
            h = cell(xt[t], h)
            outs.append(h)
        return torch_sequence_loss(torch, out_layer, outs, yt)
    return loop


# ---- the user loop: everything per step, as a learner first writes it ------------------------
def rnn_user_loop(ag, nn, p, xs, targets):
    """h_t = tanh(x_t U + h_{t-1} W + b), L = sum_t mean_b CE(h_t V + c, y_t): the input
    projection and the output layer of every step inside the loop (the parameters `p` keep
    the state dict's names; U, W, V are their transposes, taken once)."""
    u, w, v = p["rnn.weight_ih_l0"].T, p["rnn.weight_hh_l0"].T, p["out.weight"].T
    b, c = p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"], p["out.bias"]
    h, loss = ag.zeros((xs.shape[1], HIDDEN)), 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(xs[t] @ u + h @ w + b)
        loss = loss + nn.cross_entropy(h @ v + c, targets[t])
    return loss


def gru_user_loop(ag, nn, p, xs, targets):
    """Note 001's GRU step by step, each gate with its own weights (sliced once from the
    stacked parameters): r, z = σ(x_t U_{r,z} + h W_{r,z} + b_{r,z}),
    h~ = tanh(x_t U_h + (r * h) W_h + b_h), h_t = (1 - z) h + z h~; the loss as rnn_user_loop."""
    H = HIDDEN
    w_ih, w_hh = p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"]
    bias = p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"]
    u_r, u_z, u_h = (w_ih[k * H:(k + 1) * H].T for k in range(3))
    w_r, w_z, w_h = (w_hh[k * H:(k + 1) * H].T for k in range(3))
    b_r, b_z, b_h = (bias[k * H:(k + 1) * H] for k in range(3))
    v, c = p["out.weight"].T, p["out.bias"]
    h, loss = ag.zeros((xs.shape[1], H)), 0.0
    for t in range(xs.shape[0]):
        x = xs[t]
        r = ag.sigmoid(x @ u_r + h @ w_r + b_r)
        z = ag.sigmoid(x @ u_z + h @ w_z + b_z)
        h_tilde = ag.tanh(x @ u_h + (r * h) @ w_h + b_h)
        h = (1 - z) * h + z * h_tilde
        loss = loss + nn.cross_entropy(h @ v + c, targets[t])
    return loss


def ours_user_loop(name, model, loop, xs, targets, replayed=False):
    """autograd_core running `loop` (rnn_user_loop or gru_user_loop) on the model's
    parameters; with `replayed` through `ag.replay`."""
    import autograd_core as ag
    import nn

    params, xt = dict(model.named_parameters()), ag.Tensor(xs)
    loss = lambda: loop(ag, nn, params, xt, targets)  # noqa: E731
    return ours(name, model, ag.replay(loss) if replayed else loss)
