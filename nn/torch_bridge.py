"""The way out to PyTorch and back: `to_torch(module)` and `from_torch(torch_module)`.

Both build the other side's module with the same configuration and copy the parameters under
the same `state_dict` keys (this library already uses torch's names, shapes and gate
stacking), so the two compute the same function. The dtype follows the source (float32 or
float64). torch is imported only when one of these is called: `import nn` never imports it.

    this library             torch
    Linear                   torch.nn.Linear
    Tanh / Sigmoid / ReLU    torch.nn.Tanh / Sigmoid / ReLU
    Sequential               torch.nn.Sequential (same item names)
    MLP                      nn.torch_modules.MLP (keys layers.{i}.weight / .bias)
    RNN, LSTM                torch.nn.RNN, torch.nn.LSTM
    GRU(variant="torch")     torch.nn.GRU
    GRU(variant="notes")     nn.torch_modules.NotesGRU (note 001's equations)
    RecurrentClassifier      nn.torch_modules.RecurrentClassifier

Anything else, and torch layers with options this library does not have (bidirectional,
proj_size, dropout between layers), is refused with a message that names it.
`optimizer_to_torch` moves an optimizer (SGD, Adam, AdamW) with its state, so training
continues in torch with the very next step it would have taken here.
"""
from collections import OrderedDict

import numpy as np

from .layers import MLP, Linear, ReLU, Sigmoid, Tanh
from .models import RecurrentClassifier
from .module import Module, Sequential
from .optim import SGD, Adam, AdamW
from .recurrent import GRU, LSTM, RNN

__all__ = ["to_torch", "from_torch", "optimizer_to_torch"]

FLOAT_DTYPES = ("float32", "float64")
ACTIVATIONS = {Tanh: "Tanh", Sigmoid: "Sigmoid", ReLU: "ReLU"}
LAYERS = {RNN: "rnn", GRU: "gru", LSTM: "lstm"}


def _torch(where):
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{where} needs PyTorch: pip install 'autograd-core[torch]' "
                          f"(torch==2.13.0)") from e
    return torch


def _one_dtype(where, dtypes, default):
    """The single floating dtype name of a module's parameters (`default` if it has none)."""
    names = sorted({str(d).replace("torch.", "") for d in dtypes})
    if not names:
        return default
    if len(names) > 1:
        raise ValueError(f"{where}: the parameters mix dtypes {', '.join(names)}; convert the "
                         f"module to one dtype first")
    if names[0] not in FLOAT_DTYPES:
        raise ValueError(f"{where}: dtype {names[0]} is not supported; use float32 or float64")
    return names[0]


def _check_same_keys(where, ours, theirs):
    """Both sides must hold exactly the same parameter names (in the same order)."""
    if list(ours) != list(theirs):
        parts = [f"only {side}: {', '.join(keys)}" for side, keys in (
            ("here", [k for k in ours if k not in theirs]),
            ("in torch", [k for k in theirs if k not in ours])) if keys]
        detail = "; ".join(parts) or "the same names in another order"
        raise ValueError(f"{where}: the parameters do not line up ({detail})")


# ---- this library -> torch ----------------------------------------------------------------
def to_torch(module):
    """A `torch.nn.Module` computing the same function as `module`, with the same parameter
    values under the same `state_dict` keys, in the dtype of `module`'s parameters (on the
    CPU: move it with `.to(device)`). `requires_grad` and train/eval mode carry over.
    Building it leaves torch's random generator as it was."""
    torch = _torch("to_torch")
    from . import torch_modules  # imports torch

    if not isinstance(module, Module):
        raise TypeError(f"to_torch: expected an nn.Module, got {type(module).__name__}")
    params = OrderedDict(module.named_parameters())
    dtype = getattr(torch, _one_dtype("to_torch", {p.dtype for p in params.values()},
                                      str(torch.get_default_dtype()).replace("torch.", "")))
    with torch.random.fork_rng(devices=[]):
        theirs = _build_torch(module, "", torch, torch_modules, dtype)
    named = OrderedDict(theirs.named_parameters())
    _check_same_keys(f"to_torch({type(module).__name__})", params, named)
    with torch.no_grad():
        for name, p in params.items():
            named[name].copy_(torch.from_numpy(np.ascontiguousarray(p.numpy())))
            named[name].requires_grad_(p.requires_grad)
    theirs.train(module.training)
    return theirs


