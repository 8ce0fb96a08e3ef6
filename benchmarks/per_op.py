"""Per-op overhead: a chain of 1,000 small elementwise ops on shape (16,) float32.

At this size numpy's arithmetic costs almost nothing, so the figures are the engine's own
bookkeeping per op (making the output tensor, recording the node, the reverse sweep). The same
chain runs in autograd_core, in PyTorch's CPU eager mode (one thread, when torch is installed)
and as hand-written numpy (forward keeping the values the backward needs, then the backward
written out by hand: the floor any engine on numpy pays).

The chain repeats one cycle of eight ops, each op's output feeding the next:

    x = x * w               tensor, w in [1.6, 2.0]
    x = x + b               tensor, b = -w + [-0.05, 0.05]
    x = tanh(x)
    x = sigmoid(x)
    x = x * 4.0             Python scalar
    x = x + -2.0            Python scalar
    x = exp(x * 0.5)        scalar, then exp

x = 1 is (near) a fixed point of the cycle and each cycle scales the gradient by about
w / 2, so over 125 cycles the values stay in [0.7, 1.4] and the gradients stay normal float32
numbers (no overflow, no subnormals, which would slow every implementation down).
Reported: microseconds per op for the forward, the backward (the reverse sweep and the release
of the graph) and their sum, and ours / torch and ours / numpy measured in the same run.
"""
import numpy as np

from ._common import import_torch, time_phases

NAME = "per_op"
TITLE = "per-op overhead: chain of 1,000 elementwise ops on shape (16,) float32, fwd + bwd"

N_OPS = 1000
OPS_PER_CYCLE = 8
CYCLES = N_OPS // OPS_PER_CYCLE
SHAPE = (16,)
SEED = 0


def chain(x, w, b, tanh, sigmoid, exp, cycles=CYCLES):
    """The benchmarked chain, written once for every kind of tensor (ours, torch, numpy)."""
    for _ in range(cycles):
        x = x * w
        x = x + b
        x = tanh(x)
        x = sigmoid(x)
        x = x * 4.0
        x = x + -2.0
        x = exp(x * 0.5)
    return x


def _np_sigmoid(h):
    # The engine's formula, 1 / (1 + exp(-x)), as a person writes it in numpy (the values here
    # never overflow exp, so the floor needs no errstate; the engine's errstate is overhead).
    return 1 / (1 + np.exp(-h))


def numpy_forward(x, w, b, cycles=CYCLES):
    """The chain in plain numpy, keeping per cycle what the hand-written backward needs."""
    saved = []
    for _ in range(cycles):
        xin = x
        x = x * w
        x = x + b
        y = np.tanh(x)
        s = _np_sigmoid(y)
        x = s * 4.0
        x = x + -2.0
        x = np.exp(x * 0.5)
        saved.append((xin, y, s, x))
    return x, saved


def numpy_backward(g, w, saved):
    """d(chain)/d(x0, w, b) for the output gradient `g`, written out by hand."""
    gw = np.zeros_like(w)
    gb = np.zeros_like(w)
    for xin, y, s, e in reversed(saved):
        g = g * e                   # exp
        g = g * 0.5                 # * 0.5
        g = g * 4.0                 # * 4.0   (+ -2.0 passes g through)
        g = g * (s * (1 - s))       # sigmoid
        g = g * (1 - y * y)         # tanh
        gb += g                     # + b
        gw += g * xin               # * w
        g = g * w
    return g, gw, gb


def _inputs():
    rng = np.random.default_rng(SEED)
    w = rng.uniform(1.6, 2.0, SHAPE).astype(np.float32)
    b = (-w + rng.uniform(-0.05, 0.05, SHAPE)).astype(np.float32)
    x0 = rng.uniform(0.5, 1.5, SHAPE).astype(np.float32)
    gy = np.ones(SHAPE, dtype=np.float32)
    return x0, w, b, gy


class _State:
    """What one timed repeat carries from its forward to its backward."""
    __slots__ = ("x", "y", "saved", "grads")


# ---- the three implementations: (setup, forward, backward, results) ----------------------

