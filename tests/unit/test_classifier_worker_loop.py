"""The classifier worker's thread loop, markers, housekeeping and failure handling, with a
scripted queue, a fake clock and a fake model: no timing in the assertions, no Kafka.

The loop tests replace the WorkQueue with `ScriptedQueue`, which answers `take` and
`full_batch_ready` from a script and logs every call; spies log the worker's prepare,
marker, housekeeping and result calls in the same list, so a test asserts the exact order
in which the loop takes, prepares, finishes and answers (all on the worker thread)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from services.classifier.batching import Item, Marker, WorkQueue
from services.classifier.worker import HOUSEKEEPING_S, Done, Failed, InferenceWorker
from shared.metrics import ServiceMetrics
from shared.schemas import Verdict
from tests.unit.test_classifier_worker import SETTINGS, FakeHolder, FakeModel, features, items, predictions, verdicts


class Clock:
    """The worker's injectable monotonic clock, moved by hand."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Holder(FakeHolder):
    """Counts `current()` calls and notes the thread and the worker's busy flag of each."""

    def __init__(self, model: FakeModel) -> None:
        super().__init__(model)
        self.current_calls: list[tuple[str, bool, Any]] = []
        self.worker: InferenceWorker | None = None

    def current(self) -> FakeModel:
        t = threading.current_thread()
        self.current_calls.append((t.name, t.daemon, self.worker.busy if self.worker else None))
        return self.model


def make(model: FakeModel | None = None, clock: Clock | None = None, queue: Any = None,
         **settings: Any) -> InferenceWorker:
    holder = Holder(model or FakeModel("v1"))
    w = InferenceWorker(queue if queue is not None else WorkQueue(64), holder, replace(SETTINGS, **settings),
                        ServiceMetrics("classifier"), clock=clock or Clock())
    holder.worker = w
    return w


def sample(w: InferenceWorker, name: str, **labels: str) -> float | None:
    return w.metrics.registry.get_sample_value(name, {"service": "classifier", **labels})


def drain(w: InferenceWorker) -> list[Done | Failed]:
    out = []
    while not w.results.empty():
        out.append(w.results.get_nowait())
    return out


# -- the loop, on a scripted queue ------------------------------------------------------

class ScriptedQueue:
    """Stands in for the WorkQueue: `take` returns the scripted answers in order, then None
    (closed and empty), and fails if asked again; `full_batch_ready` returns its scripted
    answers (a callable is called first, an exception raised)."""

    def __init__(self, events: list, takes: list, ready: list = ()) -> None:  # type: ignore[assignment]
        self.events = events
        self.takes = list(takes)
        self.ready = list(ready)
        self.closed_told = False

    def take(self, max_size: int, max_wait_s: float, preferred: Any = (), idle_timeout_s: float | None = None) -> Any:
        self.events.append(("take", max_size, max_wait_s, tuple(preferred), idle_timeout_s))
        if self.takes:
            got = self.takes.pop(0)
            if isinstance(got, BaseException):
                raise got
            return got
        assert not self.closed_told, "take after the queue answered None"
        self.closed_told = True
        return None

    def full_batch_ready(self, max_size: int) -> bool:
        self.events.append(("ready", max_size))
        answer = self.ready.pop(0)
        if callable(answer):
            answer = answer()
        if isinstance(answer, BaseException):
            raise answer
        return answer


def summary(x: Done | Failed) -> tuple:
    if isinstance(x, Failed):
        return ("failed", type(x.error).__name__, str(x.error), x.generation)
    return ("done", x.chunks, x.marker.seq if x.marker else None, x.offsets, [v.song_id for v in verdicts(x)])


def spy(w: InferenceWorker, events: list) -> None:
    """Log the worker's prepare, on_marker, housekeeping and results in `events`."""
    prepare, on_marker, housekeeping = w.prepare, w.on_marker, w.housekeeping

    def spy_prepare(got: list[Item], previous: Any = None) -> Any:
        events.append(("prepare", [it.offset for it in got],
                       None if previous is None else [it.offset for it in previous.items], w.busy))
        return prepare(got, previous)

    def spy_marker(marker: Marker) -> Done:
        events.append(("marker", marker.seq, w.busy))
        return on_marker(marker)

    def spy_housekeeping(force: bool = False) -> Any:
        events.append(("housekeeping", force, w.busy))
        return housekeeping(force)

    class Results:
        def __init__(self) -> None:
            self.got: list[Done | Failed] = []

        def put(self, x: Done | Failed) -> None:
            events.append(("result",) + summary(x))
            self.got.append(x)

    w.prepare, w.on_marker, w.housekeeping = spy_prepare, spy_marker, spy_housekeeping  # type: ignore[method-assign]
    w.results = Results()  # type: ignore[assignment]


