"""Module and Parameter, as in torch.nn: parameters are registered by attribute assignment."""
from collections import OrderedDict, namedtuple

import numpy as np

from autograd_core import Tensor
from autograd_core.grad_mode import no_grad
from autograd_core.tensor import _to_array

IncompatibleKeys = namedtuple("IncompatibleKeys", "missing_keys unexpected_keys")


class Parameter(Tensor):
    """A tensor that requires grad and that a Module registers when it is assigned to it."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, name=None):
        arr = _to_array(data, None)  # Python floats and lists -> float32, as Tensor
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float32)
        super().__init__(arr, requires_grad=requires_grad, name=name)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _as_array(value):
    """An ndarray from an array, a Tensor, or anything with .detach()/.numpy() (torch)."""
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value)


class Module:
    """Base class of every layer and model. Subclasses assign Parameters and sub-Modules as
    attributes in `__init__` and write `forward`; calling the module calls `forward`."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration --------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before "
                               f"assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
            if value.name is None:
                value.name = name
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        setattr(self, name, param)

    def add_module(self, name, module):
        setattr(self, name, module)

    # ---- traversal -----------------------------------------------------------------------
    def children(self):
        return iter(self._modules.values())

    def named_children(self):
        return iter(self._modules.items())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs, each parameter once, in registration order."""
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    # ---- training helpers ----------------------------------------------------------------
    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def to(self, dtype):
        """Convert every parameter to `dtype` (e.g. np.float64 for gradient checks)."""
        with no_grad():
            for p in self.parameters():
                p.data = p.numpy().astype(dtype)
                p.grad = None
        return self

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self):
        """name -> ndarray (a copy) for every parameter."""
        return OrderedDict((n, p.numpy().copy()) for n, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the parameters. Arrays, Tensors and torch tensors are accepted.
        With strict, missing and unexpected keys are errors; a shape mismatch always is.
        Nothing is changed unless every entry is valid."""
        params = dict(self.named_parameters())
        missing = [n for n in params if n not in state_dict]
        unexpected = [n for n in state_dict if n not in params]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected keys: {', '.join(unexpected)}")
            raise KeyError(f"load_state_dict for {type(self).__name__}: {'; '.join(parts)}")
        staged = {}
        for name, value in state_dict.items():
            if name not in params:
                continue
            arr = _as_array(value)
            if arr.shape != params[name].shape:
                raise ValueError(f"load_state_dict: shape mismatch for {name}: the checkpoint "
                                 f"has {arr.shape}, the model has {params[name].shape}")
            staged[name] = arr
        with no_grad():
            for name, arr in staged.items():
                p = params[name]
                p.data = np.array(arr, dtype=p.dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    # ---- calling ---------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self):
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}("] + ([f"  {extra}"] if extra else [])
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied one after another."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return type(self)(*list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (names '0', '1', ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        if isinstance(i, slice):
            return type(self)(list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
