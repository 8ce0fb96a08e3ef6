"""How big is the graph behind a loss: nodes, saved arrays and bytes, per op and per time step,
and the peak memory its backward will need.

A graph that grows from one training iteration to the next is the signature of a hidden state
carried across batches without `detach()`: `GraphGrowthMonitor` warns about it.
"""
import dataclasses
import warnings

from .graph import saved_arrays, walk
from .peak_memory import backward_peak


@dataclasses.dataclass
class GraphStats:
    nodes: int  # recorded ops (tensors with a grad_fn)
    leaves: int  # tensors without one (parameters, data, constants)
    arrays: int  # arrays the graph keeps alive: node outputs and saved values
    bytes: int  # their sizes added up, a view as if it were a copy (see held_bytes)
    by_op: dict  # op name -> {"nodes", "bytes"}
    by_step: dict  # time step (None outside step scopes) -> {"nodes", "bytes"}
    # The memory of those arrays: a view costs nothing beyond its base, and the arrays of
    # leaves (parameters, data) are not counted. What a backward starts from.
    held_bytes: int = 0
    # The most memory the graph and the gradients take at once during `backward()` without
    # retain_graph, held_bytes included (see `backward_peak`).
    backward_peak_bytes: int = 0

    def table(self):
        """The per-op and per-step counts as text."""
        lines = [f"{self.nodes} nodes, {self.leaves} leaves, {self.arrays} arrays, "
                 f"{self.bytes / 1024:.1f} KiB",
                 f"backward peak {self.backward_peak_bytes / 1024:.1f} KiB = "
                 f"{self.held_bytes / 1024:.1f} KiB graph memory (a view shares its base's, "
                 f"leaves' arrays left out) + "
                 f"{(self.backward_peak_bytes - self.held_bytes) / 1024:.1f} KiB gradients",
                 "", f"{'op':<22} {'nodes':>6} {'KiB':>9}"]
        for name, row in sorted(self.by_op.items(), key=lambda kv: -kv[1]["bytes"]):
            lines.append(f"{name:<22} {row['nodes']:>6} {row['bytes'] / 1024:>9.1f}")
        steps = sorted((s for s in self.by_step if s is not None))
        if steps:
            lines += ["", f"{'step':<22} {'nodes':>6} {'KiB':>9}"]
            for s in steps:
                row = self.by_step[s]
                lines.append(f"{s:<22} {row['nodes']:>6} {row['bytes'] / 1024:>9.1f}")
        return "\n".join(lines)


def graph_stats(root):
    """Count the graph recorded behind `root` (before its backward frees it) and replay the
    memory of its backward (`backward_peak`)."""
    tensors = walk((root,), "graph_stats")
    by_op, by_step, seen = {}, {}, set()
    nodes = arrays = total = 0
    for t in tensors:
        if t.op is None:
            continue
        nodes += 1
        size = 0
        for arr in (t.data, *saved_arrays(t.saved)):
            if id(arr) not in seen:
                seen.add(id(arr))
                arrays += 1
                size += arr.nbytes
        total += size
        for table, key in ((by_op, t.op.name), (by_step, t.step)):
            row = table.setdefault(key, {"nodes": 0, "bytes": 0})
            row["nodes"] += 1
            row["bytes"] += size
    held, peak = backward_peak(root, tensors)
    return GraphStats(nodes, len(tensors) - nodes, arrays, total, by_op, by_step, held, peak)


class GraphGrowthWarning(UserWarning):
    """The graph behind the loss keeps growing across training iterations."""


class GraphGrowthMonitor:
    """Call `check(loss)` once per training iteration (before backward). It warns when the node
    count has grown for `patience` iterations in a row: usually a hidden state carried into
    the next batch without `h = h.detach()`, so every backward goes through all earlier
    batches (or fails once their graphs are freed)."""

    def __init__(self, patience=3):
        self.patience, self.history, self._rising = patience, [], 0

    def check(self, loss):
        nodes = sum(t.op is not None for t in walk((loss,), "GraphGrowthMonitor.check"))
        if self.history and nodes > self.history[-1]:
            self._rising += 1
        else:
            self._rising = 0
        self.history.append(nodes)
        if self._rising >= self.patience:
            warnings.warn(f"the graph behind the loss has grown for {self._rising} iterations "
                          f"in a row ({self.history[-self._rising - 1]} -> {nodes} nodes): is "
                          f"a hidden state carried across batches without h = h.detach()?",
                          GraphGrowthWarning, stacklevel=2)
        return nodes
