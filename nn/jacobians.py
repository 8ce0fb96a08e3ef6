"""How much one recorded step can stretch a gradient: the largest singular value of
J_t = dh_{t+1}/dh_t, from the engine's vector-Jacobian products only.

Note 003: delta_k^T = delta_T^T prod_{j=k}^{T-1} J_j, so ||delta_k|| <= ||delta_T|| prod sigma_j,
and for a tanh RNN (J_j = diag(f') W_hh, |f'| <= 1) the product is at most beta_W^(T-k) with
beta_W = ||W_hh||_2.

Power iteration on J^T J. J^T u is one VJP through the recorded step. J v comes from the same
VJP differentiated once more: with a probe u recorded as a graph input, w(u) = J^T u is linear
in u and d<w(u), v>/du = J v (create_graph=True, then one more sweep).

Batches: the recurrent layers here handle samples independently, so J_t is block-diagonal, one
H x H block per sample, and the largest singular value of the (B*H) x (B*H) matrix is the
largest over the samples. By default (`per_sample=True`) the power iteration runs on every block
at once (one VJP serves the whole batch, each sample's vector normalised on its own) and the
report keeps sigma per sample and their maximum. `per_sample=False` iterates on the full matrix
instead: right for models whose samples interact within a step, slower to converge when two
samples have close top singular values.

Cost: the engine's sweep from h_{t+1} does not stop at h_t, so each product runs back through
the earlier steps too; meant for short sequences and small models.
"""
from dataclasses import dataclass

import numpy as np

import autograd_core as ag
from autograd_core import Tensor

from .diagnostics import state_list

_WHERE = "jacobian_report"


@dataclass
class JacobianReport:
    """Row j belongs to the transition h_{j+1} -> h_{j+2} (states numbered 1..T).

    steps:             (T,) step-scope index of each state.
    sigma:             (T-1,) largest singular value of dh_{t+1}/dh_t (max over samples).
    sigma_per_sample:  (T-1, B) the same per sample (one column with per_sample=False).
    iterations:        (T-1,) power iterations used; converged (T-1,) whether tol was met.
    running_product:   (T,) prod_{j=k}^{T-1} sigma_j, the bound on ||dL/dh_k|| / ||dL/dh_T||;
                       1 at k = T.
    observed_ratio:    (T,) ||dL/dh_k|| / ||dL/dh_T|| when a loss was given, else None. It stays
                       below running_product when the loss reads the states through h_T only
                       and h_t is the whole recurrent state (RNN, GRU). A loss on earlier
                       steps adds direct terms the bound does not cover, and an LSTM's cell
                       state carries gradient past h_t.
    beta_w:            ||W_hh||_2 for a tanh or relu RNN (|f'| <= 1), else None.
    note_bound:        (T,) beta_w^(T-k) (note 003), else None.
    """
    steps: np.ndarray
    sigma: np.ndarray
    sigma_per_sample: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    running_product: np.ndarray
    observed_ratio: np.ndarray = None
    beta_w: float = None
    note_bound: np.ndarray = None

    def table(self):
        """One row per state k: sigma of the step after it, the running product, the observed
        ratio and note 003's bound where known."""
        lines = ["  k      sigma_k  prod_{j>=k} sigma_j  ||dL/dh_k||/||dL/dh_T||  "
                 "beta_W^(T-k)"]
        for k in range(len(self.steps)):
            sigma = f"{self.sigma[k]:.4e}" if k < len(self.sigma) else "-"
            ratio = "-" if self.observed_ratio is None else f"{self.observed_ratio[k]:.4e}"
            bound = "-" if self.note_bound is None else f"{self.note_bound[k]:.4e}"
            lines.append(f"{k + 1:>3}  {sigma:>11}  {self.running_product[k]:19.4e}  "
                         f"{ratio:>23}  {bound:>12}")
        return "\n".join(lines)


