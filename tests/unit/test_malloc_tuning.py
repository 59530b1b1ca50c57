"""glibc's thresholds for large buffers (the classifier sets them at start)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# In a fresh process: allocate a 16 MB buffer, fill it, free it, allocate and fill again;
# print the page faults of the second fill. By default the first buffer is an mmap that
# free() unmaps, so the second one is new memory the kernel must fault in and zero.
_SCRIPT = """
import ctypes, resource, sys
from shared.malloc_tuning import reuse_large_buffers
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p; libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 16 << 20
if sys.argv[1] == "tuned":
    assert reuse_large_buffers()
p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
q = libc.malloc(n); ctypes.memset(q, 2, n)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _glibc() -> bool:
    try:
        return bool(ctypes.CDLL(None).gnu_get_libc_version())
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc(), reason="needs glibc on Linux")
def test_a_freed_large_buffer_is_reused_without_new_page_faults():
    faults = {mode: int(subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True,
                                       check=True, cwd=ROOT).stdout)
              for mode in ("default", "tuned")}
    pages = (16 << 20) // 4096
    assert faults["default"] > pages // 2, faults
    assert faults["tuned"] < pages // 20, faults
