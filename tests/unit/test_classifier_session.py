"""The classifier's poll thread (backpressure, commits after acks, rebalance drain) with a fake
consumer and producer; the worker thread is real, the model a fake."""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from dataclasses import replace

import pytest

from services.classifier.loop import ClassifierLoop, _Session
from shared.metrics import ServiceMetrics
from shared.schemas import Prediction, Verdict, decode
from shared.service import StopFlag
from tests.unit.test_classifier_worker import SETTINGS, FakeHolder, FakeModel, features

TP = namedtuple("TP", "topic partition")
Record = namedtuple("Record", "topic partition offset key value")
P0, P1 = TP("feats", 0), TP("feats", 1)


class FakeFuture:
    def __init__(self, done: bool = True) -> None:
        self.is_done = done
        self.exception = None

    def failed(self) -> bool:
        return False


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[FakeFuture] = []
        self.auto_ack = True

    def send(self, topic, key=None, value=None):  # noqa: ANN001
        self.sent.append((topic, key, value))
        f = FakeFuture(self.auto_ack)
        self.futures.append(f)
        return f

    def ack_all(self) -> None:
        for f in self.futures:
            f.is_done = True

    def flush(self, timeout=None):  # noqa: ANN001
        pass

    def close(self) -> None:
        pass

    def messages(self, topic: str, cls):  # noqa: ANN001
        return [decode(v, cls) for t, _k, v in self.sent if t == topic]


class FakeConsumer:
    """Hands out scripted records per partition; pause/resume/commit are recorded."""

    def __init__(self, records: dict[TP, list[Record]]) -> None:
        self.records = {tp: list(rs) for tp, rs in records.items()}
        self.pos = {tp: 0 for tp in records}
        self.assigned = set(records)
        self.paused: set = set()
        self.commits: list[dict] = []
        self.listener = None
        self.polls = 0
        self.lock = threading.Lock()

    def subscribe(self, topics, listener=None):  # noqa: ANN001
        self.listener = listener

    def assignment(self):  # noqa: ANN201
        return set(self.assigned)

    def pause(self, *tps):  # noqa: ANN002
        self.paused |= set(tps)

    def resume(self, *tps):  # noqa: ANN002
        self.paused -= set(tps)

    def poll(self, timeout_ms=0, max_records=None):  # noqa: ANN001
        self.polls += 1
        out = {}
        budget = max_records or 10**9
        for tp in sorted(self.assigned):
            if tp in self.paused:
                continue
            rs = self.records[tp][self.pos[tp]:self.pos[tp] + budget]
            if rs:
                out[tp] = rs
                self.pos[tp] += len(rs)
                budget -= len(rs)
        if not out:
            time.sleep(min(timeout_ms, 20) / 1000)
        return out

    def commit(self, offsets=None):  # noqa: ANN001
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    fail_async = False

    def commit_async(self, offsets=None, callback=None):  # noqa: ANN001
        """Like kafka-python's: the callback gets the response, or the exception."""
        if self.fail_async:
            self.async_failures = getattr(self, "async_failures", 0) + 1
            callback(offsets, RuntimeError("commit refused"))
            return
        self.commits.append({tp: om.offset for tp, om in offsets.items()})
        callback(offsets, object())

    def committed_now(self) -> dict:
        out: dict = {}
        for c in self.commits:
            out.update(c)
        return out

    def end_offsets(self, tps, timeout_ms=None):  # noqa: ANN001
        return {tp: len(self.records[tp]) for tp in tps}

    def position(self, tp, timeout_ms=None):  # noqa: ANN001
        return self.pos[tp]

    def close(self) -> None:
        pass


def records_for(tp: TP, seq) -> list[Record]:  # noqa: ANN001
    return [Record(tp.topic, tp.partition, k, song.encode(), features(song, i, last).encode())
            for k, (song, i, last) in enumerate(seq)]


def make_session(consumer: FakeConsumer, producer: FakeProducer, model: FakeModel | None = None, **kw) -> _Session:  # noqa: ANN003
    settings = replace(SETTINGS, topic_features="feats", **kw)
    loop = ClassifierLoop(settings, ServiceMetrics("classifier"), StopFlag(), holder=FakeHolder(model or FakeModel("v1")))
    return _Session(loop, consumer, producer)