def _ours(x0, w0, b0, gy, replayed=False):
    import autograd_core as ag

    w = ag.Tensor(w0.copy(), requires_grad=True)
    b = ag.Tensor(b0.copy(), requires_grad=True)
    tanh, sigmoid, exp = ag.tanh, ag.sigmoid, ag.exp
    run = lambda x: chain(x, w, b, tanh, sigmoid, exp)  # noqa: E731
    if replayed:  # recorded on the first calls, replayed after
        run = ag.replay(run)

    def setup():
        w.grad = b.grad = None
        s = _State()
        s.x = ag.Tensor(x0.copy(), requires_grad=True)
        return s

    def forward(s):
        s.y = run(s.x)

    def backward(s):
        s.y.backward(gy)
        s.y = None  # release the output (and what is left of the graph) inside the timing

    def results():
        s = setup()
        forward(s)
        y = s.y.numpy().copy()
        backward(s)
        return y, s.x.grad.numpy(), w.grad.numpy(), b.grad.numpy()

    return setup, forward, backward, results


def _torch(torch, x0, w0, b0, gy):
    w = torch.tensor(w0, requires_grad=True)
    b = torch.tensor(b0, requires_grad=True)
    g = torch.tensor(gy)
    tanh, sigmoid, exp = torch.tanh, torch.sigmoid, torch.exp

    def setup():
        w.grad = b.grad = None
        s = _State()
        s.x = torch.tensor(x0, requires_grad=True)
        return s

    def forward(s):
        s.y = chain(s.x, w, b, tanh, sigmoid, exp)

    def backward(s):
        s.y.backward(g)
        s.y = None  # drop the graph's nodes inside the timing, as for ours

    def results():
        s = setup()
        forward(s)
        y = s.y.detach().numpy().copy()
        backward(s)
        return y, s.x.grad.numpy(), w.grad.numpy(), b.grad.numpy()

    return setup, forward, backward, results


def _numpy(x0, w, b, gy):
    def setup():
        s = _State()
        s.x = x0.copy()
        return s

    def forward(s):
        s.y, s.saved = numpy_forward(s.x, w, b)

    def backward(s):
        s.grads = numpy_backward(gy, w, s.saved)
        s.saved = None

    def results():
        s = setup()
        forward(s)
        y = s.y
        backward(s)
        return (y,) + s.grads

    return setup, forward, backward, results


def _check(name, got, want):
    """Same chain, same numbers: the output and the three gradients agree to float32 rounding
    (every value is positive here, so a relative test is meaningful)."""
    for label, a, e in zip(("output", "grad x0", "grad w", "grad b"), got, want):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        rel = np.max(np.abs(a - e) / np.maximum(np.abs(e), 1e-30))
        if not np.all(np.isfinite(a)) or rel > 1e-3:
            raise RuntimeError(f"per_op: {name} disagrees with the hand-written numpy chain on "
                               f"{label} (max relative difference {rel:.2e}): not the same "
                               f"computation, so its timing would mean nothing")


def _row(impl, times):
    (fwd, bwd), total = times
    scale = 1e6 / N_OPS
    return {"impl": impl, "unit": "us/op", "fwd": fwd * scale, "bwd": bwd * scale,
            "total": total * scale}


def _ratio(impl, num, den):
    return {"impl": impl, "unit": "x", **{k: num[k] / den[k] for k in ("fwd", "bwd", "total")}}


def run(quick=False):
    x0, w, b, gy = _inputs()
    impls = [("autograd_core", _ours(x0, w, b, gy)),
             ("autograd_core replay", _ours(x0, w, b, gy, replayed=True))]
    torch = import_torch()
    if torch is not None:
        impls.append(("torch eager (CPU)", _torch(torch, x0, w, b, gy)))
    impls.append(("numpy by hand (floor)", _numpy(x0, w, b, gy)))

    reference = impls[-1][1][3]()
    for name, (_, _, _, results) in impls[:-1]:
        for _ in range(3):  # the third call of a replayed chain is replayed
            got = results()
        _check(name, got, reference)

    timed = time_phases({name: (setup, (forward, backward))
                         for name, (setup, forward, backward, _) in impls}, quick=quick)
    rows = {name: _row(name, times) for name, times in timed.items()}

    out = list(rows.values())
    ours = rows["autograd_core"]
    if "torch eager (CPU)" in rows:
        out.append(_ratio("autograd_core / torch", ours, rows["torch eager (CPU)"]))
    out.append(_ratio("autograd_core / numpy", ours, rows["numpy by hand (floor)"]))
    out.append(_ratio("replay / numpy", rows["autograd_core replay"], rows["numpy by hand (floor)"]))
    return out
