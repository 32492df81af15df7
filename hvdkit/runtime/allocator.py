"""The host allocator of a rank: glibc's malloc, tuned so that a training step reuses memory.

A step allocates and frees the same large blocks (activations, gradients, batches) every time.
glibc serves blocks above its mmap threshold (128 KiB, raised on the fly up to 32 MiB) with
fresh `mmap`s and hands the top of its heap back (`brk`) when more than the trim threshold is
free; both return memory to the kernel, so the next step takes a page fault for every 4 KiB it
touches again: kernel time that competes with compute for the host's cores (measured in
benchmarks/bench_overhead.py). Tuned, blocks up to 32 MiB come from the heap and the
heap is never trimmed: the memory a step frees stays mapped for the next one (a rank's peak
resident memory, not its working set, is what it holds).

`mallopt` takes effect for allocations from the call on; a rank calls it at start. Anything
but glibc is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest; bigger blocks still get their own mapping
TRIM_THRESHOLD = 2**31 - 1  # the largest mallopt takes: in effect never


def tune_host_allocator(setting: str) -> dict[str, Any]:
    """Apply train.host_allocator (`tuned` or `system`) to this process; what was done."""
    if setting == "system":
        return {"host_allocator": "system"}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {"host_allocator": "system", "why": "not glibc"}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return {"host_allocator": "system", "why": "mallopt refused"}
    return {"host_allocator": "tuned", "mmap_threshold": MMAP_THRESHOLD}
