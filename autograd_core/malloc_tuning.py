"""Keep freed array memory in the process on Linux (glibc), instead of handing it back to the
operating system after every op.

An autodiff step allocates and frees the same few array sizes thousands of times. With glibc's
defaults, arrays above 128 KiB are mmap'ed and unmapped one by one and the heap top is trimmed
as soon as it is free, so every op pays page faults to get memory back: measured on a GRU step
(batch 32, hidden 128, T = 50) this was a quarter of the step time. Raising the mmap and trim
thresholds lets malloc reuse the memory, as PyTorch's caching allocator does.

Importing autograd_core changes nothing: a program opts in by calling `tune_malloc()` once (the
`bptt` command and the benchmarks do). It affects the whole process, so a library that embeds
the engine should leave the choice to its application. AUTOGRAD_CORE_MALLOPT=0 turns the opt-in
off again (to compare).
"""
import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MIB = 1 << 20


def tune_malloc():
    """Raise glibc's mmap and trim thresholds for this process; True when applied (False off
    Linux/glibc or with AUTOGRAD_CORE_MALLOPT=0). Calling it again changes nothing more."""
    if not sys.platform.startswith("linux") or os.environ.get("AUTOGRAD_CORE_MALLOPT") == "0":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 * _MIB) and mallopt(_M_TRIM_THRESHOLD, 256 * _MIB)
                and mallopt(_M_TOP_PAD, 16 * _MIB))

