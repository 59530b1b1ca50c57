"""The classifier's consume-batch-predict-vote loop.

Features from many polls and many songs are gathered into one `predict` call, bounded by
GENRE_BATCH_MAX_SIZE chunks and GENRE_BATCH_MAX_WAIT_MS of waiting, because one call per
chunk costs ~14x more per chunk on CPU. Offsets are committed only up to the first
record of the oldest song without a verdict (see shared.song_tracker).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kafka import ConsumerRebalanceListener
from kafka.errors import KafkaError

from shared import kafka_io
from shared.featurespec import ChunkFeatures, SpecMismatch, require_same_spec
from shared.metrics import ServiceMetrics
from shared.model import ModelArtifact, ModelLoadError
from shared.schemas import Features, Prediction, SchemaError, decode
from shared.service import BACKOFF_MAX_S, BACKOFF_START_S, Output, StopFlag, dead_letter, session_overrides
from shared.settings import Settings
from shared.song_tracker import SongTracker
from shared.verdicts import error_verdict, verdict_from_tally

logger = logging.getLogger("services.classifier")
SERVICE = "classifier"
MODEL_CHECK_INTERVAL_S = 5.0
STALE_SONG_S = 900.0


@dataclass
class Pending:
    partition: object  # TopicPartition
    offset: int
    features: Features
    arrived: float


class ModelHolder:
    """The current model; reloaded between batches when its metadata.json changes."""

    def __init__(self, path: str, metrics: ServiceMetrics) -> None:
        self.path = path
        self.metrics = metrics
        self.model = ModelArtifact.load(path)
        self._stamp = self._read_stamp()
        self._checked = time.monotonic()
        self._announce()

    def _read_stamp(self) -> tuple[float, str]:
        meta = Path(self.path) / "metadata.json"
        try:
            return (meta.stat().st_mtime, os.path.realpath(self.path))
        except OSError:
            return (0.0, "")

    def _announce(self) -> None:
        device = getattr(self.model, "device", "CPU")
        device = device() if callable(device) else device
        self.metrics.device.clear()
        self.metrics.device.labels(SERVICE, str(device)).set(1)
        logger.info("model %s (%d genres: %s) on device %s", self.model.version, len(self.model.genres),
                    ", ".join(self.model.genres), device)

    def maybe_reload(self) -> None:
        if time.monotonic() - self._checked < MODEL_CHECK_INTERVAL_S:
            return
        self._checked = time.monotonic()
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return
        try:
            new = ModelArtifact.load(self.path)
        except ModelLoadError as exc:
            logger.error("model at %s changed but does not load (%s); keeping %s", self.path, exc, self.model.version)
            self._stamp = stamp
            return
        logger.info("model changed: %s -> %s", self.model.version, new.version)
        self.model, self._stamp = new, stamp
        self._announce()


class ClassifierLoop:
    def __init__(self, settings: Settings, metrics: ServiceMetrics, stop: StopFlag | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = stop or StopFlag()
        self.holder = ModelHolder(settings.model_path, metrics)
        self.tracker = SongTracker()
        self.pending: list[Pending] = []

    # -- lifecycle --------------------------------------------------------------------
    def run_forever(self) -> None:
        backoff = BACKOFF_START_S
        while not self.stop.is_set():
            try:
                self._run_session()
                backoff = BACKOFF_START_S
            except kafka_io.AuthenticationFailed:
                raise
            except (KafkaError, kafka_io.BrokerUnavailable, OSError) as exc:
                self.metrics.reconnects.labels(SERVICE).inc()
                self.metrics.errors.labels(SERVICE, "kafka").inc()
                logger.warning("Kafka connection problem (%s: %s); reconnecting in %.1f s", type(exc).__name__, exc, backoff)
                self.tracker = SongTracker()
                self.pending = []
                if self.stop.wait(backoff):
                    break
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        logger.info("classifier stopped")

    def _run_session(self) -> None:
        s = self.settings
        consumer = kafka_io.make_consumer(
            s, s.group_classifier, [], max_poll_records=s.batch_max_size, max_poll_interval_ms=300_000,
            **session_overrides(s),
        )
        producer = kafka_io.make_producer(s)
        loop = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # type: ignore[no-untyped-def]
                # Finish what we hold, publish its verdicts, commit, and let the next owner go on.
                loop._run_batch(consumer, producer)
                loop.tracker.forget_partitions(set(revoked))

            def on_partitions_assigned(self, assigned):  # type: ignore[no-untyped-def]
                logger.info("assigned %d partitions", len(assigned))

        consumer.subscribe([s.topic_features], listener=Listener())
        try:
            while not self.stop.is_set():
                timeout = self._poll_timeout_ms()
                batch = consumer.poll(timeout_ms=timeout, max_records=s.batch_max_size - len(self.pending) or 1)
                now = time.monotonic()
                dlq: list[Output] = []
                for tp, records in batch.items():
                    for rec in records:
                        self.metrics.messages_in.labels(SERVICE, tp.topic).inc()
                        try:
                            feats = decode(rec.value, Features)
                        except SchemaError as exc:
                            self.metrics.deadletters.labels(SERVICE, tp.topic).inc()
                            logger.warning("dead-lettering %s[%d]@%d: %s", tp.topic, tp.partition, rec.offset, exc)
                            dl = dead_letter(SERVICE, rec, str(exc))
                            dlq.append(Output(s.topic_deadletter, dl.key or f"{tp.topic}-{tp.partition}-{rec.offset}", dl))
                            self.tracker.advance(tp, rec.offset)
                            continue
                        self.pending.append(Pending(tp, rec.offset, feats, now))
                self._send(producer, dlq)
                if self._batch_due() or self.stop.is_set():
                    self._run_batch(consumer, producer)
                elif dlq:
                    self._commit(consumer, producer)
                self._expire_stale(consumer, producer)
                for tp, lag in kafka_io.consumer_lag(consumer).items():
                    self.metrics.consumer_lag.labels(SERVICE, s.group_classifier, tp.topic, str(tp.partition)).set(lag)
                self.metrics.inflight_songs.labels(SERVICE).set(len(self.tracker))
                self.holder.maybe_reload()
            self._run_batch(consumer, producer)
        finally:
            for client in (consumer, producer):
                try:
                    client.close()
                except Exception:
                    logger.debug("error closing a Kafka client", exc_info=True)

    # -- batching ---------------------------------------------------------------------
    def _poll_timeout_ms(self) -> int:
        if not self.pending:
            return self.settings.poll_timeout_ms
        waited = (time.monotonic() - self.pending[0].arrived) * 1000
        return max(0, int(self.settings.batch_max_wait_ms - waited))

    def _batch_due(self) -> bool:
        if not self.pending:
            return False
        if len(self.pending) >= self.settings.batch_max_size:
            return True
        return (time.monotonic() - self.pending[0].arrived) * 1000 >= self.settings.batch_max_wait_ms

    def _run_batch(self, consumer: object, producer: object) -> None:
        if not self.pending:
            return
        model = self.holder.model
        batch, self.pending = self.pending, []
        started = time.monotonic()
        errors: dict[int, str] = {}
        usable: list[int] = []
        for i, p in enumerate(batch):
            self.metrics.queue_wait.labels(SERVICE).observe(started - p.arrived)
            if p.features.error:
                errors[i] = p.features.error
                continue
            try:
                require_same_spec(p.features.spec_id, model.spec)
                usable.append(i)
            except SpecMismatch as exc:
                errors[i] = str(exc)
        probs: dict[int, np.ndarray] = {}
        if usable:
            t0 = time.perf_counter()
            feats = [ChunkFeatures(**{k: np.asarray(v) for k, v in batch[i].features.arrays.items()}) for i in usable]
            try:
                out = model.predict(feats)
                probs = {i: out[j] for j, i in enumerate(usable)}
            except Exception as exc:  # e.g. a wrong array shape that passed the schema
                logger.exception("predict failed on a batch of %d", len(usable))
                self.metrics.errors.labels(SERVICE, "predict").inc()
                for i in usable:
                    errors[i] = f"prediction failed: {exc}"
            self.metrics.batch_size.labels(SERVICE).observe(len(usable))
            self.metrics.processing_seconds.labels(SERVICE, "predict").observe(time.perf_counter() - t0)
        outputs: list[Output] = []
        for i, p in enumerate(batch):
            f = p.features
            err = errors.get(i, "")
            pr = probs.get(i)
            outputs.append(Output(self.settings.topic_predictions, f.song_id, Prediction(
                song_id=f.song_id, filename=f.filename, index=f.index, last=f.last,
                probabilities=[] if pr is None else [float(x) for x in pr], genres=list(model.genres),
                model_version=model.version, error=err, produced_at=f.produced_at,
            )))
            tally = self.tracker.observe(p.partition, p.offset, f.song_id, index=f.index, last=f.last,
                                         filename=f.filename, produced_at=f.produced_at, probabilities=pr, error=err)
            if tally is not None:
                outputs.append(self._verdict_output(verdict_from_tally(tally, model.genres, model.version)))
        self._send(producer, outputs)
        self._commit(consumer, producer)

    def _verdict_output(self, verdict) -> Output:  # type: ignore[no-untyped-def]
        self.metrics.verdicts.labels(SERVICE, verdict.genre or "-", verdict.status).inc()
        if verdict.produced_at:
            self.metrics.end_to_end.labels(SERVICE).observe(max(0.0, verdict.verdict_at - verdict.produced_at))
        return Output(self.settings.topic_verdicts, verdict.song_id, verdict)

    def _expire_stale(self, consumer: object, producer: object) -> None:
        stale = self.tracker.stale(STALE_SONG_S)
        if not stale:
            return
        outs = []
        for t in stale:
            missing = [i for i in range((t.last_index or 0) + 1) if i not in t.probabilities and i not in t.errors]
            reason = f"incomplete: chunks {missing or 'after the last seen'} never arrived within {STALE_SONG_S:g} s"
            outs.append(self._verdict_output(error_verdict(t.song_id, t.filename, reason, self.holder.model.version,
                                                           produced_at=t.produced_at)))
        self._send(producer, outs)
        self._commit(consumer, producer)

    # -- Kafka ------------------------------------------------------------------------
    def _send(self, producer: object, outputs: list[Output]) -> None:
        self._futures = getattr(self, "_futures", [])
        for out in outputs:
            self._futures.append(producer.send(out.topic, key=out.key.encode("utf-8"), value=out.message.encode()))  # type: ignore[attr-defined]
            self.metrics.messages_out.labels(SERVICE, out.topic).inc()

    def _commit(self, consumer: object, producer: object) -> None:
        producer.flush()  # type: ignore[attr-defined]
        futures, self._futures = getattr(self, "_futures", []), []
        for f in futures:
            f.get(timeout=30)
        offsets = self.tracker.safe_offsets()
        if offsets:
            kafka_io.commit_offsets(consumer, offsets)
