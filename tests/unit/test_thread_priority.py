"""shared.thread_priority: every thread but the spared ones gets the nice increment.

Run in a child process: nice values only ever go up without privilege, and the test
process's own threads must keep theirs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, os, threading
from shared.thread_priority import lower_other_threads

ready, done = threading.Barrier(3), threading.Event()
ids = {}

def worker(name):
    ids[name] = threading.get_native_id()
    if name == "compute":  # what TensorFlow does for its pool threads
        with open(f"/proc/self/task/{ids[name]}/comm", "w") as fh:
            fh.write("tf_Compute")
    ready.wait()
    done.wait()

threads = [threading.Thread(target=worker, args=(n,)) for n in ("compute", "io")]
for t in threads:
    t.start()
ready.wait()
before = {n: os.getpriority(os.PRIO_PROCESS, tid) for n, tid in ids.items()}
changed = lower_other_threads(7)
after = {n: os.getpriority(os.PRIO_PROCESS, tid) for n, tid in ids.items()}
after["main"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
late = []
t = threading.Thread(target=lambda: late.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
t.start(); t.join()
lower_other_threads(0)
again = os.getpriority(os.PRIO_PROCESS, ids["io"])
done.set()
for t in threads:
    t.join()
print(json.dumps({"before": before, "after": after, "changed": changed, "late": late[0], "again": again}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread nice values need Linux /proc")
def test_other_threads_yield_to_spared_compute_threads() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    got = json.loads(out.stdout)
    base = got["before"]["io"]
    assert got["after"]["compute"] == got["before"]["compute"]  # spared: TensorFlow's thread
    assert got["after"]["io"] == min(19, base + 7)
    assert got["after"]["main"] == min(19, base + 7)
    assert got["changed"] == 2  # main and io; not compute
    assert got["late"] == got["after"]["main"]  # threads started later inherit their creator's value
    assert got["again"] == got["after"]["io"]  # 0 changes nothing