def jacobian_report(hidden_states, loss=None, model=None, *, per_sample=True, tol=1e-10,
                    max_iter=2000, seed=0):
    """sigma_max(dh_{t+1}/dh_t) for each pair of consecutive states, by power iteration.

    hidden_states: h_1..h_T of one sequence, consecutive steps, or a recurrent layer's output.
    loss:          optional scalar; gives the observed ratios ||dL/dh_k|| / ||dL/dh_T||.
    model:         optional nn.RNN or RecurrentClassifier around one; gives beta_W and note
                   003's bound when it is a tanh or relu RNN.
    tol:           stop once no sample's estimate moves by more than tol (relative).
    The graph is kept and no `.grad` is written. Returns a `JacobianReport`.
    """
    states = _consecutive_states(hidden_states)
    rng = np.random.default_rng(seed)
    per_step = [_largest_singular_value(h_next, h_prev, per_sample, tol, max_iter, rng)
                for h_prev, h_next in zip(states, states[1:])]
    sigma_ps = np.array([s for s, _, _ in per_step])
    sigma = sigma_ps.max(axis=1)
    product = np.append(np.cumprod(sigma[::-1])[::-1], 1.0)
    beta_w = _beta_w(model)
    back = len(states) - 1 - np.arange(len(states))
    return JacobianReport(
        steps=np.array([h.step for h in states]), sigma=sigma, sigma_per_sample=sigma_ps,
        iterations=np.array([n for _, n, _ in per_step]),
        converged=np.array([c for _, _, c in per_step]), running_product=product,
        observed_ratio=None if loss is None else _observed_ratio(loss, states),
        beta_w=beta_w, note_bound=None if beta_w is None else beta_w ** back)


def step_jacobian(h_next, h_prev):
    """The exact dh_next/dh_prev as a (h_next.size, h_prev.size) array, one VJP per entry of
    h_next (row i = e_i^T J). For checks on small models."""
    rows = []
    for i in range(h_next.size):
        basis = np.zeros(h_next.size, dtype=h_next.dtype)
        basis[i] = 1.0
        (g,) = ag.grad(h_next, h_prev, grad_outputs=basis.reshape(h_next.shape),
                       retain_graph=True, allow_unused=True)
        rows.append(np.zeros(h_prev.size) if g is None else g.numpy().ravel())
    return np.array(rows)


