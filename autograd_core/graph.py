"""Walking a recorded graph without running it: the shared iterative traversal."""
import operator

import numpy as np

by_creation = operator.attrgetter("_seq")  # creation order is a topological order


def check_intact(t, where):
    if t._op is not None and t._inputs is None:
        label = f"'{t.name}'" if t.name else f"of shape {t.shape}"
        raise RuntimeError(f"{where}: the graph behind the tensor {label} was freed by a "
                           f"backward; draw or inspect it before backward, or call "
                           f"backward(retain_graph=True)")


def walk(roots, where, limit=None):
    """Every tensor reachable from `roots` through recorded inputs (constants and leaves
    included), newest first. Iterative; raises if the graph was freed, or once more than
    `limit` tensors are found."""
    seen = set(roots)
    stack = list(seen)
    found = []
    while stack:
        t = stack.pop()
        check_intact(t, where)
        found.append(t)
        if limit is not None and len(found) > limit:
            return None
        for i in t._inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    found.sort(key=by_creation, reverse=True)
    return found


def walk_graph(roots, limit=None):
    """Every tensor the graph behind `roots` (a tensor or a sequence of them) reaches through
    recorded inputs, leaves and constants included, newest first (a reverse topological
    order). Raises RuntimeError if a backward freed the graph, and returns None once more
    than `limit` tensors are found."""
    if hasattr(roots, "_op"):
        roots = (roots,)
    return walk(tuple(roots), "walk_graph", limit)


def saved_arrays(value):
    """The arrays inside a node's saved values (nested tuples and lists)."""
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from saved_arrays(v)
