"""Shared by the benchmark modules: the timing loop, the optional torch import, machine facts."""
import gc
import os
import platform
import statistics
import sys
import time

_torch = None
_torch_tried = False


def import_torch():
    """The torch module, limited to one thread, or None where `import torch` fails."""
    global _torch, _torch_tried
    if not _torch_tried:
        _torch_tried = True
        try:
            import torch
        except Exception:  # not installed, or a broken install: compare without it
            torch = None
        if torch is not None:
            torch.set_num_threads(1)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # only allowed before torch starts parallel work
                pass
        _torch = torch
    return _torch


def repeats_for(quick):
    """(warm-up runs, timed repeats): the full run takes the median of 15 (on a shared VM
    fewer left the ratios moving by +-15% between runs)."""
    return (1, 3) if quick else (3, 15)


def time_phases(cases, quick=False):
    """Median seconds of each phase, and of their sum, for several implementations.

    `cases` maps a name to `(setup, phases)`. Each repeat calls `state = setup()` (not
    timed), then every function of `phases` in order as `fn(state)`, each timed alone with
    `time.perf_counter`. The implementations take turns within every repeat, so a burst of
    load from elsewhere on the machine lands on all of them and the ratios stay fair; each
    timed run follows an identical untimed one, so it does not pay for the caches the other
    implementations left cold. Garbage is collected before the untimed run, not between the
    two: a full collection walks every object of the process and leaves the caches as cold
    as another implementation does, which the timed run would pay for in its first step (a
    training loop runs its step back to back). The collector is off during the untimed run:
    its objects are freed again before the timed run (only what it left in reference cycles
    waits for the collector), so that what the untimed run allocated does not bring the
    timed run's passes of the collector forward. It stays on during the timed phases, as in
    real use, but starts them with its older generations reset: a loop of long steps run back
    to back (the 10,000-step unroll) would also pay an older generation's pass now and then,
    about 2% of an eager step there, which these timings leave out.
    Returns {name: (list of per-phase medians, median of the per-repeat totals)}.
    """
    warmup, repeats = repeats_for(quick)
    clock = time.perf_counter
    samples = {name: [] for name in cases}
    collecting = gc.isenabled()
    for k in range(warmup + repeats):
        for name, (setup, phases) in cases.items():
            gc.collect()
            for timed in (False, True):  # the first pass only warms up
                if not timed:
                    gc.disable()
                try:
                    state = setup()
                    times = []
                    for fn in phases:
                        t0 = clock()
                        fn(state)
                        times.append(clock() - t0)
                    del state
                finally:
                    if collecting:
                        gc.enable()
            if k >= warmup:
                samples[name].append(times)
    result = {}
    for name, runs in samples.items():
        per_phase = [statistics.median(r[i] for r in runs) for i in range(len(runs[0]))]
        result[name] = (per_phase, statistics.median(sum(r) for r in runs))
    return result


def _cpu_model():
    name = platform.processor()
    if name and name != platform.machine():
        return name
    try:  # Linux gives only the architecture from platform.processor()
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({name or platform.machine()})"
    except OSError:
        pass
    return name or platform.machine()


def machine_info():
    """(label, value) pairs describing where the numbers were measured."""
    import numpy as np

    torch = import_torch()
    threads = os.environ.get("OMP_NUM_THREADS", "?")
    return [
        ("cpu", _cpu_model()),
        ("cpus", f"{os.cpu_count()} (benchmarks use 1 thread: OMP_NUM_THREADS={threads}"
                 f"{', torch.set_num_threads(1)' if torch is not None else ''})"),
        ("system", platform.platform()),
        ("python", f"{platform.python_version()} ({platform.python_implementation()}, "
                   f"{sys.executable})"),
        ("numpy", np.__version__),
        ("torch", torch.__version__ if torch is not None else "not installed (comparison skipped)"),
    ]
