"""What the service benchmarks share: thread pinning, bench-private topics and settings,
reading a topic to a count, and the CPU each process spends in a time window."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable

from shared.settings import Settings


SONG_CHUNKS = 7
"""Pre-produced songs have this many chunks (the last song may have fewer)."""

ROOT = Path(__file__).resolve().parent.parent


def pre_produce(settings: Settings, topic: str, n: int, value: Callable[[str, int, bool, int], bytes], *,
                start: int = 0, one_at_a_time: bool = False) -> float:
    """Records start..n-1 on `topic`, songs of SONG_CHUNKS keyed by song id: value(song,
    index, last, k) gives record k. Returns the seconds until all were acknowledged.

    By default the producer queues them all, so a request carries as many as fit; with
    `one_at_a_time` each is acknowledged before the next is sent, one record per request,
    as a chunker sends the chunks of a song it is still decoding."""
    from shared import kafka_io

    producer = kafka_io.make_producer(settings)
    try:
        t0 = time.perf_counter()
        for k in range(start, n):
            song, index = f"bench-{k // SONG_CHUNKS:06d}", k % SONG_CHUNKS
            last = index == SONG_CHUNKS - 1 or k == n - 1
            sent = producer.send(topic, key=song.encode(), value=value(song, index, last, k))
            if one_at_a_time:
                sent.get(timeout=60)
        producer.flush()
        return time.perf_counter() - t0
    finally:
        producer.close()


def start_service(service: str, env: dict[str, str], log: Path) -> Any:
    """`python -m services.<service>` with `env`, its output appended to `log`."""
    import subprocess
    import sys

    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def thread_env(threads: int) -> dict[str, str]:
    n = str(threads)
    return {"OPENBLAS_NUM_THREADS": n, "OMP_NUM_THREADS": n, "TF_NUM_INTRAOP_THREADS": n,
            "TF_NUM_INTEROP_THREADS": n, "TF_CPP_MIN_LOG_LEVEL": "2"}


def service_settings(bootstrap: str, service: str, threads: int, **overrides: Any) -> tuple[Settings, dict[str, str], int]:
    """Settings with fresh bench topics and group (created on the broker), the environment
    a service process gets them from, and a free port for its /metrics."""
    from shared.broker import free_port
    from shared.topics import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    base = Settings.from_env(bootstrap_servers=bootstrap)
    settings = replace(
        base, **{f.name: f"bench.{f.name[6:]}.{suffix}" for f in fields(Settings) if f.name.startswith("topic_")},
        **{f"group_{service}": f"bench-{service}-{suffix}"}, **overrides,
    )
    ensure_topics(settings)
    env = dict(os.environ)
    env.update(thread_env(threads))
    for f in fields(Settings):
        name = f.metadata.get("env")
        if name:
            v = getattr(settings, f.name)
            env[name] = str(v).lower() if isinstance(v, bool) else str(v)
    metrics_port = free_port()
    env.update({"GENRE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "GENRE_METRICS_PORT": str(metrics_port)})
    return settings, env, metrics_port


def read_all(settings: Settings, topic: str, want: int, timeout: float) -> list:
    """Records of `topic` once at least `want` are there."""
    from shared import kafka_io

    consumer = kafka_io.make_reader(settings, topic)
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                out.extend(records)
            if len(out) >= want:
                return out
    finally:
        consumer.close()
    raise SystemExit(f"timed out: {len(out)} of {want} records on {topic}")


def wait_until_written(settings: Settings, topic: str, want: int, timeout: float) -> None:
    """Return once `topic` holds at least `want` records. Only the end offsets are asked
    for, a few small requests a second: reading the records meanwhile would cost this
    process ~0.05 ms of CPU per chunk, taken from the service it measures."""
    from shared import kafka_io

    consumer = kafka_io.make_reader(settings, topic)
    deadline = time.monotonic() + timeout
    try:
        parts = list(consumer.assignment())
        while (have := sum(consumer.end_offsets(parts).values())) < want:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {have} of {want} records on {topic}")
            time.sleep(0.2)
    finally:
        consumer.close()


def _stat_ticks(path: str) -> int | None:
    """User + system clock ticks from a /proc .../stat file (None if it is gone)."""
    try:
        with open(path) as fh:
            fields_ = fh.read().rsplit(")", 1)[1].split()
        return int(fields_[11]) + int(fields_[12])
    except (OSError, IndexError, ValueError):
        return None


def _comm(pid: int, tid: str) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as fh:
            return fh.read()
    except OSError:
        return ""


BROKER_THREADS = {
    "broker JIT compiler": ("C1 CompilerThre", "C2 CompilerThre"),
    "broker GC": ("GC Thread", "G1 "),
    "broker data plane": ("data-plane-kafk",),
}
"""A Kafka JVM's threads by part, as /proc names them (15 characters): HotSpot's JIT
compilers, its garbage collector, and the network and request-handler threads that serve
produce and fetch requests (the rest: raft, controller, group coordinator, schedulers)."""


class CpuSampler:
    """CPU seconds (user + system) of some processes, sampled every 50 ms on a thread, so
    that the CPU each one spent inside a time window can be read afterwards.

    `threads` names parts of a process: (pid, thread-name prefixes), e.g. a JVM's JIT
    compiler threads; they are reported beside, not added to, the processes' figures."""

    def __init__(self, pids: dict[str, int], threads: dict[str, tuple[int, tuple[str, ...]]] | None = None) -> None:
        self.pids = pids
        self.threads = threads or {}
        self._tids: dict[tuple[int, tuple[str, ...]], tuple[list[str], float]] = {}
        self._last: dict[tuple[int, tuple[str, ...]], dict[str, int]] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _cpu(self, pid: int) -> float | None:
        ticks = _stat_ticks(f"/proc/{pid}/stat")
        return None if ticks is None else ticks / self._tick

    def _thread_cpu(self, pid: int, prefixes: tuple[str, ...]) -> float | None:
        """CPU seconds of pid's threads named prefixes*, including those that ended (their
        last reading is kept); the thread list is read again once a second, not every 50 ms
        (a JVM has ~100 threads)."""
        key = (pid, prefixes)
        tids, scanned = self._tids.get(key, ([], 0.0))
        if time.monotonic() - scanned > 1.0:
            try:
                tids = [t for t in os.listdir(f"/proc/{pid}/task") if _comm(pid, t).startswith(prefixes)]
            except OSError:
                return None
            self._tids[key] = (tids, time.monotonic())
        last = self._last.setdefault(key, {})
        for tid in tids:
            ticks = _stat_ticks(f"/proc/{pid}/task/{tid}/stat")
            if ticks is not None:  # None: ended, its last reading stays
                last[tid] = ticks
        return sum(last.values()) / self._tick

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            snap = {name: c for name, pid in self.pids.items() if (c := self._cpu(pid)) is not None}
            snap.update({name: c for name, (pid, prefixes) in self.threads.items()
                         if (c := self._thread_cpu(pid, prefixes)) is not None})
            self.samples.append((now, snap))
            self._stop.wait(0.05)

    def start(self) -> "CpuSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def used(self, name: str, t0: float, t1: float) -> float | None:
        """CPU seconds `name` spent between wall times t0 and t1 (nearest samples)."""
        pts = [(t, s[name]) for t, s in self.samples if name in s]
        if len(pts) < 2:
            return None
        a = min(pts, key=lambda p: abs(p[0] - t0))
        b = min(pts, key=lambda p: abs(p[0] - t1))
        return b[1] - a[1] if b[0] > a[0] else None


