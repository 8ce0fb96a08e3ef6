"""Module and Parameter, as in torch.nn: parameters are registered by attribute assignment.

A registered Parameter that has no name of its own is named after its key in
`named_parameters()` ('rnn.weight_hh_l0', 'layers.0.weight'), so that anomaly messages, graph
drawings and optimizer errors can say which parameter they mean. The name follows the path
through which the parameter (and each module above it) was *first* registered: assigning a
module into a parent prefixes the names below it, and a module or parameter that is already
placed keeps its name when it is registered a second time (tied weights, a slice of a
ModuleList). A name the user set (`Parameter(..., name="w")` or `p.name = "w"`) is never
changed. Names are metadata only: `state_dict()` and `load_state_dict()` use the keys of
`named_parameters()`, never `Parameter.name`.
"""
import weakref
from collections import OrderedDict, namedtuple

import numpy as np

import autograd_core as ag

from autograd_core import Tensor

IncompatibleKeys = namedtuple("IncompatibleKeys", "missing_keys unexpected_keys")


class Parameter(Tensor):
    """A tensor that requires grad and that a Module registers when it is assigned to it.
    Without a `name` of its own it takes its key in the model's `named_parameters()`
    (see the top of this module)."""

    # _home: (weakref to the module, attribute) where the parameter was named;
    # _auto_name: the name the module gave it (a different `name` was set by the user).
    __slots__ = ("_home", "_auto_name")

    def __init__(self, data, requires_grad=True, name=None):
        arr = ag.as_tensor(data).data  # Python floats and lists -> float32, as Tensor
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float32)
        super().__init__(arr, requires_grad=requires_grad, name=name)
        self._home = None
        self._auto_name = None

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __getstate__(self):
        # a weak reference cannot be pickled; a copy is re-homed when it is registered
        dict_state, slots = super().__getstate__()
        slots = {k: v for k, v in slots.items() if k != "_home"}
        return dict_state, slots


# ---- automatic parameter names ----------------------------------------------------------------
def _has_auto_name(p):
    return p.name is None or p.name == getattr(p, "_auto_name", None)


def _owner(module):
    """(parent, attribute) of the earliest registration of `module` that still holds it."""
    for ref, attr in module.__dict__.get("_owners", ()):
        parent = ref()
        if parent is not None and parent._modules.get(attr) is module:
            return parent, attr
    return None


def _prefix(module):
    """'a.b.' for a module registered as `b` inside the module registered as `a`."""
    parts, seen = [], {id(module)}
    owner = _owner(module)
    while owner is not None and id(owner[0]) not in seen:
        parts.append(owner[1])
        seen.add(id(owner[0]))
        owner = _owner(owner[0])
    return "".join(p + "." for p in reversed(parts))


def _home(p):
    """(module, attribute) where `p` was named, if that module still holds it there."""
    home = getattr(p, "_home", None)
    if home is not None:
        module = home[0]()
        if module is not None and module._parameters.get(home[1]) is p:
            return module, home[1]
    return None


def _name_parameter(module, attr, p, prefix=None):
    if not _has_auto_name(p):
        return
    home = _home(p)
    if home is None:  # first (or only remaining) place: it becomes the home
        p._home = (weakref.ref(module), attr)
    elif home != (module, attr):  # already named where it was first registered
        return
    p.name = p._auto_name = (_prefix(module) if prefix is None else prefix) + attr


def _rename_below(module):
    """Re-derive the automatic names of the parameters in `module` and below it."""
    seen = set()
    for _, m in module.named_modules():
        if id(m) in seen:
            continue
        seen.add(id(m))
        prefix = _prefix(m)
        for attr, p in m._parameters.items():
            _name_parameter(m, attr, p, prefix)


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
        object.__setattr__(self, "_owners", [])  # [(weakref to parent, attribute)]

    # ---- registration --------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before "
                               f"assigning attributes")
        self._parameters.pop(name, None)
        old_module = self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
            _name_parameter(self, name, value)
        elif isinstance(value, Module):
            self._modules[name] = value
            if value is not old_module:
                self._adopt(name, value)
        if old_module is not None and old_module is not value:
            _rename_below(old_module)  # its names now start where it is still registered
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        old_module = self._modules.pop(name, None)
        object.__delattr__(self, name)
        if old_module is not None:
            _rename_below(old_module)

    def _adopt(self, name, module):
        """Record that `module` is registered here as `name`; if this is now its earliest
        registration, prefix the parameter names below it."""
        before = _owner(module)
        owners = module.__dict__.setdefault("_owners", [])
        owners[:] = [(ref, attr) for ref, attr in owners
                     if ref() is not None and ref()._modules.get(attr) is module]
        owners.append((weakref.ref(self), name))
        if before is None:
            _rename_below(module)

    def __getstate__(self):
        # Weak references cannot be pickled: links to parents are dropped (a copy of a
        # submodule starts unregistered) and rebuilt from the parent's side in __setstate__.
        state = dict(self.__dict__)
        state["_owners"] = []
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for name, child in self._modules.items():
            child.__dict__.setdefault("_owners", []).append((weakref.ref(self), name))
        for name, p in self._parameters.items():
            if _has_auto_name(p) and _home(p) is None:
                p._home = (weakref.ref(self), name)

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
        with ag.no_grad():
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
        with ag.no_grad():
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
