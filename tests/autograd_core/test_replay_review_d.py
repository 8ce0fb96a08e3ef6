"""Review 19d: hostile probes of today's two changes to ag.replay's batched mode: the operand
order of shared product operands (replay_layout.py) and the reassociation of (p + q) + c
(batching._Graph.reassociate). Every replayed call is compared with eager mode in float64
(loss and gradients, 1e-12 relative scaled by the largest gradient; batch=False bit for bit).

Each problem the review found has its test here, above the line; below it, what held."""
import numpy as np
import pytest

import autograd_core as ag
from autograd_core import batching, replay_layout

from tests.autograd_core.replay_checks import assert_bits, assert_same, check, param, run

B, I, H = 3, 4, 5

pytestmark = pytest.mark.filterwarnings("ignore::autograd_core.replayer.ReplayWarning")


def _plan(step):
    plans = [p for p in step.plans.values() if not isinstance(p, str) and p.confirmed]
    assert len(plans) == 1
    return plans[0]


# ---- problems ------------------------------------------------------------------------------
def test_two_nested_reassociations_of_one_chain_do_not_drop_a_sum_that_is_still_read():
    """x_t U + h W + b + e_t: (x_t U + h W) + b and ((...) + b) + e_t were both reassociated,
    the second from the first's old inputs, so that it read x_t U + h W, which the first had
    dropped: the second call raised a KeyError (its backward had no slot for that sum).
    Before today's change the chain batched. Now the outer sum waits for the inner one."""
    rng = np.random.default_rng(0)
    T = 6
    u, w, b = param(rng, I, H), param(rng, H, H), param(rng, H)

    def fn(xs, es):
        h, loss = ag.zeros((B, H), dtype=np.float64), 0.0
        for t in range(T):
            h = ag.tanh(xs[t] @ u + h @ w + b + es[t])
            loss = loss + (h * h).sum()
        return loss

    argsets = [(rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H)))
               for _ in range(3)]
    step = check(fn, [u, w, b], argsets, calls=6)
    plan = _plan(step)
    assert plan.batched
    # the recurrence keeps one addition to h W per step (the rest is added ahead of it)
    adds = [s for s, *_ in plan.program if s._op.name == "add"]
    assert len(adds) <= 2 * T + 2
