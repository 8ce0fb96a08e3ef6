"""Optimizers with torch.optim's update rules: SGD (momentum, dampening, Nesterov, weight
decay), Adam and AdamW (decoupled weight decay).

Parameters are updated in place on their numpy arrays under `ag.no_grad()`, so every step bumps
their version counter. State (momentum buffers, moments, step counts) is plain numpy arrays and
Python numbers, and `state_dict()` / `load_state_dict()` round-trip it, keyed by the index of
each parameter in the order the groups list them (as torch does).

    opt = nn.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad(); loss.backward(); opt.step()
"""
import math

import numpy as np

import autograd_core as ag

from autograd_core import Tensor

from .clip import clip_grad_norm_, clip_grad_value_  # noqa: F401  (also nn.optim.clip_*)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_", "clip_grad_value_"]


def _plain(value):
    """A hyperparameter as a Python value: numpy scalars and 0-d arrays become numbers or
    bools, 1-d arrays tuples (so values read back from an .npz file compare equal)."""
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.ndim == 0:
            return arr.item()
        if arr.ndim == 1:
            return tuple(x.item() for x in arr)
        raise ValueError(f"hyperparameter values must be numbers or 1-d sequences, got an "
                         f"array of shape {arr.shape}")
    if isinstance(value, (list, tuple)):
        return tuple(_plain(x) for x in value)
    return value


def _describe(index, p):
    return f"parameter {index}" + (f" ({p.name!r}, shape {p.shape})" if p.name
                                   else f" (shape {p.shape})")


class Optimizer:
    """Base class. `params` is an iterable of Parameters (Tensors that require grad) or of
    dicts {"params": [...], "lr": ..., ...}, each a parameter group with its own
    hyperparameters (missing ones take the defaults).

    Subclasses set `_array_state` (names of per-parameter state arrays shaped like the
    parameter) and `_scalar_state` (names of per-parameter numbers), write
    `_check_group(group)` and `_update(group)`."""

    _array_state = ()
    _scalar_state = ()

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}  # Parameter -> {name: ndarray or number}; tensors hash by identity
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params should be an iterable of "
                            f"Parameters or of dicts, got a single Tensor; wrap it in a list")
        if isinstance(params, dict):
            params = [params]
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict {"params": ..., hyperparameter: value, ...} as a new group."""
        if not isinstance(group, dict):
            raise TypeError(f"{type(self).__name__}: a parameter group must be a dict, got "
                            f"{type(group).__name__} (do not mix Parameters and dicts)")
        params = group.get("params")
        if params is None:
            raise ValueError(f"{type(self).__name__}: a parameter group needs a 'params' entry")
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: can only optimize Tensors, got "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__}: can't optimize a non-leaf tensor "
                                 f"(shape {p.shape}); optimize the leaves it was made from")
            if p.dtype.kind != "f":
                raise TypeError(f"{type(self).__name__}: can only optimize floating-point "
                                f"tensors, got dtype {p.dtype}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{type(self).__name__}: a parameter group lists the same "
                             f"parameter twice")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{type(self).__name__}: some parameters appear in more than one "
                             f"parameter group")
        unknown = [k for k in group if k != "params" and k not in self.defaults]
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown hyperparameter(s) "
                             f"{', '.join(map(repr, unknown))}; known: "
                             f"{', '.join(self.defaults)}")
        new = {"params": params}
        for k, v in self.defaults.items():
            new[k] = _plain(group.get(k, v))
        self._check_group(new)
        self.param_groups.append(new)

    def _check_group(self, group):
        pass

    # ---- training ----------------------------------------------------------------------
    def zero_grad(self, set_to_none=True):
        """Forget every parameter's gradient (`.grad = None`; zeros with set_to_none=False)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    with ag.no_grad():
                        p.grad.zero_()

    def step(self, closure=None):
        """One update of every parameter that has a gradient (those whose `.grad` is None
        are skipped). `closure`, if given, re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with ag.enable_grad():
                loss = closure()
        with ag.no_grad():
            for group in self.param_groups:
                self._update(group)
        return loss

    def _update(self, group):
        raise NotImplementedError

    def _grad(self, p):
        """The gradient of `p` as an ndarray of p's dtype, checked against p's shape."""
        g = p.grad.numpy() if isinstance(p.grad, Tensor) else np.asarray(p.grad)
        if g.shape != p.shape:
            raise ValueError(f"{type(self).__name__}.step: the gradient of a parameter has "
                             f"shape {g.shape}, the parameter {p.shape}")
        return g.astype(p.dtype, copy=False)

    # ---- state -------------------------------------------------------------------------
    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self):
        """{"state": {index: {name: ndarray copy or number}}, "param_groups": [{hyperparameter:
        value, "params": [indices]}]}; indices count the parameters in group order."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {}
        for p in self._params():
            if p in self.state:
                state[index[id(p)]] = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                       for k, v in self.state[p].items()}
        groups = []
        for g in self.param_groups:
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = [index[id(p)] for p in g["params"]]
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state from `state_dict()`'s output (numpy arrays or
        numbers; Tensors and 0-d arrays are accepted too). The number of groups and of
        parameters in each and the shapes of the state arrays must match; nothing changes
        unless all of it is valid."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and "
                             f"'param_groups' entries")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state dict has {len(saved_groups)} "
                             f"parameter group(s), the optimizer {len(self.param_groups)}")
        new_groups, id_map = [], {}
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            saved_ids = [int(i) for i in np.asarray(saved.get("params", []),
                                                    dtype=np.int64).reshape(-1)]
            if len(saved_ids) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {gi} has "
                                 f"{len(saved_ids)} parameter(s) in the state dict, "
                                 f"{len(group['params'])} in the optimizer")
            unknown = [k for k in saved if k != "params" and k not in self.defaults]
            if unknown:
                raise ValueError(f"{name}.load_state_dict: parameter group {gi} has unknown "
                                 f"hyperparameter(s) {', '.join(map(repr, unknown))} (a state "
                                 f"dict of another optimizer?); {name} has "
                                 f"{', '.join(self.defaults)}")
            new = {"params": group["params"]}
            for k in self.defaults:
                new[k] = _plain(saved[k]) if k in saved else group[k]
            self._check_group(new)
            new_groups.append(new)
            id_map.update(zip(saved_ids, group["params"]))
        position = {id(p): i for i, p in enumerate(self._params())}
        new_state = {}
        for key, entry in dict(state_dict["state"]).items():
            idx = int(key)
            if idx not in id_map:
                raise ValueError(f"{name}.load_state_dict: the state dict has state for "
                                 f"parameter {idx}, which no parameter group lists")
            p = id_map[idx]
            where = _describe(position[id(p)], p)
            expected = set(self._array_state) | set(self._scalar_state)
            extra = sorted(set(entry) - expected)
            if extra:
                raise ValueError(f"{name}.load_state_dict: unexpected state "
                                 f"{', '.join(map(repr, extra))} for {where}; {name} keeps "
                                 f"{', '.join(sorted(expected))}")
            new_state[p] = {}
            for k, v in entry.items():
                if isinstance(v, Tensor):
                    v = v.numpy()
                if k in self._scalar_state:
                    v = np.asarray(v)
                    if v.size != 1:
                        raise ValueError(f"{name}.load_state_dict: state {k!r} of {where} "
                                         f"should be a number, got an array of shape {v.shape}")
                    new_state[p][k] = v.item()
                else:
                    arr = np.asarray(v)
                    if arr.shape != p.shape:
                        raise ValueError(f"{name}.load_state_dict: shape mismatch for state "
                                         f"{k!r} of {where}: the state dict has {arr.shape}, "
                                         f"the parameter {p.shape}")
                    new_state[p][k] = np.array(arr, dtype=p.dtype, copy=True)
            self._check_state(new_state[p], where)
        self.param_groups[:] = new_groups
        self.state = new_state

    def _check_state(self, entry, where):
        pass

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in g.items() if k != "params")
        return "\n".join(lines) + "\n)"