# ---- the power iteration --------------------------------------------------------------------
def _largest_singular_value(h_next, h_prev, per_sample, tol, max_iter, rng):
    """(sigma per sample, iterations, converged) for J = dh_next/dh_prev."""
    batch = h_prev.shape[0] if per_sample and h_prev.ndim >= 2 else 1
    vjp, jvp = _products(h_next, h_prev)
    v = _unit_rows(rng.normal(size=(batch, h_prev.size // batch)))
    sigma = np.zeros(batch)
    for iteration in range(1, max_iter + 1):
        jv = jvp(v.reshape(h_prev.shape)).reshape(batch, -1)
        new_sigma = np.linalg.norm(jv, axis=1)  # ||J v|| with ||v|| = 1 per sample
        v = _unit_rows(vjp(jv.reshape(h_next.shape)).reshape(batch, -1), keep=v)
        done = np.all(np.abs(new_sigma - sigma) <= tol * new_sigma)
        sigma = new_sigma
        if done:
            return sigma, iteration, True
    return sigma, max_iter, False


def _products(h_next, h_prev):
    """u -> J^T u and v -> J v as functions on arrays, J = dh_next/dh_prev."""
    probe = Tensor(np.zeros(h_next.shape, dtype=h_next.dtype), requires_grad=True)
    (jt_probe,) = ag.grad(h_next, h_prev, grad_outputs=probe, create_graph=True)

    def vjp(u):
        return ag.grad(h_next, h_prev, grad_outputs=u, retain_graph=True)[0].numpy()

    def jvp(v):
        # <J^T u, v> is linear in u; its gradient with respect to u is J v.
        (g,) = ag.grad(jt_probe, probe, grad_outputs=v, retain_graph=True, allow_unused=True)
        return np.zeros(h_next.shape) if g is None else g.numpy()

    return vjp, jvp


def _unit_rows(a, keep=None):
    """Each row scaled to norm 1; a zero row keeps the previous vector (J has no direction
    there: its sigma is 0)."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    out = a / np.where(norms == 0, 1.0, norms)
    if keep is not None and zero.any():
        out[zero] = keep[zero]
    return out


# ---- bounds and ratios ----------------------------------------------------------------------
def _observed_ratio(loss, states):
    if not isinstance(loss, Tensor) or loss.size != 1:
        raise ValueError(f"{_WHERE}: loss must be a scalar Tensor, got "
                         f"{getattr(loss, 'shape', type(loss).__name__)}")
    grads = ag.grad(loss, states, retain_graph=True, allow_unused=True)
    norms = np.array([0.0 if g is None else float(np.linalg.norm(g.numpy())) for g in grads])
    if norms[-1] == 0:
        raise ValueError(f"{_WHERE}: dL/dh_T is zero, so the ratios "
                         f"||dL/dh_k|| / ||dL/dh_T|| are undefined")
    return norms / norms[-1]


def _beta_w(model):
    """||W_hh||_2 of a tanh or relu RNN (the top layer's), else None."""
    from .recurrent import RNN
    layer = getattr(model, "rnn", model)
    if not isinstance(layer, RNN) or layer.nonlinearity not in ("tanh", "relu"):
        return None
    w_hh = getattr(layer, f"weight_hh_l{layer.num_layers - 1}")
    return float(np.linalg.norm(np.asarray(w_hh.numpy(), dtype=np.float64), 2))


# ---- input checks ---------------------------------------------------------------------------
def _consecutive_states(hidden_states):
    states = state_list(hidden_states, _WHERE)
    if len(states) < 2:
        raise ValueError(f"{_WHERE}: need at least two consecutive hidden states, got "
                         f"{len(states)}")
    for i, h in enumerate(states):
        if h.is_leaf or not h.requires_grad:
            raise ValueError(f"{_WHERE}: hidden state {i} is not in a recorded graph (a leaf, "
                             f"detached, or made under no_grad)")
        _check_intact(h)
        if h.step is None:
            raise ValueError(f"{_WHERE}: hidden state {i} was recorded outside any step "
                             f"scope (model without step scopes): the model must run each "
                             f"time step inside `with ag.step_scope(t):`")
    for i, (h_prev, h_next) in enumerate(zip(states, states[1:])):
        if h_next.step != h_prev.step + 1:
            raise ValueError(f"{_WHERE}: hidden states {i} and {i + 1} are not consecutive: "
                             f"recorded in steps {h_prev.step} and {h_next.step}")
        if h_prev.shape != h_next.shape:
            raise ValueError(f"{_WHERE}: hidden states {i} and {i + 1} have shapes "
                             f"{tuple(h_prev.shape)} and {tuple(h_next.shape)}")
        if not _reads_within_step(h_next, h_prev):
            raise ValueError(f"{_WHERE}: hidden state {i + 1} does not depend on hidden "
                             f"state {i} (not consecutive states of one sequence, or "
                             f"not in its graph)")
    return states


def _reads_within_step(h_next, h_prev):
    """Whether the step that recorded h_next reads h_prev: a walk that enters only nodes of
    that step and nodes outside every step."""
    step, seen, stack = h_next.step, {h_next}, [h_next]
    while stack:
        node = stack.pop()
        if node is h_prev:
            return True
        if node.step is not None and node.step != step:
            continue
        for inp in _check_intact(node):
            if inp not in seen:
                seen.add(inp)
                stack.append(inp)
    return False


def _check_intact(t):
    """t's inputs; a freed graph is one line that names this tool."""
    try:
        return t.inputs
    except RuntimeError:
        raise RuntimeError(f"{_WHERE}: the graph behind a hidden state was freed by a "
                           f"backward; call it before backward, or backward(retain_graph=True)"
                           ) from None