def run_scripted(takes: list, ready: list = (), clock: Clock | None = None, model: FakeModel | None = None,  # type: ignore[assignment]
                 **settings: Any) -> tuple[InferenceWorker, list]:
    events: list = []
    w = make(model, clock, ScriptedQueue(events, takes, ready), **settings)
    spy(w, events)
    w.start()
    assert w.join(10), "the worker loop did not end"
    return w, events


LOOP = dict(batch_max_size=4, batch_max_wait_ms=20, batch_preferred_sizes="2")
TAKE = ("take", 4, 0.02, (2,), HOUSEKEEPING_S)  # nothing pending: wait for a batch, or idle
TAKE_NOW = ("take", 4, 0.0, (), None)  # a batch is being predicted and a full one waits


def test_the_loop_prepares_the_next_full_batch_while_one_is_predicted_and_answers_in_order():
    b1 = items([("a", 0, False), ("b", 0, True), ("c", 0, True), ("d", 0, True, -1.0)])
    b2 = items([("a", 1, True), ("e", 0, True), ("f", 0, True), ("g", 0, True)], start=4)
    w, events = run_scripted([b1, b2, Marker("barrier", seq=5), []], [True, False], **LOOP)
    assert events == [
        TAKE, ("prepare", [0, 1, 2, 3], None, True),
        ("ready", 4), TAKE_NOW, ("prepare", [4, 5, 6, 7], [0, 1, 2, 3], True),
        ("result", "done", 4, None, {"p0": 0}, ["b", "c", "d"]),
        ("ready", 4), ("result", "done", 4, None, {"p0": 8}, ["a", "e", "f", "g"]),
        TAKE, ("marker", 5, True), ("result", "done", 0, 5, {"p0": 8}, []), ("housekeeping", False, True),
        TAKE, ("housekeeping", False, True),  # idle: nothing came within HOUSEKEEPING_S
        TAKE,
    ]
    (a,) = [v for d in w.results.got for v in verdicts(d) if v.song_id == "a"]
    assert (a.status, a.chunk_count, a.model_version) == ("ok", 2, "v1")  # chunk 1 was not skipped
    assert w.holder.model.calls == [4, 4]
    assert w.busy is False and not w.is_alive()


def test_a_marker_or_the_end_taken_while_a_batch_is_predicted_finishes_that_batch_first():
    b1 = items([("a", 0, True), ("b", 0, False)])
    w, events = run_scripted([b1, Marker("barrier", seq=3)], [True], **LOOP)
    assert events == [
        TAKE, ("prepare", [0, 1], None, True), ("ready", 4), TAKE_NOW,
        ("result", "done", 2, None, {"p0": 1}, ["a"]),
        ("marker", 3, True), ("result", "done", 0, 3, {"p0": 1}, []), ("housekeeping", False, True),
        TAKE,
    ]
    w, events = run_scripted([b1], [True], **LOOP)  # closed (and emptied) after the readiness check
    assert events == [TAKE, ("prepare", [0, 1], None, True), ("ready", 4), TAKE_NOW,
                      ("result", "done", 2, None, {"p0": 1}, ["a"])]
    assert w.busy is False


def test_idle_housekeeping_after_the_interval_reports_the_stale_song():
    clock = Clock(100.0)
    events: list = []
    q = ScriptedQueue(events, [items([("a", 0, False)]), []], [False])
    w = make(None, clock, q, classifier_stale_song_s=0.0, **LOOP)
    spy(w, events)
    clock.t = 100.0 + HOUSEKEEPING_S  # housekeeping is due whenever the loop calls it
    w.start()
    assert w.join(10)
    # the batch's Done first (nothing is stale while it is predicted), then the idle housekeeping's
    assert [e for e in events if e[0] != "prepare"] == [
        TAKE, ("ready", 4), ("result", "done", 1, None, {"p0": 0}, []),
        TAKE, ("housekeeping", False, True), ("result", "done", 0, None, {"p0": 1}, ["a"]), TAKE]
    assert [e for e in events if e[0] == "result"] == [("result", "done", 1, None, {"p0": 0}, []), ("result", "done", 0, None, {"p0": 1}, ["a"])]
    (v,) = verdicts(w.results.got[1])
    assert v.status == "error" and "incomplete" in v.error