def _check_number(opt, what, value, low=0.0):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or \
            not math.isfinite(value) or value < low:
        raise ValueError(f"{opt}: invalid {what} {value!r}: it must be a finite number >= {low}")


class SGD(Optimizer):
    """Stochastic gradient descent, exactly torch.optim.SGD's rule:

        g = grad + weight_decay * p
        buf = g (first step)  or  momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov)  or  buf
        p = p - lr * g
    """

    _array_state = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, nesterov=False,
                 dampening=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_group(self, group):
        for what in ("lr", "momentum", "dampening", "weight_decay"):
            _check_number("SGD", what, group[what])
        if not isinstance(group["nesterov"], bool):
            raise ValueError(f"SGD: nesterov must be True or False, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum requires a momentum > 0 and zero "
                             f"dampening (momentum={group['momentum']}, "
                             f"dampening={group['dampening']})")

    def _update(self, group):
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        wd, nesterov = group["weight_decay"], group["nesterov"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = self._grad(p)
            if wd != 0:
                g = g + wd * p.numpy()
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(g, dtype=p.dtype, copy=True)
                else:
                    buf *= momentum
                    buf += (1 - dampening) * g
                g = g + momentum * buf if nesterov else buf
            p.add_((-lr) * g)


class Adam(Optimizer):
    """Adam, exactly torch.optim.Adam's rule; with decoupled_weight_decay=True it is AdamW
    (torch.optim.AdamW): the decay multiplies p by (1 - lr * weight_decay) instead of being
    added to the gradient.

        t += 1
        g = grad + weight_decay * p            (or p *= 1 - lr * weight_decay, decoupled)
        m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    _array_state = ("exp_avg", "exp_avg_sq")
    _scalar_state = ("step",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group):
        name = type(self).__name__
        for what in ("lr", "eps", "weight_decay"):
            _check_number(name, what, group[what])
        betas = group["betas"]
        if not isinstance(betas, tuple) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, b in enumerate(betas):
            if not isinstance(b, (int, float)) or isinstance(b, bool) or not 0.0 <= b < 1.0:
                raise ValueError(f"{name}: invalid beta parameter at index {i}: {b!r}; it must "
                                 f"be in [0, 1)")
        if not isinstance(group["decoupled_weight_decay"], bool):
            raise ValueError(f"{name}: decoupled_weight_decay must be True or False, got "
                             f"{group['decoupled_weight_decay']!r}")

    def _check_state(self, entry, where):
        missing = [k for k in ("step", "exp_avg", "exp_avg_sq") if k not in entry]
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state of {where} "
                             f"lacks {', '.join(map(repr, missing))}")

    def _update(self, group):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        wd, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = self._grad(p)
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {"step": 0,
                                         "exp_avg": np.zeros(p.shape, dtype=p.dtype),
                                         "exp_avg_sq": np.zeros(p.shape, dtype=p.dtype)}
            state["step"] += 1
            t = state["step"]
            if wd != 0:
                if decoupled:
                    p.mul_(1 - lr * wd)
                else:
                    g = g + wd * p.numpy()
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * (g * g)
            step_size = lr / (1 - beta1 ** t)
            denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
            p.add_((-step_size) * (m / denom))


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW), default weight_decay=1e-2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=True)

    def _check_group(self, group):
        super()._check_group(group)
        if not group["decoupled_weight_decay"]:
            raise ValueError("AdamW: decoupled_weight_decay is always True (use Adam for "
                             "L2 weight decay added to the gradient)")