def wait_for(cond, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def run_in_thread(session: _Session) -> threading.Thread:
    t = threading.Thread(target=session.run, daemon=True)
    t.start()
    return t


def test_full_run_every_song_one_verdict_and_final_commit_at_the_end():
    seq0 = [(f"a{k}", i, i == 2) for k in range(5) for i in range(3)]
    seq1 = [("x", 0, False), ("y", 0, False), ("x", 1, True), ("y", 1, True)]
    consumer = FakeConsumer({P0: records_for(P0, seq0), P1: records_for(P1, seq1)})
    producer = FakeProducer()
    s = make_session(consumer, producer)
    t = run_in_thread(s)
    wait_for(lambda: len(producer.messages("verdicts", Verdict)) == 7)
    s.stop.set()
    t.join(10)
    s.teardown()
    vs = producer.messages("verdicts", Verdict)
    assert sorted(v.song_id for v in vs) == sorted({x for x, *_ in seq0 + seq1})
    assert len(producer.messages("preds", Prediction)) == len(seq0) + len(seq1)
    assert consumer.committed_now() == {P0: len(seq0), P1: len(seq1)}


def test_backpressure_pauses_when_the_queue_is_full_and_resumes_below_half():
    seq = [(f"s{k}", 0, True) for k in range(40)]
    consumer = FakeConsumer({P0: records_for(P0, seq)})
    producer = FakeProducer()
    gate = threading.Event()

    class SlowModel(FakeModel):
        def predict(self, feats):  # noqa: ANN001
            gate.wait(10)
            return super().predict(feats)

    s = make_session(consumer, producer, SlowModel("v1"), classifier_queue_max=8, batch_max_size=4)
    t = run_in_thread(s)
    wait_for(lambda: consumer.paused == {P0})
    time.sleep(0.2)
    assert len(s.work) <= 8 + 4  # capacity plus what the blocked worker holds
    polls = consumer.polls
    time.sleep(0.2)
    assert consumer.polls > polls  # still polling while paused (heartbeats, max.poll.interval)
    gate.set()
    wait_for(lambda: len(producer.messages("verdicts", Verdict)) == 40)
    assert not consumer.paused
    assert s.metrics.backpressure.labels("classifier")._value.get() >= 1
    s.stop.set()
    t.join(10)
    s.teardown()


def test_offsets_are_committed_only_after_the_outputs_are_acknowledged():
    consumer = FakeConsumer({P0: records_for(P0, [("a", 0, True), ("b", 0, True)])})
    producer = FakeProducer()
    producer.auto_ack = False
    s = make_session(consumer, producer)
    t = run_in_thread(s)
    wait_for(lambda: len(producer.messages("verdicts", Verdict)) == 2)
    time.sleep(0.5)
    assert consumer.commits == []
    producer.ack_all()
    wait_for(lambda: consumer.committed_now() == {P0: 2})
    s.stop.set()
    t.join(10)
    s.teardown()


def test_a_failed_asynchronous_commit_is_sent_again_and_shutdown_commits_synchronously():
    consumer = FakeConsumer({P0: records_for(P0, [("a", 0, True), ("b", 0, True)])})
    consumer.fail_async = True
    producer = FakeProducer()
    s = make_session(consumer, producer)
    t = run_in_thread(s)
    wait_for(lambda: len(producer.messages("verdicts", Verdict)) == 2)
    wait_for(lambda: getattr(consumer, "async_failures", 0) >= 2)  # retried, not marked committed
    assert consumer.commits == []
    s.stop.set()
    t.join(10)
    s.teardown()
    assert consumer.committed_now() == {P0: 2}  # the shutdown's commit waits (and succeeds)


def test_revocation_drains_the_queue_commits_and_forgets():
    seq = [("open", 0, False)] + [(f"s{k}", 0, True) for k in range(6)]
    consumer = FakeConsumer({P0: records_for(P0, seq)})
    producer = FakeProducer()
    s = make_session(consumer, producer, batch_max_wait_ms=60_000)  # only a full batch or a marker flushes
    s.worker.start()
    s.enqueue(consumer.poll(max_records=100))
    assert len(s.work) == 7
    s.on_revoked({P0})
    # every queued record was processed before the commit, without waiting for the batch to fill
    assert len(producer.messages("verdicts", Verdict)) == 6
    assert consumer.commits[-1] == {P0: 0}  # "open" has no verdict: its chunk 0 is re-read by the next owner
    assert len(s.worker.tracker) == 0
    assert s.generation == s.worker.generation == 1
    s.shutdown()
    s.teardown()


def test_snapshots_taken_before_a_revocation_are_never_committed_after_it():
    consumer = FakeConsumer({P0: records_for(P0, [("a", 0, True)])})
    producer = FakeProducer()
    producer.auto_ack = False
    s = make_session(consumer, producer)
    s.worker.start()
    s.enqueue(consumer.poll(max_records=10))
    wait_for(lambda: (s.collect() or True) and s.pending and s.pending[-1][1].chunks == 1)
    s.generation += 1  # as if a revocation had happened meanwhile
    producer.ack_all()
    s.settle(force=True)
    assert consumer.commits == []
    s.work.close()
    s.teardown()


def test_a_worker_failure_stops_the_service():
    consumer = FakeConsumer({P0: records_for(P0, [("a", 0, True)])})
    producer = FakeProducer()
    s = make_session(consumer, producer)

    def boom(*_a):  # noqa: ANN002
        raise RuntimeError("bug in the vote")

    s.worker.tracker.observe = boom
    with pytest.raises(Exception, match="inference worker failed"):
        s.run()
    s.teardown()
    assert consumer.commits == []