def test_a_failure_in_the_loop_is_logged_and_posted_with_the_generation(caplog):
    with caplog.at_level(logging.ERROR, logger="services.classifier"):
        w, events = run_scripted([Marker("revoke", frozenset({"p0"}), 1), RuntimeError("queue broke")], **LOOP)
    assert events[-2:] == [TAKE, ("result", "failed", "RuntimeError", "queue broke", 1)]
    assert w.generation == 1 and w.busy is False
    (rec,) = [r for r in caplog.records if r.name == "services.classifier"]
    assert rec.levelno == logging.ERROR and rec.getMessage() == "inference worker failed"
    assert rec.exc_info is not None and str(rec.exc_info[1]) == "queue broke"


def test_a_failure_while_busy_leaves_the_worker_not_busy():
    class Broken(Holder):
        def current(self) -> FakeModel:
            super().current()
            raise RuntimeError("holder broke")

    events: list = []
    w = InferenceWorker(ScriptedQueue(events, [items([("a", 0, True)])]), Broken(FakeModel("v1")), SETTINGS,
                        ServiceMetrics("classifier"), clock=Clock())
    w.holder.worker = w
    w.start()
    assert w.join(10)
    (failed,) = drain(w)
    assert isinstance(failed, Failed) and str(failed.error) == "holder broke" and failed.generation == 0
    assert w.holder.current_calls == [("inference", True, True)]  # on the worker thread, a daemon, busy
    assert w.busy is False


class BlockingModel(FakeModel):
    """predict_arrays notes how many calls run at once and on which thread; call number
    `block` (from 1) waits for `release` (at most `hold_s`)."""

    def __init__(self, version: str, block: int = 1, hold_s: float = 5.0) -> None:
        super().__init__(version)
        self.block, self.hold_s = block, hold_s
        self.started, self.release = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.active = self.most = 0
        self.threads: list[str] = []

    def predict_arrays(self, inputs):  # noqa: ANN001
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.threads.append(threading.current_thread().name)
            n = len(self.threads)
        try:
            if n == self.block:
                self.started.set()
                self.release.wait(self.hold_s)
            return super().predict_arrays(inputs)
        finally:
            with self.lock:
                self.active -= 1


def test_one_predict_at_a_time_on_the_predict_thread_even_with_the_next_batch_prepared():
    model = BlockingModel("v1", hold_s=5.0)
    events: list = []
    w = make(model, None, ScriptedQueue(events, [items([("a", 0, True)]), items([("b", 0, True)], start=1)],
                                        [True, False]), **LOOP)
    real_finish = w._finish_pending

    def finish_pending(pending: Any) -> Done:
        if not model.release.is_set():  # the next batch was just submitted: give it a chance to start
            time.sleep(0.05)
            model.release.set()
        return real_finish(pending)

    w._finish_pending = finish_pending  # type: ignore[method-assign]
    w.start()
    assert w.join(10)
    assert [summary(d)[:2] for d in drain(w)] == [("done", 1), ("done", 1)]
    assert model.most == 1 and len(model.threads) == 2
    assert all(name.startswith("predict_") for name in model.threads), model.threads


def test_a_failure_while_a_batch_is_predicted_does_not_wait_for_the_predict():
    model = BlockingModel("v1", hold_s=5.0)

    def broken() -> bool:
        assert model.started.wait(5)
        raise RuntimeError("readiness broke")

    events: list = []
    w = make(model, None, ScriptedQueue(events, [items([("a", 0, True)])], [broken]), **LOOP)
    w.start()
    try:
        assert w.join(2.5)  # the worker ends at once; its predict thread is left to finish alone
        assert model.active == 1
    finally:
        model.release.set()
    (failed,) = drain(w)
    assert isinstance(failed, Failed) and str(failed.error) == "readiness broke"


