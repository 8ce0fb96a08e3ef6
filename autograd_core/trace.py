"""A record of the reverse sweep, step by step, for teaching: which node, what gradient came in,
the derivative rule in words, and what went to each input. Watch the chain rule run on the
notes' 3-step RNN:

    tr = ag.trace_backward(loss, params=model)
    print(tr.to_markdown())
"""
import dataclasses
import json

import numpy as np

from .engine import _root_gradient, _sweep
from .graph import walk
from .viz import _param_names

RULES = {
    "add": "d(a + b) = (g, g)", "sub": "d(a - b) = (g, -g)", "neg": "d(-x) = -g",
    "mul": "d(a * b) = (g * b, g * a)", "div": "d(a / b) = (g / b, -g * a / b^2)",
    "add_scalar": "d(x + c) = g", "rsub_scalar": "d(c - x) = -g", "mul_scalar": "d(c x) = c g",
    "div_scalar": "d(x / c) = g / c", "rdiv_scalar": "d(c / x) = -c g / x^2",
    "pow": "d(a^b) = (g b a^(b-1), g a^b log a)", "pow_scalar": "d(x^c) = c x^(c-1) g",
    "rpow_scalar": "d(c^x) = c^x log c g", "exp": "d exp = exp(x) g", "log": "d log = g / x",
    "sqrt": "d sqrt = g / (2 sqrt(x))", "abs": "d|x| = sign(x) g",
    "tanh": "d tanh = (1 - y^2) g", "sigmoid": "d sigmoid = y (1 - y) g",
    "relu": "d relu = g where x > 0", "clip": "g where min <= x <= max",
    "maximum": "g to the larger (half each on ties)", "minimum": "g to the smaller",
    "where": "g to the chosen side", "matmul": "d(A @ B) = (g B^T, A^T g)",
    "addmm": "d(c + A @ B) = (g, g B^T, A^T g)", "linear": "d(x W^T + b) = (g W, g^T x, g)",
    "sum": "g spread over the summed axes",
    "mean": "g / n spread over the axes", "max": "g to the maxima (split on ties)",
    "min": "g to the minima (split on ties)", "logsumexp": "g softmax(x)",
    "softmax": "y (g - sum(g y))", "log_softmax": "g - softmax(x) sum(g)",
    "softmax_cross_entropy": "(softmax(x) - onehot(target)) g",
    "getitem": "g put back at the index", "scatter": "g read at the index",
    "reshape": "g reshaped back", "transpose": "g transposed back",
    "broadcast_to": "g summed over the broadcast axes", "sum_to": "g broadcast back",
    "stack": "g split along the new axis", "concatenate": "g split along the axis",
    "astype": "g converted back",
}


@dataclasses.dataclass
class BackwardTrace:
    rows: list  # one dict per node, in sweep order
    gradients: dict  # leaf label -> final gradient (ndarray)
    totals: dict  # leaf label -> sum of the contributions the rows sent to it

    def to_json(self):
        return json.dumps({"rows": self.rows,
                           "gradients": {k: v.tolist() for k, v in self.gradients.items()}},
                          indent=1)

    def to_markdown(self):
        lines = ["| # | node | step | op | incoming |grad| | rule | sent to inputs |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            sent = "; ".join(f"{s['input']} += {s['norm']:.4g}" for s in r["sent"]) or "-"
            step = "" if r["step"] is None else r["step"]
            lines.append(f"| {r['index']} | {r['node']} | {step} | {r['op']} | "
                         f"{r['grad_norm']:.4g} | {r['rule']} | {sent} |")
        return "\n".join(lines)

    def write(self, prefix):
        """Write `prefix`.md and `prefix`.json."""
        with open(f"{prefix}.md", "w") as f:
            f.write(self.to_markdown() + "\n")
        with open(f"{prefix}.json", "w") as f:
            f.write(self.to_json() + "\n")


def _labeller(tensors, names):
    labels, counts = {}, {}
    for t in reversed(tensors):  # oldest first, so labels number in forward order
        base = names.get(t) or t.name or (t._op.name if t._op else "input")
        counts[base] = counts.get(base, 0) + 1
        labels[t] = base if t in names else f"{base}#{counts[base]}"
    return labels


def trace_backward(loss, params=None):
    """Run a backward of the scalar `loss` that records every step; `.grad` is not touched
    and the graph is kept. `params` (a Module, dict or pairs) names the leaves."""
    tensors = walk((loss,), "trace_backward")
    names = _param_names(params)
    label = _labeller(tensors, names)
    leaves = [t for t in tensors if t._op is None and t.requires_grad]
    rows, totals = [], {}

    def record_step(node, g, sent):
        row = {"index": len(rows) + 1, "node": label[node], "op": node._op.name,
               "step": node._step, "grad_shape": list(np.shape(g)),
               "grad_norm": float(np.linalg.norm(g)), "rule": RULES.get(node._op.name, ""),
               "sent": []}
        for k, inp, gi in sent:
            row["sent"].append({"input": label[inp], "index": k,
                                "norm": float(np.linalg.norm(gi))})
            if inp._op is None:
                totals[label[inp]] = totals.get(label[inp], 0) + np.asarray(gi)
        rows.append(row)

    root = _root_gradient("trace_backward", loss, None, False)
    captured = _sweep((loss,), (root,), True, False, wanted=leaves, trace=record_step)
    gradients = {label[t]: np.asarray(captured[t]) for t in leaves if t in captured}
    return BackwardTrace(rows, gradients, totals)
