"""A lean eager engine for the MLP benchmark: the least Python a reverse-mode engine that
records a graph as the forward runs can spend per node, as a second reference beside the
hand-written numpy floor.

A node is a value, its parents and a closure that turns the node's gradient into its parents';
the backward sorts the graph (depth first) and runs the closures newest first, summing the
gradients in a dict. Nothing else: no checks of shapes or dtypes, no version counters (an
in-place change goes unseen), no hooks, no observers, no freeing of the graph, no claim against
a second backward, no deferred weight products, no .grad tensors (a leaf's .grad is the array).
Its numpy calls are the floor's arithmetic, written as autograd_core's rules write them (a
float32 1 where numpy's weak scalars cost more). The distance between autograd_core and this
engine is what autograd_core's bookkeeping costs; the distance between this engine and the
floor is what any eager graph costs.
"""
import numpy as np


class Node:
    __slots__ = ("data", "parents", "rule", "grad")

    def __init__(self, data, parents=(), rule=None):
        self.data, self.parents, self.rule, self.grad = data, parents, rule, None

    def backward(self):
        backward(self)

    def item(self):
        return self.data.item()


def linear(x, w, b):
    """x w^T + b. An x without parents (the batch fed in) gets no gradient: the benchmark's
    input needs none, as autograd_core's input requires none."""
    out = x.data.dot(w.data.T)
    np.add(out, b.data, out)

    def rule(g):
        grads = ((w, g.T.dot(x.data)), (b, np.add.reduce(g, axis=0)))
        return grads + ((x, g.dot(w.data)),) if x.parents else grads

    return Node(out, (x, w, b), rule)


def tanh(x):
    y = np.tanh(x.data)
    one = np.ones((), y.dtype)
    return Node(y, (x,), lambda g: ((x, g * (one - y * y)),))


def mean_cross_entropy(z, target):
    """The batch mean of softmax cross-entropy over the rows of z, for integer targets."""
    logits = z.data
    shifted = logits - np.maximum.reduce(logits, axis=-1, keepdims=True)
    rows = np.arange(logits.shape[0])
    picked = shifted[rows, target]
    e = np.exp(shifted, out=shifted)
    total = np.add.reduce(e, axis=-1, keepdims=True)
    losses = np.log(total)[:, 0] - picked
    probs = np.divide(e, total, out=e)
    count = logits.dtype.type(logits.shape[0])

    def rule(g):
        scale = g / count
        grad = probs * scale
        grad[rows, target] -= scale
        return ((z, grad),)

    return Node(np.add.reduce(losses) / count, (z,), rule)


def backward(root):
    """Each leaf's .grad (an array) from d root = 1: the closures run newest first."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in node.parents if p not in seen)
    grads = {root: np.ones((), root.data.dtype)}
    for node in reversed(order):
        g = grads.pop(node, None)
        if g is None:
            continue
        if node.rule is None:  # a leaf
            node.grad = g if node.grad is None else node.grad + g
            continue
        for parent, gp in node.rule(g):
            prev = grads.get(parent)
            grads[parent] = gp if prev is None else prev + gp


def mlp_loss(params, x, y, layers):
    """The forward of the MLP benchmark (tanh hidden layers, mean cross-entropy) on leaves
    `params` ({state-dict name: Node}) and the input node `x`; returns the loss node."""
    a = x
    for i in range(layers):
        a = linear(a, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
        if i < layers - 1:
            a = tanh(a)
    return mean_cross_entropy(a, y)