def test_settings_are_clamped():
    w = make(batch_max_size=0, batch_max_wait_ms=-5)
    assert (w.max_size, w.max_wait_s, w.busy, w.generation) == (1, 0.0, False, 0)
    w = make(batch_max_size=3, batch_max_wait_ms=250, batch_preferred_sizes="3,1")
    assert (w.max_size, w.max_wait_s, w.preferred) == (3, 0.25, (1, 3))


# -- the thread, on a real queue ------------------------------------------------------

def test_join_waits_at_most_its_timeout_and_tells_whether_the_thread_ended():
    w = make()
    assert not w.is_alive()
    w.start()
    assert w.is_alive()
    assert w.join(0.01) is False  # idle (waiting for work), not ended
    w.work.put_many(items([("a", 0, True)]))
    d = w.results.get(timeout=5)
    assert [v.song_id for v in verdicts(d)] == ["a"]
    assert w.holder.current_calls[0] == ("inference", True, True)
    w.work.close()
    assert w.join(5) is True and not w.is_alive()


# -- markers ----------------------------------------------------------------------------

def test_a_revoke_reports_and_forgets_only_its_partitions_and_each_one_bumps_the_generation():
    w = make()
    w.process(items([("a", 0, False)], "p0") + items([("x", 0, True)], "p1", start=3))
    w.holder.swap(FakeModel("v2"))
    w.process(items([("b", 0, False)], "p1", start=4))  # b on v2, a on v1
    drain(w)
    d1 = w.on_marker(Marker("revoke", frozenset({"p0"}), 1))
    assert (d1.offsets, d1.generation, d1.inflight_songs, d1.outputs, d1.chunks) == ({"p0": 0}, 0, 1, [], 0)
    assert d1.marker.seq == 1 and w.generation == 1
    assert w.tracker.safe_offsets() == {"p1": 4} and w.tracker.is_open("b") and not w.tracker.is_open("a")
    assert w.holder.released == ["v1"]  # no open song needs v1 any more
    d2 = w.on_marker(Marker("barrier", seq=2))  # a barrier: every partition's offsets, the same generation
    assert (d2.offsets, d2.generation, d2.inflight_songs, d2.marker.seq) == ({"p1": 4}, 1, 1, 2)
    assert w.generation == 1 and w.tracker.is_open("b")
    d3 = w.on_marker(Marker("revoke", frozenset({"p1", "p9"}), 3))
    assert (d3.offsets, d3.generation, d3.inflight_songs) == ({"p1": 4}, 1, 0)
    assert w.generation == 2 and len(w.tracker) == 0
    got = drain(w)
    assert len(got) == 3 and all(a is b for a, b in zip(got, (d1, d2, d3)))


# -- failed predictions -----------------------------------------------------------------

def test_a_failed_predict_is_logged_counted_and_named_in_each_of_its_chunks(caplog):
    w = make(FakeModel("v1", fail=True))
    with caplog.at_level(logging.ERROR, logger="services.classifier"):
        done = w.process(items([("a", 0, False), ("b", 0, True), ("a", 1, True)]))
    assert [p.error for p in predictions(done)] == ["prediction failed: bad shapes"] * 3
    assert [(v.song_id, v.status, v.error) for v in verdicts(done)] == [
        ("b", "error", "prediction failed: bad shapes"), ("a", "error", "prediction failed: bad shapes")]
    assert sample(w, "genre_errors_total", kind="predict") == 1.0
    (rec,) = [r for r in caplog.records if r.name == "services.classifier"]
    assert rec.levelno == logging.ERROR and rec.getMessage() == "predict failed on a batch of 3: bad shapes"
    assert rec.exc_info is not None and str(rec.exc_info[1]) == "bad shapes"


# -- housekeeping -------------------------------------------------------------------------

@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """One fake clock for the worker (injected) and the song tracker's staleness (patched)."""
    c = Clock(100.0)
    monkeypatch.setattr("shared.song_tracker.time", SimpleNamespace(monotonic=c, time=time.time))
    return c


