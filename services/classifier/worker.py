"""The inference worker: batches from the WorkQueue -> predict -> vote -> outputs.

It runs on its own thread and never touches a Kafka client. It owns the SongTracker (the
per-song votes and the commit watermark) and the models; after every batch it posts a
`Done` to `results` with the outputs to publish and the tracker's safe offsets at that
point. The poll thread publishes the outputs and commits those offsets once every output
posted up to then is acknowledged.

Markers from the queue are answered in order: `revoke` (after the items before it, i.e.
all work of the revoked partitions, has been processed) posts the revoked partitions'
final safe offsets, then forgets their songs and bumps the worker's generation; a
`barrier` just posts the current offsets.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from shared.featurespec import ChunkFeatures, SpecMismatch, require_compatible_spec, require_feature_shapes
from shared.metrics import ServiceMetrics
from shared.schemas import Prediction
from shared.service import Output
from shared.settings import Settings
from shared.song_tracker import SongTracker
from shared.verdicts import error_verdict, verdict_from_tally

from services.classifier.batching import Item, Marker, WorkQueue, parse_sizes

logger = logging.getLogger("services.classifier")
SERVICE = "classifier"
HOUSEKEEPING_S = 1.0


@dataclass
class Done:
    """What one batch (or marker) produced, in the order the worker made it."""

    outputs: list[Output]
    offsets: dict[Hashable, int]
    generation: int
    inflight_songs: int = 0
    marker: Marker | None = None
    chunks: int = 0


@dataclass
class _Batch:
    """One batch between prepare, predict and finish (item positions as keys)."""

    items: list[Item]
    skip: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)
    versions: dict[int, str] = field(default_factory=dict)
    opened: dict[str, str] = field(default_factory=dict)  # song -> version, in item order
    models: dict[str, Any] = field(default_factory=dict)  # version -> artifact, held for the batch
    groups: dict[str, list[int]] = field(default_factory=dict)  # version -> items to predict
    inputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    probs: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Failed:
    """The worker hit a bug and stopped; the poll thread re-raises it."""

    error: BaseException
    generation: int = 0
    outputs: list[Output] = field(default_factory=list)


class InferenceWorker:
    def __init__(self, work: WorkQueue, holder: Any, settings: Settings, metrics: ServiceMetrics,
                 *, tracker: SongTracker | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.work = work
        self.holder = holder
        self.settings = settings
        self.metrics = metrics
        self.tracker = tracker or SongTracker()
        self.clock = clock
        self.max_size = max(1, int(settings.batch_max_size))
        self.max_wait_s = max(0.0, float(settings.batch_max_wait_ms) / 1000.0)
        self.preferred = parse_sizes(settings.batch_preferred_sizes, self.max_size)
        self.results: queue_mod.SimpleQueue[Done | Failed] = queue_mod.SimpleQueue()
        self.generation = 0
        self.busy = False
        self._unfinished: list[_Batch] = []  # prepared, not yet finished (at most two)
        self._last_housekeeping = clock()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    # -- thread -----------------------------------------------------------------------
    def start(self) -> "InferenceWorker":
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        """Take, prepare, predict, finish; while TensorFlow computes one batch (on the
        predict thread, GIL released) this thread finishes the previous one and prepares
        the next, when a full next batch is already waiting. Results stay in batch order."""
        predictor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        pending: tuple[_Batch, Future] | None = None
        try:
            while True:
                if pending is not None and not self.work.full_batch_ready(self.max_size):
                    self._finish_pending(pending)
                    pending = None
                if pending is not None:
                    got: list[Item] | Marker | None = self.work.take(self.max_size, 0.0)
                else:
                    got = self.work.take(self.max_size, self.max_wait_s, self.preferred, idle_timeout_s=HOUSEKEEPING_S)
                if got is None or isinstance(got, Marker):
                    if pending is not None:
                        self._finish_pending(pending)
                        pending = None
                    if got is None:
                        break
                self.busy = True
                try:
                    if isinstance(got, Marker):
                        self.on_marker(got)
                    elif got:
                        batch = self.prepare(got, pending[0] if pending is not None else None)
                        fut = predictor.submit(self.predict, batch)
                        if pending is not None:
                            self._finish_pending(pending)
                        pending = (batch, fut)
                    if pending is None:
                        self.housekeeping()
                finally:
                    self.busy = False
        except BaseException as exc:  # noqa: BLE001 - reported to the poll thread, which stops the service
            logger.exception("inference worker failed")
            self.results.put(Failed(exc, self.generation))
        finally:
            predictor.shutdown(wait=False, cancel_futures=True)

    def _finish_pending(self, pending: tuple["_Batch", Future]) -> Done:
        batch, fut = pending
        fut.result()  # predict() reports its own failures in the batch; anything else is a bug
        return self.finish(batch)

    # -- one batch: prepare (versions, checks, inputs) -> predict -> finish (votes) -------
    def process(self, items: list[Item]) -> Done:
        """One batch, start to end, on the calling thread."""
        batch = self.prepare(items)
        self.predict(batch)
        return self.finish(batch)

    def prepare(self, items: list[Item], previous: "_Batch | None" = None) -> "_Batch":
        """Pick each chunk's model version and check it; stack the network's inputs.

        `previous` is a batch prepared but not yet finished: its songs count as open (the
        tracker has not seen them yet) with the versions picked for them there. This is a
        superset of what `finish` then accepts, so nothing is skipped wrongly."""
        started = self.clock()
        model = self.holder.current()
        tracker = self.tracker
        carried = previous.opened if previous is not None else {}
        b = _Batch(items)
        self._unfinished.append(b)
        for i, it in enumerate(items):
            self.metrics.queue_wait.labels(SERVICE).observe(max(0.0, started - it.arrived))
            f = it.features
            if f is None or not (f.song_id in b.opened or f.song_id in carried
                                 or tracker.would_open_or_extend(f.song_id, f.index)):
                b.skip.add(i)  # dead-lettered, or a tail of a song decided before our start offset
                continue
            pinned = b.opened.get(f.song_id) or carried.get(f.song_id) or tracker.model_version(f.song_id)
            m = None if pinned is None else (b.models.get(pinned) or (previous.models.get(pinned) if previous else None)
                                             or self.holder.get(pinned))
            version = pinned if m is not None else model.version
            b.opened.setdefault(f.song_id, version)
            b.versions[i] = version
            b.models.setdefault(version, m if m is not None else model)
            if f.error:
                b.errors[i] = f.error
                continue
            try:
                spec = b.models[version].spec
                require_compatible_spec(f.spec_id, spec)
                require_feature_shapes(f.arrays, spec)
            except SpecMismatch as exc:  # this chunk only: the song gets an error verdict that says why
                b.errors[i] = f"model {version} cannot read these features: {exc}"
                continue
            b.groups.setdefault(version, []).append(i)
        for version, idx in b.groups.items():
            try:
                feats = [ChunkFeatures(**{k: np.asarray(v) for k, v in items[i].features.arrays.items()})  # type: ignore[union-attr]
                         for i in idx]
                b.inputs[version] = b.models[version].input_arrays(feats)
            except Exception as exc:  # noqa: BLE001 - e.g. a wrong array shape that passed the schema
                self._group_failed(b, version, exc)
        return b

    def predict(self, b: "_Batch") -> None:
        """The network on each version's inputs (the part that runs without the GIL)."""
        for version, inputs in b.inputs.items():
            idx = b.groups[version]
            t0 = time.perf_counter()
            try:
                out = b.models[version].predict_arrays(inputs)
                if len(out) != len(idx):
                    raise ValueError(f"predict returned {len(out)} rows for {len(idx)} chunks")
                b.probs.update({i: out[j] for j, i in enumerate(idx)})
            except Exception as exc:  # noqa: BLE001
                self._group_failed(b, version, exc)
            self.metrics.batch_size.labels(SERVICE).observe(len(idx))
            self.metrics.processing_seconds.labels(SERVICE, "predict").observe(time.perf_counter() - t0)

    def _group_failed(self, b: "_Batch", version: str, exc: Exception) -> None:
        idx = b.groups[version]
        logger.error("predict failed on a batch of %d: %s", len(idx), exc, exc_info=exc)
        self.metrics.errors.labels(SERVICE, "predict").inc()
        for i in idx:
            b.errors[i] = f"prediction failed: {exc}"

    def finish(self, b: "_Batch") -> Done:
        """Votes, verdicts and outputs, in item order, with the tracker's exact state."""
        tracker = self.tracker
        outputs: list[Output] = []
        accepted: set[str] = set()
        for i, it in enumerate(b.items):
            f = it.features
            if i in b.skip or f is None or not (f.song_id in accepted or tracker.would_open_or_extend(f.song_id, f.index)):
                tracker.advance(it.partition, it.offset)
                continue
            accepted.add(f.song_id)
            version = b.versions[i]
            m = b.models[version]
            err = b.errors.get(i, "")
            pr = b.probs.get(i)
            if pr is None and not err:
                err = "prediction missing"  # cannot happen: every group is predicted or failed
            outputs.append(Output(self.settings.topic_predictions, f.song_id, Prediction(
                song_id=f.song_id, filename=f.filename, index=f.index, last=f.last,
                probabilities=[] if pr is None else [float(x) for x in pr], genres=list(m.genres),
                model_version=version, error=err, produced_at=f.produced_at,
            )))
            tally = tracker.observe(it.partition, it.offset, f.song_id, index=f.index, last=f.last,
                                    filename=f.filename, produced_at=f.produced_at, probabilities=pr, error=err,
                                    model_version=version)
            if tally is not None:
                outputs.append(self._verdict_output(verdict_from_tally(tally, m.genres, version)))
        self._unfinished.remove(b)
        # A batch prepared meanwhile may have opened songs on a version no tracked song uses yet.
        held = {v for other in self._unfinished for v in other.models}
        self.holder.retain(tracker.versions_in_use() | held)
        done = Done(outputs, tracker.safe_offsets(), self.generation, len(tracker), chunks=len(b.items))
        self.results.put(done)
        return done

    def _verdict_output(self, verdict: Any) -> Output:
        self.metrics.verdicts.labels(SERVICE, verdict.genre or "-", verdict.status).inc()
        if verdict.produced_at:
            self.metrics.end_to_end.labels(SERVICE).observe(max(0.0, verdict.verdict_at - verdict.produced_at))
        return Output(self.settings.topic_verdicts, verdict.song_id, verdict)

    # -- markers and housekeeping -----------------------------------------------------
    def on_marker(self, marker: Marker) -> Done:
        offsets = self.tracker.safe_offsets()
        if marker.kind == "revoke":
            offsets = {p: o for p, o in offsets.items() if p in marker.partitions}
            self.tracker.forget_partitions(set(marker.partitions))
            self.holder.retain(self.tracker.versions_in_use())
            gen = self.generation
            self.generation += 1
        else:
            gen = self.generation
        done = Done([], offsets, gen, len(self.tracker), marker=marker)
        self.results.put(done)
        return done

    def housekeeping(self, force: bool = False) -> Done | None:
        now = self.clock()
        if not force and now - self._last_housekeeping < HOUSEKEEPING_S:
            return None
        self._last_housekeeping = now
        self.holder.current()  # picks up a reloaded model even while idle
        stale = self.tracker.stale_with_versions(self.settings.classifier_stale_song_s)
        if not stale:
            return None
        outputs = []
        for t, version in stale:
            missing = [i for i in range((t.last_index or 0) + 1) if i not in t.probabilities and i not in t.errors]
            reason = (f"incomplete: chunks {missing or 'after the last seen'} never arrived within "
                      f"{self.settings.classifier_stale_song_s:g} s")
            outputs.append(self._verdict_output(error_verdict(t.song_id, t.filename, reason, version,
                                                              produced_at=t.produced_at)))
        self.holder.retain(self.tracker.versions_in_use())
        done = Done(outputs, self.tracker.safe_offsets(), self.generation, len(self.tracker))
        self.results.put(done)
        return done
