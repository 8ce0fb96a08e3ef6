"""Keep freed array memory in the process on Linux (glibc), instead of handing it back to the
operating system after every op.

An autodiff step allocates and frees the same few array sizes thousands of times. With glibc's
defaults, arrays above 128 KiB are mmap'ed and unmapped one by one and the heap top is trimmed
as soon as it is free, so every op pays page faults to get memory back: measured on a GRU step
(batch 32, hidden 128, T = 50) this was a quarter of the step time. Raising the mmap and trim
thresholds lets malloc reuse the memory, as PyTorch's caching allocator does. Set
AUTOGRAD_CORE_MALLOPT=0 to leave malloc alone.
"""
import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MIB = 1 << 20


def tune_malloc():
    """Apply the thresholds once; returns True when they were applied."""
    if not sys.platform.startswith("linux") or os.environ.get("AUTOGRAD_CORE_MALLOPT") == "0":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 * _MIB) and mallopt(_M_TRIM_THRESHOLD, 256 * _MIB)
                and mallopt(_M_TOP_PAD, 16 * _MIB))


MALLOC_TUNED = tune_malloc()
