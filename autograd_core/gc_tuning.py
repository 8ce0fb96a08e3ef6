"""Let the cycle collector skip most of a growing graph.

The graph holds no reference cycles (see function.py): reference counting frees it, and every
pass of the cycle collector over its nodes is wasted. With CPython's default threshold (a
young-generation pass every 700 new container objects, an older one every 10 of those, a full
one when the survivors grow by a quarter) a forward that records a 10,000-step unroll (150,000
tracked objects) spent 130 ms in the collector, against 9 ms at 2,000 steps: the passes walk
ever more nodes and miss the cache, and this was most of why the unroll's cost grew faster
than its length. With the first threshold at 20,000 it spent 21 ms and 1.7 ms.

As for `tune_malloc`, importing autograd_core changes nothing: the `bptt` command and the
benchmarks opt in; a training script may. AUTOGRAD_CORE_GC=0 turns the opt-in off again.
"""
import gc
import os

YOUNG_THRESHOLD = 20_000


def tune_gc(threshold=YOUNG_THRESHOLD):
    """Raise the cycle collector's first threshold to `threshold` (never lower it); True when
    applied. The other two thresholds stay as they are. It affects the whole process."""
    if os.environ.get("AUTOGRAD_CORE_GC") == "0":
        return False
    first, *rest = gc.get_threshold()
    if first and first < threshold:  # 0 means the collector was turned off: leave it off
        gc.set_threshold(threshold, *rest)
    return True