def peak_rss_mb(pid: int) -> float | None:
    """A live process's peak resident memory (VmHWM) in MB; None when /proc lacks it."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration, ValueError):
        return None


def process_pids(service: str, proc: Any, broker: Any, me: str) -> dict[str, int]:
    """The service's process (none when `proc` is None), this process (named `me`) and a
    LocalBroker's JVM, if any."""
    pids = {me: os.getpid()} if proc is None else {service: proc.pid, me: os.getpid()}
    broker_proc = getattr(broker, "_proc", None)
    if broker_proc is not None:
        pids["broker"] = broker_proc.pid
    return pids


def broker_threads(broker: Any) -> dict[str, tuple[int, tuple[str, ...]]]:
    """A LocalBroker's thread groups (BROKER_THREADS), for CpuSampler(threads=...)."""
    broker_proc = getattr(broker, "_proc", None)
    return {} if broker_proc is None else {k: (broker_proc.pid, v) for k, v in BROKER_THREADS.items()}


def sustained_window(records: list, n: int, skip: int = 0, end: int | None = None) -> tuple[Any, int, float]:
    """(sorted CreateTimes in s, index k0 where the measured window starts, records/s in
    it) of the first n records, in CreateTime order. The window is records skip..end
    (default: to n); without a skip, the first 5 % are warm-up (group join, first fetches).
    The window opens at a record's CreateTime and counts only the records written after it:
    k0 moves to the last record of that same time (the rest of its batch, whose work was
    done before the window), which matters when a run is only a few batches long."""
    import numpy as np

    ts = np.sort(np.array([r.timestamp for r in records[:n]], dtype=np.float64))[:end] / 1000.0
    k0 = max(0, skip - 1) if skip else int(0.05 * len(ts))
    k0 = int(np.searchsorted(ts, ts[k0], side="right")) - 1
    return ts, k0, (len(ts) - 1 - k0) / max(1e-9, ts[-1] - ts[k0])


