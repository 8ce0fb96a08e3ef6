"""The long unroll: does a T-step graph cost T times one step? An RNN with batch 1 and hidden
size 32, written as the per-step Python loop a user writes,

    h_t = tanh(x_t U + h_{t-1} W + b),    L = sum_t sum(h_t),

forward + backward at T = 2,000 and T = 10,000, float32, one thread. Printed per
implementation: the time at each length, the growth ratio (time at 10,000 / time at 2,000;
5.0 is linear), and for the engine the peak traced memory of a step at each length with its
growth ratio, and the share of the forward spent in the garbage collector (the graph's Python
objects are what the collector walks).

Timed, with the same weights and data: autograd_core's eager mode, its replay (`ag.replay`,
the same function recorded once), PyTorch eager running the same loop (when installed), and
the hand-written numpy forward and backward (the floor: the per-step loop, with the input
projections and the weight gradients as one product over all steps). The lengths take
turns inside every repeat, so a burst of load lands on all of them. Eager mode and torch are
timed in a first pass, replay in a second (each beside the floor): a replayed function keeps
the graph it recorded, which would slow eager mode's timings down (see run).
"""
import gc
import time
import tracemalloc

import numpy as np

from ._common import import_torch, time_phases

NAME = "unroll"
TITLE = "long unroll: RNN B1 H32 user loop, T = 2,000 and 10,000, fwd + bwd, float32"

LENGTHS = (2000, 10000)
HIDDEN = 32
SEED = 0
EAGER, REPLAY, FLOOR = "autograd_core eager", "autograd_core replay", "numpy by hand (floor)"
TORCH = "torch eager (CPU)"


