"""Differentiable operations, one module per family. Each op's derivative rule is beside its
forward; every op registers itself in `autograd_core.function.REGISTRY`."""