def test_housekeeping_runs_once_per_interval_of_the_injected_clock_or_when_forced(clock: Clock):
    w = make(clock=clock, classifier_stale_song_s=0.25)
    w.process(items([("a", 0, False)]))  # at 100.0
    drain(w)
    calls = len(w.holder.current_calls)
    clock.t = 100.0 + HOUSEKEEPING_S / 2
    assert w.housekeeping() is None and w.tracker.is_open("a")  # a is stale, but it is not time yet
    assert len(w.holder.current_calls) == calls  # not even the model was looked at
    clock.t = 100.0 + HOUSEKEEPING_S  # exactly one interval after the start
    done = w.housekeeping()
    assert [v.song_id for v in verdicts(done)] == ["a"] and len(w.holder.current_calls) == calls + 1
    w.process(items([("b", 0, False)], start=1))
    drain(w)
    clock.t = 100.0 + 1.5 * HOUSEKEEPING_S  # half an interval after the last run
    assert w.housekeeping() is None and w.tracker.is_open("b")
    done = w.housekeeping(force=True)
    assert [v.song_id for v in verdicts(done)] == ["b"]
    w.process(items([("c", 0, False)], start=2))
    drain(w)
    clock.t = 100.0 + 2.4 * HOUSEKEEPING_S  # under an interval after the forced run
    assert w.housekeeping() is None and w.tracker.is_open("c")
    clock.t = 100.0 + 2.5 * HOUSEKEEPING_S
    assert [v.song_id for v in verdicts(w.housekeeping())] == ["c"]


def test_housekeeping_names_the_missing_chunks_releases_unused_models_and_posts_its_done(
        clock: Clock, monkeypatch: pytest.MonkeyPatch):
    w = make(clock=clock, classifier_stale_song_s=0.005)
    w.on_marker(Marker("revoke", frozenset({"p9"})))  # generation 1
    now = 1000.0
    monkeypatch.setattr("shared.verdicts.now", lambda: now + 0.25)  # the verdicts' wall clock
    batch = [Item("p0", 0, features("a", 0, False, produced_at=now)),
             Item("p0", 1, features("a", 1, False, error="decode failed")),
             Item("p0", 2, features("b", 0, False)),
             Item("p0", 3, features("a", 3, True, produced_at=now))]
    w.process(batch)  # at 100.0
    w.holder.swap(FakeModel("v2"))
    clock.t = 100.008
    w.process(items([("n", 0, False)], start=4))  # n opens on v2 at 100.008: not stale at 100.01
    drain(w)
    clock.t = 100.01
    done = w.housekeeping(force=True)
    assert [(o.topic, o.key) for o in done.outputs] == [("verdicts", "a"), ("verdicts", "b")]
    a, b = verdicts(done)
    assert isinstance(a, Verdict)
    assert (a.filename, a.status, a.genre, a.chunk_count, a.model_version, a.produced_at) == (
        "a.wav", "error", "", 0, "v1", now)
    assert a.error == "incomplete: chunks [2] never arrived within 0.005 s"
    assert b.error == "incomplete: chunks after the last seen never arrived within 0.005 s"
    assert (b.filename, b.model_version, b.produced_at) == ("b.wav", "v1", 0.0)
    assert (done.offsets, done.generation, done.inflight_songs, done.chunks) == ({"p0": 4}, 1, 1, 0)
    assert w.tracker.is_open("n") and len(w.tracker) == 1 and w.holder.released == ["v1"]
    got = drain(w)
    assert len(got) == 1 and got[0] is done
    assert sample(w, "genre_verdicts_total", genre="-", status="error") == 2.0
    assert sample(w, "genre_end_to_end_seconds_count") == 1.0  # only a has a produced_at
    assert sample(w, "genre_end_to_end_seconds_sum") == 0.25
    assert w.housekeeping(force=True) is None and drain(w) == []  # nothing stale: nothing posted


def test_housekeeping_leaves_songs_that_are_not_stale(clock: Clock):
    w = make(clock=clock, classifier_stale_song_s=3600.0)
    w.process(items([("a", 0, False)]))
    drain(w)
    clock.t += 3599.0
    assert w.housekeeping(force=True) is None and drain(w) == [] and w.tracker.is_open("a")
    clock.t += 2.0
    assert [v.song_id for v in verdicts(w.housekeeping(force=True))] == ["a"]
