"""Check the engine's derivatives against central finite differences in float64."""
import numpy as np

from .engine import grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The engine's gradient and the finite-difference estimate disagree."""


def _as_tuple(x):
    return (x,) if isinstance(x, Tensor) or not isinstance(x, (tuple, list)) else tuple(x)


def _float64_inputs(inputs):
    out = []
    for x in _as_tuple(inputs):
        if isinstance(x, Tensor):
            x64 = Tensor(np.array(x._data, dtype=np.float64, order="C"),
                         requires_grad=x.requires_grad, name=x.name) if x.dtype.kind == "f" else x
        else:
            arr = np.asarray(x)
            # A C-ordered copy: the finite differences perturb it through a flat view.
            x64 = Tensor(np.array(arr, dtype=np.float64, order="C"), requires_grad=True) \
                if arr.dtype.kind == "f" else Tensor(arr)
        out.append(x64)
    return out


def _outputs(fn, inputs):
    outs = _as_tuple(fn(*inputs))
    if not outs:
        raise ValueError("gradcheck: fn returned no outputs")
    for k, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: output {k} of fn is a {type(o).__name__}, not a Tensor")
    return outs


def _analytical(fn, inputs, wrt):
    """Jacobian blocks J[o][i] of shape (out.size, in.size), one backward per output element."""
    outs = _outputs(fn, inputs)
    jac = [[np.zeros((o.size, x.size)) for x in wrt] for o in outs]
    for oi, o in enumerate(outs):
        if not o.requires_grad:
            continue
        for j in range(o.size):
            seed = np.zeros(o.size)
            seed[j] = 1.0
            gs = grad(o, wrt, grad_outputs=seed.reshape(o.shape).astype(o.dtype),
                      retain_graph=True, allow_unused=True)
            for xi, g in enumerate(gs):
                if g is not None:
                    jac[oi][xi][j] = g._data.reshape(-1)
    return jac


def _numerical(fn, inputs, wrt, eps):
    # Not under no_grad: fn may itself differentiate (gradgradcheck's first derivatives).
    outs = _outputs(fn, inputs)
    jac = [[np.zeros((o.size, x.size)) for x in wrt] for o in outs]
    for xi, x in enumerate(wrt):
        flat = x._data.reshape(-1)  # a view: writing it perturbs the input
        for k in range(flat.size):
            orig = flat[k]
            flat[k] = orig + eps
            plus = [o._data.astype(np.float64).reshape(-1) for o in _outputs(fn, inputs)]
            flat[k] = orig - eps
            minus = [o._data.astype(np.float64).reshape(-1) for o in _outputs(fn, inputs)]
            flat[k] = orig
            for oi in range(len(outs)):
                jac[oi][xi][:, k] = (plus[oi] - minus[oi]) / (2 * eps)
    return jac


def _compare(analytical, numerical, wrt, atol, rtol, what):
    worst = None
    for oi, (arow, nrow) in enumerate(zip(analytical, numerical)):
        for xi, (a, n) in enumerate(zip(arow, nrow)):
            excess = np.abs(a - n) - (atol + rtol * np.abs(n))
            if excess.size and (worst is None or excess.max() > worst[0]):
                j, k = np.unravel_index(np.argmax(excess), excess.shape)
                worst = (excess.max(), oi, xi, j, k, a[j, k], n[j, k])
    if worst is not None and worst[0] > 0:
        _, oi, xi, j, k, a, n = worst
        idx = np.unravel_index(k, wrt[xi].shape)
        return (f"{what}: mismatch for output {oi} element {j}, input {xi} element "
                f"{tuple(int(i) for i in idx)}: engine {a:.10g}, finite differences {n:.10g} "
                f"(|diff| {abs(a - n):.3g} > atol {atol:g} + rtol {rtol:g} * |numerical|)")
    return None


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              _what="gradcheck"):
    """Compare the engine's gradients of `fn(*inputs)` with central finite differences.

    Inputs are converted to float64 (floating ones that require grad are checked; ndarrays
    count as requiring grad). Returns True when every Jacobian element agrees; otherwise
    raises GradcheckError naming the worst element (or returns False when
    `raise_exception=False`).
    """
    inputs = _float64_inputs(inputs)
    wrt = [x for x in inputs if x.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    message = _compare(_analytical(fn, inputs, wrt), _numerical(fn, inputs, wrt, eps), wrt,
                       atol, rtol, _what)
    if message and raise_exception:
        raise GradcheckError(message)
    return message is None


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0):
    """Check second derivatives: gradcheck of the map (inputs, v) -> vᵀ J(inputs), with the
    first derivatives computed by the engine with create_graph=True. `grad_outputs` (v)
    defaults to random float64 values."""
    inputs = _float64_inputs(inputs)
    wrt_pos = [k for k, x in enumerate(inputs) if x.requires_grad]
    outs = _outputs(fn, inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        grad_outputs = [rng.standard_normal(o.shape) for o in outs]
    vs = _float64_inputs(grad_outputs)
    n = len(inputs)

    def first_derivatives(*args):
        xs, v = list(args[:n]), args[n:]
        ys = _outputs(fn, xs)
        pairs = [(y, g) for y, g in zip(ys, v) if y.requires_grad]
        gs = grad([y for y, _ in pairs], [xs[k] for k in wrt_pos], [g for _, g in pairs],
                  create_graph=True, allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(first_derivatives, list(inputs) + list(vs), eps=eps, atol=atol,
                     rtol=rtol, raise_exception=raise_exception, _what="gradgradcheck")
