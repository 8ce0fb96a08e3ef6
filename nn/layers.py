"""Feed-forward layers: Linear, Embedding, activations, MLP."""
import math

import numpy as np

import autograd_core as ag

from .init import get_rng, uniform
from .module import Module, ModuleList, Parameter


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features) as torch.nn.Linear."""

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        _check_sizes("Linear", in_features=in_features, out_features=out_features)
        rng = get_rng(rng)
        bound = 1 / math.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(uniform((out_features, in_features), bound, rng, dtype))
        self.bias = Parameter(uniform((out_features,), bound, rng, dtype)) if bias else None

    def forward(self, x):
        shape = x.shape
        if not shape or shape[-1] != self.in_features:
            raise ValueError(f"Linear: expected input with last dimension {self.in_features}, "
                             f"got shape {tuple(shape)}")
        if len(shape) == 2:  # the common case: one node for x W^T + b
            return ag.linear(x, self.weight, self.bias)
        if x.ndim > 2:  # (T, B, in): one 2-D product rather than a batched one
            flat = ag.linear(x.reshape(-1, self.in_features), self.weight, self.bias)
            return flat.reshape(*x.shape[:-1], self.out_features)
        out = self.weight @ x  # (in,) -> (out,)
        return out if self.bias is None else out + self.bias

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table: integer indices -> rows of `weight` (num_embeddings, embedding_dim),
    initialised N(0, 1) as torch.nn.Embedding."""

    def __init__(self, num_embeddings, embedding_dim, rng=None, dtype=np.float32):
        super().__init__()
        _check_sizes("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        weights = get_rng(rng).standard_normal((num_embeddings, embedding_dim)).astype(dtype)
        self.weight = Parameter(weights)

    def forward(self, indices):
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            raise IndexError(f"Embedding: index out of range [0, {self.num_embeddings}) "
                             f"(min {idx.min()}, max {idx.max()})")
        return self.weight[idx]

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Tanh(Module):
    def forward(self, x):
        return ag.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return ag.sigmoid(x)


class ReLU(Module):
    def forward(self, x):
        return ag.relu(x)


ACTIVATIONS = {"tanh": ag.tanh, "sigmoid": ag.sigmoid, "relu": ag.relu}


class MLP(Module):
    """The notes' multilayer perceptron: `sizes = [n0, n1, ..., nL]`, activation f after every
    hidden layer. The last layer is linear by default (apply a loss to it);
    `output_activation="sigmoid"` (or "tanh", "relu") applies f to z^(L) as well, the
    a^(L) = f(z^(L)) of notes 002 and 004 whose delta^(L) = -(y - a^(L)) * f'(z^(L)).
    Parameters `layers.{i}.weight` and `layers.{i}.bias`, as the hand-derived reference
    expects."""

    def __init__(self, sizes, activation="tanh", rng=None, dtype=np.float32,
                 output_activation=None):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"MLP: sizes needs at least an input and an output size, got "
                             f"{list(sizes)}")
        for what, name in (("activation", activation), ("output_activation",
                                                         output_activation)):
            if name not in ACTIVATIONS and not (what == "output_activation" and name is None):
                raise ValueError(f"MLP: unknown {what} {name!r}; choose one of "
                                 f"{', '.join(ACTIVATIONS)}"
                                 + (" or None" if what == "output_activation" else ""))
        rng = get_rng(rng)
        self.sizes, self.activation = list(sizes), activation
        self.output_activation = output_activation
        self.layers = ModuleList(Linear(a, b, rng=rng, dtype=dtype)
                                 for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        f = ACTIVATIONS[self.activation]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = f(x)
        if self.output_activation is not None:
            x = ACTIVATIONS[self.output_activation](x)
        return x

    def extra_repr(self):
        extra = ("" if self.output_activation is None else
                 f", output_activation={self.output_activation!r}")
        return f"sizes={self.sizes}, activation={self.activation!r}{extra}"


def _check_sizes(where, **sizes):
    for name, value in sizes.items():
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")
