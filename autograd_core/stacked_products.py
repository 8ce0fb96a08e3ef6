"""A shared weight's gradient from its uses' factors: sum_i left_i^T right_i as one matrix
product of the stacked factors (the eager sweep's deferred products, Op.backward_split, and a
replayed sweep's, which may reuse a stack it made already)."""
import numpy as np

from .ops.linalg import product


def stacked_products(parts, g, stacks=None):
    """sum_i left_i^T right_i (+ g, the gradient from other uses) as one matrix product of
    the stacked factors: a weight shared by T time steps gets one large product, not T small.
    The factors are stacked in the order the uses were recorded (the sweep met them newest
    first). `stacks` (a replayed sweep's) holds stacks made before, to be used again where
    the same arrays come in the same order (see joined). The result is a new array that only
    the sweep holds."""
    if len(parts) == 1:
        left, right = parts[0]
        total = product(left.T, right)
    else:
        parts = parts[::-1]
        total = product(joined([left for left, _ in parts], stacks).T,
                        joined([right for _, right in parts], stacks))
    if g is not None:
        total = total + g
    return total


def joined(arrays, stacks=None):
    """np.concatenate(arrays), or the concatenation of the very same arrays (identity, in
    order) that `stacks` ({id of the first array: (arrays, concatenation)}) already holds:
    a gate's gradients, stacked for its input projection's gradient, are the right factors
    of its weight's; two gates that multiply the same state share their left factors. The
    entries keep their arrays alive, so an id cannot be reused while it is looked up."""
    if stacks is None:
        return np.concatenate(arrays)
    held = stacks.get(id(arrays[0]))
    if held is not None and len(held[0]) == len(arrays) and all(
            a is b for a, b in zip(held[0], arrays)):
        return held[1]
    out = stacks[id(arrays[0])] = (arrays, np.concatenate(arrays))
    return out[1]
