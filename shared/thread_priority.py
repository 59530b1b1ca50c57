"""Let a process's compute threads win the CPU over its I/O threads.

In the classifier, TensorFlow's compute threads set the pace: every millisecond they wait
for a CPU is a millisecond of inference lost. The Python threads beside them (the Kafka
client's I/O threads, the poll loop, batching and voting) wake up thousands of times a
second and, at equal priority, the kernel lets each wake-up preempt the compute thread:
measured in `bench/classifier.py` on 2 CPUs, TensorFlow's thread was preempted ~700 times
a second and waited 19 % of the wall time for a CPU. The Python threads have slack (they
hold the GIL ~60 % of the time), so raising their nice value costs them little and gives
inference its CPU back.

Linux only (per-thread nice values through /proc/self/task); raising a nice value needs
no privilege. Threads created later inherit the nice value of the thread that creates
them, so call this once the compute threads exist and before the I/O threads start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

COMPUTE_THREADS = ("tf_", "cuda")
"""Name prefixes of TensorFlow's own pool threads (tf_Compute, tf_graph_runner, ...) and,
on a GPU, of the CUDA driver's threads (cuda-EvtHandlr), whose callbacks end each batch."""

MAX_NICE = 19
TASK_DIR = Path("/proc/self/task")


def lower_other_threads(increment: int, spare: tuple[str, ...] = COMPUTE_THREADS) -> int:
    """Add `increment` to the nice value of every thread of this process whose name does
    not start with one of `spare`; returns how many threads were changed."""
    if increment <= 0:
        return 0
    if not TASK_DIR.is_dir() or not hasattr(os, "setpriority"):
        logger.info("per-thread priorities are not available here: left as they are")
        return 0
    changed = 0
    for entry in sorted(TASK_DIR.iterdir()):
        try:
            name = (entry / "comm").read_text().strip()
            if name.startswith(spare):
                continue
            tid = int(entry.name)
            nice = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + increment)
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            changed += 1
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except (OSError, ValueError) as exc:
            logger.warning("could not lower the priority of thread %s: %s", entry.name, exc)
    return changed
