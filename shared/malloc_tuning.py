"""Keep large message buffers in the heap instead of mapping fresh pages for each one.

glibc serves allocations above its mmap threshold (dynamic, 128 KiB to 32 MiB) with fresh
mmap'd pages and unmaps them on free, so every fetch response, record value and batch
array of a few MB is page-faulted and zeroed by the kernel again. The classifier copies
~125 KB of features per chunk several times (socket, frame, record, decode, stack), so
at ~1,400 chunks/s that was measurable: `bench/classifier.py` gave 1,331-1,345 chunks/s
without and 1,431-1,435 with this (classifier CPU per chunk 0.87-0.89 -> 0.81-0.83 ms).
The extractor, whose PCM chunks are 2.6 MB each, went from 54-57 to 60-64 chunks/s
(`bench/extractor.py`, two alternating runs each). Every service sets it at start
(shared.service.run_service). The price is resident memory: up to TRIM_THRESHOLD of
freed heap is kept for reuse.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's own upper bound for the dynamic threshold
TRIM_THRESHOLD = 128 << 20


def reuse_large_buffers(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process; False where that is not
    glibc on Linux (nothing changes then)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1 and mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    if not ok:
        logger.debug("mallopt refused the thresholds: allocator defaults kept")
    return ok