NOT_MEASURED = "CPU per chunk: not measured (no /proc samples)"


def cpu_parts(sampler: CpuSampler, t0: float, t1: float, chunks: int) -> tuple[str, float] | None:
    """("name ms, ..." per process, with its named threads beside), total ms) of the CPU per
    chunk in [t0, t1]; None without samples."""
    known = {k: v for k in sampler.pids if (v := sampler.used(k, t0, t1)) is not None}
    if not known or chunks <= 0:
        return None
    parts = ", ".join(f"{k} {1000 * v / chunks:.2f}" for k, v in known.items())
    within = {k: v for k in sampler.threads if (v := sampler.used(k, t0, t1)) is not None}
    if within:
        parts += " (" + ", ".join(f"of which {k} {1000 * v / chunks:.2f}" for k, v in within.items()) + ")"
    return parts, 1000 * sum(known.values()) / chunks


def cpu_line(sampler: CpuSampler, t0: float, t1: float, chunks: int, ceiling: float, ceiling_name: str) -> str:
    """CPU per chunk of each process in [t0, t1], and the rate the machine's CPUs allow at
    those costs, however well the work overlaps."""
    got = cpu_parts(sampler, t0, t1, chunks)
    if got is None:
        return NOT_MEASURED
    parts, total_ms = got
    cpus = os.cpu_count() or 1
    return (f"CPU per chunk in that window (ms): {parts}; {ceiling_name} {1000 / ceiling:.2f}; together "
            f"{total_ms:.2f} ms: at these costs {cpus} CPUs allow at most {1000 * cpus / total_ms:.0f} chunks/s "
            f"({1000 * cpus / total_ms / ceiling:.2f} of the ceiling), however well the work overlaps")


def tear_down(proc: Any, settings: Settings, broker: Any) -> None:
    """Stop the service, delete the bench topics, stop a LocalBroker and delete its logs."""
    import subprocess

    from shared import kafka_io
    from shared.topics import topic_specs

    if proc is not None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    try:
        admin = kafka_io.make_admin(settings)
        admin.delete_topics([s.name for s in topic_specs(settings)], timeout_ms=20_000)
        admin.close()
    except Exception as exc:  # noqa: BLE001
        print(f"(could not delete the bench topics: {exc})")
    if broker is not None:
        stop_broker(broker)


def stop_broker(broker: Any) -> None:
    """Stop the bench's own LocalBroker and delete its logs, which hold everything
    pre-produced (GBs); only its broker.log stays."""
    broker.stop(grace=20)
    shutil.rmtree(broker.log_dirs, ignore_errors=True)