def _build_torch(m, where, torch, tm, dtype):
    kind = type(m)
    at = f" at {where!r}" if where else ""
    if kind is Linear:
        return torch.nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                               dtype=dtype)
    if kind in ACTIVATIONS:
        return getattr(torch.nn, ACTIVATIONS[kind])()
    if kind is MLP:
        return tm.MLP(m.sizes, m.activation, dtype=dtype)
    if kind in LAYERS:
        return tm.recurrent_layer(m.mode, m.input_size, m.hidden_size, dtype=dtype,
                                  **_layer_options(m))
    if kind is Sequential:
        return torch.nn.Sequential(OrderedDict(
            (name, _build_torch(child, _join(where, name), torch, tm, dtype))
            for name, child in m.named_children()))
    if kind is RecurrentClassifier:
        # a shell whose children are the converted ones: a replaced `rnn` or `out` is
        # converted as what it is (or refused)
        theirs = tm.RecurrentClassifier(1, 1, 1, cell=m.cell, dtype=dtype)
        theirs.rnn = _build_torch(m.rnn, _join(where, "rnn"), torch, tm, dtype)
        theirs.out = _build_torch(m.out, _join(where, "out"), torch, tm, dtype)
        return theirs
    raise TypeError(f"to_torch: {kind.__name__}{at} is not supported; supported: Linear, "
                    f"Tanh, Sigmoid, ReLU, Sequential, MLP, RNN, GRU, LSTM, "
                    f"RecurrentClassifier")


def _layer_options(m):
    options = {"num_layers": m.num_layers, "bias": m.bias, "batch_first": m.batch_first}
    if m.mode == "rnn":
        options["nonlinearity"] = m.nonlinearity
    if m.mode == "gru":
        options["variant"] = m.variant
    return options


def _join(where, name):
    return f"{where}.{name}" if where else name


# ---- torch -> this library ----------------------------------------------------------------
def from_torch(torch_module):
    """This library's module computing the same function as `torch_module` (torch.nn's
    Linear, RNN, GRU, LSTM, Tanh, Sigmoid, ReLU, a Sequential of these, or a module made by
    `to_torch`), with its parameter values (copied to the CPU) under the same keys, in its
    dtype. Anything else is refused with a message naming what is not supported."""
    torch = _torch("from_torch")
    from . import torch_modules

    if not isinstance(torch_module, torch.nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, got "
                        f"{type(torch_module).__name__}")
    named = OrderedDict(torch_module.named_parameters())
    if any(p.is_meta for p in named.values()):
        raise ValueError("from_torch: the module's parameters are on the meta device (they "
                         "hold no values)")
    dtype = np.dtype(_one_dtype("from_torch", {p.dtype for p in named.values()}, "float32"))
    ours = _build_ours(torch_module, "", torch, torch_modules, dtype)
    params = OrderedDict(ours.named_parameters())
    _check_same_keys(f"from_torch({type(torch_module).__name__})", params, named)
    ours.load_state_dict({k: p.detach().cpu().numpy() for k, p in named.items()})
    for name, p in named.items():
        params[name].requires_grad = p.requires_grad
    ours.train(torch_module.training)
    return ours


def _build_ours(m, where, torch, tm, dtype):
    tnn, kind = torch.nn, type(m)
    at = f" at {where!r}" if where else ""
    rng = np.random.default_rng(0)  # values are overwritten: leave the global generator alone
    if kind is tnn.Linear:
        return Linear(m.in_features, m.out_features, bias=m.bias is not None, rng=rng,
                      dtype=dtype)
    for ours, name in ACTIVATIONS.items():
        if kind is getattr(tnn, name):
            return ours()
    if kind in (tnn.RNN, tnn.GRU, tnn.LSTM, tm.NotesGRU):
        return _recurrent_from_torch(m, kind, at, tnn, tm, rng, dtype)
    if kind is tnn.Sequential:
        seq = Sequential()
        for name, child in m.named_children():
            seq.add_module(name, _build_ours(child, _join(where, name), torch, tm, dtype))
        return seq
    if kind is tm.MLP:
        return MLP(m.sizes, m.activation, rng=rng, dtype=dtype)
    if kind is tm.RecurrentClassifier:
        ours = RecurrentClassifier(1, 1, 1, cell=m.cell, rng=rng, dtype=dtype)  # a shell
        ours.rnn = _build_ours(m.rnn, _join(where, "rnn"), torch, tm, dtype)
        ours.out = _build_ours(m.out, _join(where, "out"), torch, tm, dtype)
        return ours
    name = f"{kind.__module__}.{kind.__qualname__}"
    if name.startswith("torch.nn.modules."):
        name = f"torch.nn.{kind.__name__}"
    raise TypeError(f"from_torch: {name}{at} is not supported; supported: torch.nn's "
                    f"Linear, RNN, GRU, LSTM, Tanh, Sigmoid, ReLU and Sequential of these, and "
                    f"the modules nn.to_torch makes")