def _data(T):
    rng = np.random.default_rng(SEED)
    xs = rng.standard_normal((T, 1, HIDDEN)).astype(np.float32)
    u = (rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
    w = (rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
    b = np.zeros(HIDDEN, np.float32)
    return xs, u, w, b


def user_loop(ag, xs, u, w, b):
    """The model as a user writes it, one node per op per step."""
    h = ag.zeros((1, HIDDEN))
    loss = 0.0
    for t in range(xs.shape[0]):
        h = ag.tanh(ag.matmul(xs[t], u) + ag.matmul(h, w) + b)
        loss = loss + h.sum()
    return loss


def floor_step(xs, u, w, b):
    """(loss, (gU, gW, gb)) by hand: the loop forward, the loop backward keeping each step's
    da, then U's and W's gradients as one product each."""
    T = xs.shape[0]
    hs = np.empty((T + 1, 1, HIDDEN), np.float32)
    hs[0] = 0
    proj = xs.reshape(T, HIDDEN) @ u + b
    for t in range(T):
        np.tanh(proj[t] + hs[t] @ w, out=hs[t + 1])
    loss = hs[1:].sum()
    das = np.empty((T, 1, HIDDEN), np.float32)
    dh = np.zeros((1, HIDDEN), np.float32)
    wt = w.T
    for t in range(T - 1, -1, -1):
        dh += 1
        h = hs[t + 1]
        da = das[t]
        np.multiply(dh, 1 - h * h, out=da)
        dh = da @ wt
    flat = das.reshape(T, HIDDEN)
    return loss, (xs.reshape(T, HIDDEN).T @ flat, hs[:-1].reshape(T, HIDDEN).T @ flat,
                  flat.sum(0))


class _State:
    __slots__ = ("loss", "grads")


def _engine_impl(ag, T, compiled):
    xs, u0, w0, b0 = _data(T)
    xt = ag.Tensor(xs)
    params = [ag.Tensor(a.copy(), requires_grad=True) for a in (u0, w0, b0)]
    fn = ag.replay(lambda *p: user_loop(ag, xt, *p)) if compiled else \
        (lambda *p: user_loop(ag, xt, *p))
    return _autograd_impl(params, lambda: fn(*params))


def _torch_impl(torch, T):
    xs, u0, w0, b0 = _data(T)
    xt = torch.from_numpy(xs)
    params = [torch.tensor(a, requires_grad=True) for a in (u0, w0, b0)]

    def loss():
        u, w, b = params
        h, total = torch.zeros(1, HIDDEN), 0.0
        for t in range(T):
            h = torch.tanh(xt[t] @ u + h @ w + b)
            total = total + h.sum()
        return total

    return _autograd_impl(params, loss)


def _autograd_impl(params, loss):
    """(setup, (forward, backward), result) of an engine (ours or torch: the same tensor
    methods) whose forward is `loss()`: the forward forgets the previous gradients and
    builds the graph, the backward runs it and drops it."""
    def setup():
        for p in params:
            p.grad = None
        return _State()

    def forward(s):
        s.loss = loss()

    def backward(s):
        s.loss.backward()
        s.loss = None

    def result():
        s = setup()
        forward(s)
        value = s.loss.item()
        backward(s)
        return value, tuple(p.grad.numpy() for p in params)

    return setup, (forward, backward), result


def _floor_impl(T):
    args = _data(T)

    def step(s):
        s.loss, s.grads = floor_step(*args)

    def result():
        return floor_step(*args)

    return _State, (step,), result


def _check(name, got, want):
    """Same model, same numbers (float32 rounding over thousands of steps)."""
    (loss, grads), (want_loss, want_grads) = got, want
    ok = abs(loss - want_loss) <= 1e-3 * abs(want_loss)
    for g, w in zip(grads, want_grads):
        ok = ok and np.max(np.abs(g - w)) <= 1e-3 * max(np.max(np.abs(w)), 1e-30)
    if not ok:
        raise RuntimeError(f"unroll: {name} disagrees with the hand-written numpy unroll")


def _memory_and_gc(setup, phases):
    """(peak traced memory in MiB of one step, ms the collector ran during the forward):
    untimed runs after the timing."""
    s = setup()
    gc.collect()
    tracemalloc.start()
    for fn in phases:
        fn(s)
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    spent, started = [0.0], [0.0]

    def watch(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - started[0]

    s = setup()
    gc.collect()
    gc.callbacks.append(watch)
    try:
        phases[0](s)
    finally:
        gc.callbacks.remove(watch)
    for fn in phases[1:]:
        fn(s)
    return peak, spent[0] * 1e3


def run(quick=False):
    import autograd_core as ag

    torch = import_torch()
    # Two passes, each timing its implementations in turns with the floor: eager mode (and
    # torch) first, then replay. A replayed function keeps the graph it recorded (216,000
    # objects at 10,000 steps), and with it alive a new graph's objects fill the holes between
    # the kept ones, spread over memory: eager mode's 10,000-step unroll took 12% longer
    # (its forward 15%) and 2,000 steps 6%. That is the heap's layout, not eager mode.
    first_pass = {}
    for T in LENGTHS:
        first_pass[EAGER, T] = _engine_impl(ag, T, compiled=False)
        if torch is not None:
            first_pass[TORCH, T] = _torch_impl(torch, T)
        first_pass[FLOOR, T] = _floor_impl(T)
    timed, measured = _pass(first_pass, quick)
    second_pass = {(name, T): impl for (name, T), impl in first_pass.items() if name == FLOOR}
    del first_pass
    for T in LENGTHS:
        second_pass[REPLAY, T] = _engine_impl(ag, T, compiled=True)
    replayed, replay_measured = _pass(second_pass, quick)
    for T in LENGTHS:  # replay against the floor timed beside it
        timed[REPLAY, T] = replayed[REPLAY, T]
        timed[REPLAY, FLOOR, T] = replayed[FLOOR, T]
        measured[REPLAY, T] = replay_measured[REPLAY, T]
    names = [EAGER, REPLAY] + ([TORCH] if torch is not None else []) + [FLOOR]
    first, last = LENGTHS
    out = []
    for name in names:
        t = {T: timed[name, T][1] * 1e3 for T in LENGTHS}
        out.append({"impl": name, "unit": "ms", f"T={first}": t[first], f"T={last}": t[last],
                    "growth": t[last] / t[first]})
    for name in names:
        if name != FLOOR:
            floor = (REPLAY, FLOOR) if name == REPLAY else (FLOOR,)
            out.append({"impl": f"{name} / floor", "unit": "x",
                        **{f"T={T}": timed[name, T][1] / timed[(*floor, T)][1]
                           for T in LENGTHS}})
    for name in names:
        if name == TORCH:  # its memory is not traced by tracemalloc, nor its nodes by the gc
            continue
        m = {T: measured[name, T] for T in LENGTHS}
        out.append({"impl": f"{name}: peak memory", "unit": "MiB",
                    **{f"T={T}": m[T][0] for T in LENGTHS}, "growth": m[last][0] / m[first][0]})
        if name != FLOOR:
            out.append({"impl": f"{name}: gc in forward", "unit": "ms",
                        **{f"T={T}": m[T][1] for T in LENGTHS},
                        "growth": m[last][1] / max(m[first][1], 1e-9)})
    return out


def _pass(impls, quick):
    """Check every implementation against the floor, time them in turns, then measure the
    memory and the collector's time of each but torch: ({key: timing}, {key: (MiB, ms)})."""
    for (name, T), (_, _, result) in impls.items():
        if name != FLOOR:
            for _ in range(3 if name == REPLAY else 1):  # the third call is replayed
                got = result()
            _check(f"{name} at T = {T}", got, impls[FLOOR, T][2]())
    timed = time_phases({key: (setup, phases) for key, (setup, phases, _) in impls.items()},
                        quick=quick)
    measured = {key: _memory_and_gc(setup, phases) for key, (setup, phases, _) in impls.items()
                if key[0] != TORCH}
    return timed, measured
