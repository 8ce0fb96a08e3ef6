"""Differentiable operations, one module per family. Each op's derivative rule is beside its
forward; every op registers itself in `autograd_core.function.REGISTRY`.

Every module of this package is imported here, and the functions each lists in `__all__`
become `ag.<name>`: adding an op is adding one module (see softplus.py).
"""
import importlib
import pkgutil

PUBLIC = {}  # name -> function, for autograd_core's namespace

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module.startswith("_"):
        continue
    _mod = importlib.import_module(f"{__name__}.{_module}")
    for _name in getattr(_mod, "__all__", ()):
        PUBLIC[_name] = getattr(_mod, _name)