def _recurrent_from_torch(m, kind, at, tnn, tm, rng, dtype):
    unsupported = []
    if kind is not tm.NotesGRU:
        if m.bidirectional:
            unsupported.append("bidirectional=True")
        if getattr(m, "proj_size", 0):
            unsupported.append(f"proj_size={m.proj_size}")
        if m.dropout:
            unsupported.append(f"dropout={m.dropout}")
    if unsupported:
        raise ValueError(f"from_torch: torch.nn.{kind.__name__}{at} uses "
                         f"{', '.join(unsupported)}, which this library does not support")
    args = (m.input_size, m.hidden_size)
    kw = {"num_layers": m.num_layers, "bias": m.bias, "batch_first": m.batch_first,
          "rng": rng, "dtype": dtype}
    if kind is tnn.RNN:
        return RNN(*args, nonlinearity=m.nonlinearity, **kw)
    if kind is tnn.LSTM:
        return LSTM(*args, **kw)
    return GRU(*args, variant="torch" if kind is tnn.GRU else "notes", **kw)


# ---- optimizers -----------------------------------------------------------------------------
OPTIMIZERS = {SGD: "SGD", Adam: "Adam", AdamW: "AdamW"}


def optimizer_to_torch(optimizer, module, torch_module):
    """torch.optim's counterpart of `optimizer` (SGD, Adam or AdamW) over `torch_module`'s
    parameters, with the same parameter groups, hyperparameters and state (momentum buffers,
    Adam's moments and step counts): its next step is the one `optimizer` would take.
    `torch_module` is `to_torch(module)`, possibly moved to another device since; a
    parameter is matched to its torch counterpart by its name in `module`."""
    torch = _torch("optimizer_to_torch")
    kind = type(optimizer)
    if kind not in OPTIMIZERS:
        raise TypeError(f"optimizer_to_torch: {kind.__name__} is not supported; supported: "
                        f"{', '.join(OPTIMIZERS.values())}")
    names = {id(p): n for n, p in module.named_parameters()}
    theirs = dict(torch_module.named_parameters())
    groups = []
    for gi, group in enumerate(optimizer.param_groups):
        params = []
        for p in group["params"]:
            name = names.get(id(p))
            if name is None:
                raise ValueError(f"optimizer_to_torch: parameter group {gi} holds a parameter "
                                 f"(shape {p.shape}) that is not in the "
                                 f"{type(module).__name__} given")
            if name not in theirs:
                raise ValueError(f"optimizer_to_torch: the torch module has no parameter "
                                 f"{name!r}")
            params.append(theirs[name])
        options = {k: v for k, v in group.items() if k != "params"}
        if kind is AdamW:
            options.pop("decoupled_weight_decay")
        groups.append(dict(options, params=params))
    torch_opt = getattr(torch.optim, OPTIMIZERS[kind])(groups)
    state = optimizer.state_dict()
    state["state"] = {i: {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                          for k, v in entry.items()}
                      for i, entry in state["state"].items()}
    # torch keeps its own defaults for what this library does not have (amsgrad, foreach...)
    state["param_groups"] = [dict(g, **{k: v for k, v in tg.items() if k not in g})
                             for g, tg in zip(state["param_groups"],
                                              torch_opt.state_dict()["param_groups"])]
    torch_opt.load_state_dict(state)
    return torch_opt
