"""The classifier's poll thread: consume -> queue -> (inference thread) -> publish -> commit.

Threads and who touches what:

- The **poll thread** (this module) is the only one that touches the Kafka consumer and
  the producer (kafka-python consumers are not thread-safe). It decodes feature records
  and queues them (`batching.WorkQueue`), publishes what the worker made, and commits.
- The **inference thread** (`worker.InferenceWorker`) forms dynamic batches across polls
  and songs (GENRE_BATCH_MAX_SIZE, GENRE_BATCH_MAX_WAIT_MS, GENRE_BATCH_PREFERRED_SIZES),
  predicts, votes, and owns the per-song state and the commit watermark.

Backpressure: when GENRE_CLASSIFIER_QUEUE_MAX chunks are queued the consumer pauses its
partitions and keeps polling (heartbeats and `max.poll.interval.ms` stay satisfied; the
poll thread never waits on inference except for a bounded drain on rebalance/shutdown); it
resumes below half. Memory is bounded by the queue plus one fetch.

Delivery: the worker posts, after each batch, the offsets below which every song has its
verdict (shared.song_tracker). The poll thread commits such a snapshot only when every
output posted up to it has been acknowledged (acks=all), without waiting for the commit
to be answered (a failed one is sent again), except on revocation and shutdown, which
wait. A crash replays from there; a replay recomputes the same predictions (row results
do not depend on batch composition) and so the same verdict, keyed by song id on the
compacted verdict topic.

Rebalance (partitions revoked, inside poll): a `revoke` marker goes into the queue behind
every queued record; the worker drains them (no batching wait) and answers with the final
offsets of the revoked partitions, the poll thread publishes, waits for the acks and commits
them, and the worker forgets those songs. The new owner re-reads every song still open from
its chunk 0. If the drain does not finish within DRAIN_TIMEOUT_S (a stuck device), the
queued records are dropped and nothing more is committed for those partitions: the next
owner redoes that work (duplicates are identical).
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from typing import Any, Hashable

from kafka import ConsumerRebalanceListener
from kafka.errors import KafkaError

from shared import kafka_io
from shared.metrics import ServiceMetrics
from shared.schemas import Features, SchemaError, decode
from shared.service import (
    KafkaLink,
    Output,
    ServiceFailed,
    StopFlag,
    close_quietly,
    dead_letter_output,
    session_overrides,
)
from shared.settings import Settings

from services.classifier.batching import Item, Marker, WorkQueue
from services.classifier.models import ModelHolder
from services.classifier.worker import Done, Failed, InferenceWorker

logger = logging.getLogger("services.classifier")
SERVICE = "classifier"
MAX_POLL_INTERVAL_MS = 300_000
DRAIN_TIMEOUT_S = 60.0
"""Longest wait for the worker on a rebalance or shutdown (well under max.poll.interval)."""
COMMIT_INTERVAL_S = 0.2
BUSY_POLL_MS = 5
"""Poll timeout while work is in flight, so finished batches are published promptly."""
HEALTH_INTERVAL_S = 5.0
"""How often the poll thread asks the broker for end offsets (lag metrics, and liveness:
kafka-python only retries quietly when the broker is gone)."""
HEALTH_TIMEOUT_MS = 5000


class WorkerDied(ServiceFailed):
    pass


def queue_capacity(settings: Settings) -> int:
    return settings.classifier_queue_max if settings.classifier_queue_max > 0 else 4 * max(1, settings.batch_max_size)


class ClassifierLoop:
    def __init__(self, settings: Settings, metrics: ServiceMetrics, stop: StopFlag | None = None,
                 holder: Any | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = stop or StopFlag()
        self.holder = holder or ModelHolder(settings.model_path, metrics, mixed_precision=settings.mixed_precision,
                                            check_interval_s=settings.model_check_interval_s)
        self.link = KafkaLink(SERVICE, settings, metrics, self.stop)

    def connected(self) -> None:
        self.link.connected()

    # -- lifecycle --------------------------------------------------------------------
    def run_forever(self) -> None:
        self.link.run_forever(self._run_session)

    def _run_session(self) -> None:
        s = self.settings
        boot = self.link.client_overrides()
        overrides = session_overrides(s)
        consumer = kafka_io.make_consumer(
            s, s.group_classifier, [], max_poll_records=max(s.batch_max_size, 64),
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS, **overrides, **boot,
        )
        try:
            producer = kafka_io.make_producer(s, **{k: v for k, v in overrides.items() if k.startswith("reconnect")},
                                              **boot)
        except BaseException:
            close_quietly(consumer)
            raise
        session = _Session(self, consumer, producer)
        try:
            with self.link.watching():
                session.run()
        finally:
            session.teardown()


class _Session:
    """One consumer/producer pair, one queue, one worker: rebuilt after a connection loss."""

    def __init__(self, loop: ClassifierLoop, consumer: Any, producer: Any) -> None:
        self.loop = loop
        self.settings = loop.settings
        self.metrics = loop.metrics
        self.stop = loop.stop
        self.consumer = consumer
        self.producer = producer
        self.work = WorkQueue(queue_capacity(self.settings))
        self.worker = InferenceWorker(self.work, loop.holder, self.settings, self.metrics)
        self.generation = 0  # revoke markers issued; commits use snapshots of the same generation
        self.pending: deque[tuple[list[Any], Done]] = deque()  # (futures, done) in posting order
        self.to_commit: dict[Hashable, int] = {}
        self.committed: dict[Hashable, int] = {}
        self.commit_retries: deque[tuple[int, dict[Hashable, int]]] = deque()  # appended by kafka-python's thread
        self.last_commit = 0.0
        self.paused = False
        self.marker_seq = 0
        self.answered: dict[int, Done] = {}
        self.last_health = 0.0
        self.outstanding = 0  # items queued and not yet answered by a Done
        self.failure: Failed | None = None

    # -- main loop --------------------------------------------------------------------
    def run(self) -> None:
        s = self.settings
        session = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # type: ignore[no-untyped-def]
                session.on_revoked(set(revoked))

            def on_partitions_assigned(self, assigned):  # type: ignore[no-untyped-def]
                session.paused = False  # a new assignment starts unpaused
                logger.info("assigned %d partitions: %s", len(assigned),
                            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)))

        self.consumer.subscribe([s.topic_features], listener=Listener())
        self.worker.start()
        logger.info("classifier consuming %s as group %s (batch <= %d, wait <= %g ms, queue <= %d)",
                    s.topic_features, s.group_classifier, s.batch_max_size, s.batch_max_wait_ms, self.work.capacity)
        while not self.stop.is_set():
            self.collect()
            self.settle()
            self.backpressure()
            busy = self.outstanding > 0 or bool(self.pending)
            timeout = BUSY_POLL_MS if busy else s.poll_timeout_ms
            batch = self.consumer.poll(timeout_ms=timeout, max_records=max(1, self.work.room()))
            if batch:
                self.enqueue(batch)
                self.loop.connected()
            self.health()
        self.shutdown()

    def enqueue(self, batch: dict) -> None:
        s = self.settings
        now = time.monotonic()
        items: list[Item] = []
        dlq: list[Output] = []
        for tp, records in batch.items():
            for rec in records:
                self.metrics.messages_in.labels(SERVICE, tp.topic).inc()
                try:
                    feats = decode(rec.value, Features)
                except SchemaError as exc:
                    dlq.append(dead_letter_output(SERVICE, s, self.metrics, rec, str(exc)))
                    items.append(Item(tp, rec.offset, None, now))  # the watermark passes it in order
                    continue
                items.append(Item(tp, rec.offset, feats, now))
        # Dead letters are sent before their Item is queued, so they are acknowledged
        # before any snapshot that includes their offset is committed.
        futures = self.send(dlq)
        if futures:
            self.pending.append((futures, Done([], {}, -1)))
        self.work.put_many(items)
        self.outstanding += len(items)

    # -- publishing and committing ----------------------------------------------------
    def send(self, outputs: list[Output]) -> list[Any]:
        futures = []
        for out in outputs:
            futures.append(self.producer.send(out.topic, key=out.key.encode("utf-8"), value=out.message.encode()))
            self.metrics.messages_out.labels(SERVICE, out.topic).inc()
        return futures

    def collect(self) -> None:
        """Publish everything the worker finished since the last call."""
        while True:
            if self.failure is not None:  # also re-raised here when it surfaced inside a callback
                raise WorkerDied(f"inference worker failed: {self.failure.error!r}") from self.failure.error
            try:
                got = self.worker.results.get_nowait()
            except queue.Empty:
                return
            if isinstance(got, Failed):
                self.failure = got
                continue
            self.outstanding -= got.chunks
            self.pending.append((self.send(got.outputs), got))
            if got.marker is not None:
                self.answered[got.marker.seq] = got
            self.metrics.inflight_songs.labels(SERVICE).set(got.inflight_songs)

    def settle(self, force: bool = False) -> None:
        """Retire acknowledged outputs in order; commit the newest snapshot they cover."""
        self._retry_failed_commits()
        while self.pending:
            futures, done = self.pending[0]
            if not all(f.is_done for f in futures):
                break
            for f in futures:
                if f.failed():
                    raise kafka_io.DeliveryFailed(f"a classifier output was not acknowledged: {f.exception}")
            self.pending.popleft()
            if done.generation == self.generation and done.marker is None:
                self.to_commit = dict(done.offsets)
        if self.to_commit and (force or time.monotonic() - self.last_commit >= COMMIT_INTERVAL_S):
            self.commit(self.to_commit, wait=force)
            self.to_commit = {}

    def commit(self, offsets: dict[Hashable, int], *, assigned_only: bool = True, wait: bool = True) -> None:
        """Commit offsets; `wait=False` (the steady state) sends the commit without waiting
        for it, so the poll thread never stalls behind the broker's long-polling fetch."""
        if assigned_only:
            assigned = set(self.consumer.assignment())
            offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        offsets = {tp: o for tp, o in offsets.items() if self.committed.get(tp, -1) != o}
        self.last_commit = time.monotonic()
        if not offsets:
            return
        try:
            if wait:
                kafka_io.commit_offsets(self.consumer, offsets)
            else:
                generation = self.generation
                kafka_io.commit_offsets_async(self.consumer, offsets,
                                              lambda offs, exc: self._commit_failed(offs, exc, generation))
        except KafkaError as exc:  # e.g. CommitFailedError after a rebalance: the records replay
            logger.warning("offset commit failed (%s); those records will be processed again", exc)
            return
        self.committed.update(offsets)

    def _commit_failed(self, offsets: dict[Hashable, int], exc: Exception, generation: int) -> None:
        """An asynchronous commit failed (called on kafka-python's I/O thread): the poll
        thread sends it again unless a newer commit or a rebalance has come since."""
        logger.warning("asynchronous offset commit failed (%s); it will be sent again", exc)
        self.commit_retries.append((generation, offsets))

    def _retry_failed_commits(self) -> None:
        while self.commit_retries:
            generation, offsets = self.commit_retries.popleft()
            if generation != self.generation:
                continue  # those partitions were revoked (and committed synchronously) since
            for tp, o in offsets.items():
                if self.committed.get(tp) == o:
                    self.committed.pop(tp, None)
                    self.to_commit.setdefault(tp, o)

    def wait_acked(self, deadline: float) -> bool:
        """Publish and settle until nothing is pending (or the deadline passes)."""
        self.producer.flush(timeout=max(0.1, deadline - time.monotonic()))
        while self.pending and time.monotonic() < deadline:
            self.collect()
            self.settle()
            if self.pending:
                time.sleep(0.005)
        return not self.pending

    # -- backpressure, metrics --------------------------------------------------------
    def backpressure(self) -> None:
        depth = len(self.work)
        self.metrics.queue_depth.labels(SERVICE).set(depth)
        assigned = self.consumer.assignment()
        if not assigned:
            return
        if not self.paused and depth >= self.work.capacity:
            self.consumer.pause(*assigned)
            self.paused = True
            self.metrics.backpressure.labels(SERVICE).inc()
        elif self.paused and depth <= self.work.capacity // 2:
            self.consumer.resume(*assigned)
            self.paused = False

    def health(self) -> None:
        """Every HEALTH_INTERVAL_S: export the lag; a broker that does not answer raises
        (KafkaTimeoutError), and the session starts again from the committed offsets."""
        now = time.monotonic()
        if now - self.last_health < HEALTH_INTERVAL_S:
            return
        s = self.settings
        for tp, lag in kafka_io.consumer_lag(self.consumer, timeout_ms=HEALTH_TIMEOUT_MS,
                                             probe_topic=s.topic_features).items():
            self.metrics.consumer_lag.labels(SERVICE, s.group_classifier, tp.topic, str(tp.partition)).set(lag)
        self.last_health = time.monotonic()
        self.loop.connected()

    # -- rebalance and shutdown -------------------------------------------------------
    def drain(self, marker: Marker, timeout: float = DRAIN_TIMEOUT_S) -> Done | None:
        """Queue `marker` behind all queued work and wait (publishing) until the worker answers it."""
        self.work.put_marker(marker)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.collect()
            self.settle()
            done = self.answered.pop(marker.seq, None)
            if done is not None:
                return done
            if not self.worker.is_alive():
                break
            time.sleep(0.002)
        return None

    def on_revoked(self, revoked: set) -> None:
        if not revoked:
            return
        if self.work.closed:
            return  # shutting down (consumer.close leaves the group): shutdown() already drained and committed
        started = time.monotonic()
        self.marker_seq += 1
        marker = Marker("revoke", frozenset(revoked), self.marker_seq)
        self.generation += 1  # earlier snapshots include the revoked partitions: never commit them now
        self.to_commit = {}
        done = self.drain(marker)
        if done is None:
            dropped = self.work.drop(lambda it: it.partition in revoked)
            self.outstanding -= dropped
            logger.warning("revoked %d partitions but the inference thread did not drain within %g s; dropped %d "
                           "queued chunks, the next owner redoes them", len(revoked), DRAIN_TIMEOUT_S, dropped)
            return
        if self.wait_acked(time.monotonic() + DRAIN_TIMEOUT_S):
            self.commit(done.offsets, assigned_only=False)
        else:
            logger.warning("outputs not acknowledged on revocation; not committing (they will be replayed)")
        for tp in revoked:
            self.committed.pop(tp, None)
        logger.info("revoked %d partitions: drained and committed in %.0f ms", len(revoked),
                    1000 * (time.monotonic() - started))

    def shutdown(self) -> None:
        """Finish queued work, publish, commit, stop the worker (SIGTERM)."""
        started = time.monotonic()
        self.work.close()
        self.worker.join(DRAIN_TIMEOUT_S)
        self.collect()
        if self.wait_acked(time.monotonic() + 30):
            self.settle(force=True)
        logger.info("classifier drained in %.0f ms", 1000 * (time.monotonic() - started))

    def teardown(self) -> None:
        self.work.close()
        self.work.drop()
        self.worker.join(DRAIN_TIMEOUT_S)
        close_quietly(self.consumer)
        close_quietly(self.producer)
