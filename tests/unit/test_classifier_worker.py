"""The classifier's inference worker (predict + vote + watermark) with a fake model."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from services.classifier.batching import Item, Marker, WorkQueue
from services.classifier.worker import Done, InferenceWorker
from shared.featurespec import DEFAULT_SPEC, MEL_SPEC
from shared.metrics import ServiceMetrics
from shared.schemas import Features, Prediction, Verdict
from shared.settings import Settings

SETTINGS = Settings(topic_predictions="preds", topic_verdicts="verdicts", batch_max_size=8, batch_max_wait_ms=20)


class FakeModel:
    """p(a) = 0.9 when the chunk's mfcc is positive, else 0.2: deterministic per chunk."""

    def __init__(self, version: str, fail: bool = False) -> None:
        self.version = version
        self.genres = ["a", "b"]
        self.spec = DEFAULT_SPEC
        self.device = "CPU"
        self.fail = fail
        self.calls: list[int] = []

    def input_arrays(self, feats):  # noqa: ANN001
        return {"mfcc_mean": np.array([float(f.mfcc.mean()) for f in feats], dtype=np.float32)}

    def predict_arrays(self, inputs):  # noqa: ANN001
        means = inputs["mfcc_mean"]
        self.calls.append(len(means))
        if self.fail:
            raise ValueError("bad shapes")
        pa = np.where(means > 0, 0.9, 0.2).astype(np.float32)
        return np.stack([pa, 1 - pa], axis=1)


class FakeHolder:
    def __init__(self, model: FakeModel) -> None:
        self.model = model
        self.models = {model.version: model}
        self.released: list[str] = []

    def current(self) -> FakeModel:
        return self.model

    def get(self, version: str) -> FakeModel | None:
        return self.models.get(version)

    def swap(self, model: FakeModel) -> None:
        self.model = model
        self.models[model.version] = model

    def retain(self, versions: set[str]) -> None:
        for v in [v for v in self.models if v != self.model.version and v not in versions]:
            self.released.append(v)
            del self.models[v]


def features(song: str, index: int, last: bool, sign: float = 1.0, **kw) -> Features:  # noqa: ANN003
    shapes = DEFAULT_SPEC.feature_shapes()
    arrays = {"mfcc": np.full(shapes["mfcc"], sign, np.float32), "peaks": np.ones(shapes["peaks"], np.float32),
              "valleys": np.ones(shapes["valleys"], np.float32)}
    return Features(song_id=song, filename=f"{song}.wav", index=index, last=last, spec_id=DEFAULT_SPEC.id,
                    arrays=arrays, **kw)


def items(seq, partition="p0", start=0):  # noqa: ANN001
    """seq of (song, index, last[, sign]) -> Items at consecutive offsets."""
    out = []
    for k, s in enumerate(seq):
        song, index, last, *rest = s
        out.append(Item(partition, start + k, features(song, index, last, *rest)))
    return out


def verdicts(done: Done) -> list[Verdict]:
    return [o.message for o in done.outputs if isinstance(o.message, Verdict)]


def predictions(done: Done) -> list[Prediction]:
    return [o.message for o in done.outputs if isinstance(o.message, Prediction)]


def make_worker(model: FakeModel | None = None, **settings) -> InferenceWorker:  # noqa: ANN003
    holder = FakeHolder(model or FakeModel("v1"))
    return InferenceWorker(WorkQueue(64), holder, replace(SETTINGS, **settings), ServiceMetrics("classifier"))


def test_one_predict_call_for_many_songs_and_the_watermark():
    w = make_worker()
    done = w.process(items([("a", 0, False), ("b", 0, False), ("a", 1, True), ("c", 0, True, -1.0)]))
    assert w.holder.model.calls == [4]
    assert [p.song_id for p in predictions(done)] == ["a", "b", "a", "c"]
    vs = verdicts(done)
    assert [(v.song_id, v.genre, v.chunk_count, v.model_version) for v in vs] == [("a", "a", 2, "v1"), ("c", "b", 1, "v1")]
    assert done.offsets == {"p0": 1}  # b (offset 1) is still open
    done = w.process(items([("b", 1, True)], start=4))
    assert [v.song_id for v in verdicts(done)] == ["b"] and done.offsets == {"p0": 5}


def test_interleaved_chunks_of_many_songs_give_the_same_verdicts_as_in_order():
    songs = {f"s{k}": (3 + k % 3, 1.0 if k % 2 else -1.0) for k in range(6)}
    in_order = [(s, i, i == n - 1, sign) for s, (n, sign) in songs.items() for i in range(n)]
    interleaved = [(s, i, i == n - 1, sign) for i in range(5) for s, (n, sign) in songs.items() if i < n]
    results = []
    for seq in (in_order, interleaved):
        w = make_worker()
        out = []
        for k in range(0, len(seq), 3):  # several batches
            out += verdicts(w.process(items(seq[k:k + 3], start=k)))
        results.append({v.song_id: v.identity() for v in out})
        assert len(out) == len(songs) and len(w.tracker) == 0
    assert results[0] == results[1]


def test_tails_of_songs_decided_before_our_start_are_skipped_not_predicted():
    w = make_worker()
    done = w.process(items([("old", 2, False), ("old", 3, True), ("new", 0, True)], start=10))
    assert w.holder.model.calls == [1]
    assert [p.song_id for p in predictions(done)] == ["new"]
    assert done.offsets == {"p0": 13}


def test_dead_lettered_records_only_move_the_watermark_in_order():
    w = make_worker()
    batch = items([("a", 0, False)]) + [Item("p0", 1, None)]
    done = w.process(batch)
    assert done.offsets == {"p0": 0}  # a is open at offset 0: the dead letter behind it must not pass it
    done = w.process(items([("a", 1, True)], start=2))
    assert done.offsets == {"p0": 3}


def test_chunk_errors_and_failed_predicts_give_error_verdicts():
    w = make_worker(FakeModel("v1", fail=True))
    done = w.process(items([("a", 0, True)]))
    (v,) = verdicts(done)
    assert v.status == "error" and "prediction failed" in v.error
    w = make_worker()
    batch = [Item("p0", 0, features("x", 0, True, error="decode failed")),
             Item("p0", 1, replace(features("y", 0, True), spec_id="other-spec"))]
    vs = verdicts(w.process(batch))
    assert [(v.song_id, v.status) for v in vs] == [("x", "error"), ("y", "error")]
    assert "decode failed" in vs[0].error and "spec" in vs[1].error
    assert w.holder.model.calls == []


class StackingModel(FakeModel):
    """Stacks the chunks' mfcc into one array, as a real network's inputs do: a chunk of
    another shape in the group makes the whole stack fail."""

    def input_arrays(self, feats):  # noqa: ANN001
        return {"mfcc_mean": np.stack([f.mfcc for f in feats]).mean(axis=(1, 2)).astype(np.float32)}


def wrong_shape(song: str, shape: tuple[int, int]) -> Features:
    f = features(song, 0, True)
    return replace(f, arrays={**f.arrays, "mfcc": np.ones(shape, np.float32)})


def test_a_wrong_shape_in_a_shared_batch_gets_an_error_verdict_naming_it_and_the_others_are_classified():
    """README: a features record of the wrong shape for the model gets an error verdict
    naming the shape (not a dead letter), and the other chunks of its batch are unaffected."""
    for model in (FakeModel("v1"), StackingModel("v1")):
        w = make_worker(model)
        batch = [Item("p0", 0, features("good", 0, False)), Item("p0", 1, wrong_shape("bad-width", (646, 7))),
                 Item("p0", 2, features("good", 1, False)), Item("p0", 3, wrong_shape("bad-frames", (10, 20))),
                 Item("p0", 4, features("good", 2, True, -1.0)), Item("p0", 5, features("other", 0, True, -1.0))]
        done = w.process(batch)
        assert model.calls == [4]  # one predict call: the good chunks only
        vs = {v.song_id: v for v in verdicts(done)}
        assert set(vs) == {"good", "bad-width", "bad-frames", "other"}
        assert (vs["good"].status, vs["good"].genre, vs["good"].chunk_count) == ("ok", "a", 3)
        assert (vs["other"].status, vs["other"].genre) == ("ok", "b")
        for sid, shape in (("bad-width", "(646, 7)"), ("bad-frames", "(10, 20)")):
            v = vs[sid]
            assert v.status == "error" and v.model_version == "v1", v
            assert "shape" in v.error and shape in v.error and "(646, 20)" in v.error, v.error
        assert [p.song_id for p in predictions(done)] == ["good", "bad-width", "good", "bad-frames", "good", "other"]
        assert all(o.topic in ("preds", "verdicts") for o in done.outputs)  # no dead letter
        assert done.offsets == {"p0": 6}


def test_a_model_swap_pins_open_songs_to_their_first_version():
    w = make_worker()
    w.process(items([("old", 0, False)]))
    v2 = FakeModel("v2")
    w.holder.swap(v2)
    done = w.process(items([("new", 0, False), ("old", 1, True)], start=1))
    assert [(v.song_id, v.model_version) for v in verdicts(done)] == [("old", "v1")]
    assert {p.song_id: p.model_version for p in predictions(done)} == {"new": "v2", "old": "v1"}
    assert w.holder.released == ["v1"]  # no open song needs v1 any more
    done = w.process(items([("new", 1, True)], start=3))
    assert [(v.song_id, v.model_version) for v in verdicts(done)] == [("new", "v2")]


def test_revoke_marker_reports_final_offsets_then_forgets_the_partitions():
    w = make_worker()
    w.process(items([("a", 0, False)], "p0") + items([("b", 0, False), ("b", 1, True)], "p1"))
    done = w.on_marker(Marker("revoke", frozenset({"p0", "p1"}), 7))
    assert done.offsets == {"p0": 0, "p1": 2} and done.marker.seq == 7
    assert done.generation == 0 and w.generation == 1
    assert len(w.tracker) == 0 and w.tracker.safe_offsets() == {}


def test_stale_songs_get_an_error_verdict_naming_their_model():
    w = make_worker(classifier_stale_song_s=0.0)
    w.process(items([("a", 0, False)]))
    time.sleep(0.01)
    done = w.housekeeping(force=True)
    (v,) = verdicts(done)
    assert v.status == "error" and "incomplete" in v.error and v.model_version == "v1"


def test_worker_thread_batches_across_puts_and_answers_markers_in_order():
    w = make_worker(batch_max_size=4, batch_max_wait_ms=30)
    w.start()
    seq = [(f"s{k}", 0, True) for k in range(10)]
    w.work.put_many(items(seq))
    w.work.put_marker(Marker("barrier", seq=1))
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got.append(w.results.get(timeout=5))
        if got[-1].marker is not None:
            break
    w.work.close()
    assert w.join(5)
    assert all(n <= 4 for n in w.holder.model.calls) and sum(w.holder.model.calls) == 10
    assert sum(d.chunks for d in got) == 10
    assert got[-1].marker.seq == 1 and got[-1].offsets == {"p0": 10}
    assert sum(len(verdicts(d)) for d in got) == 10


def test_a_batch_prepared_before_the_previous_one_finished_keeps_its_songs_open_and_pinned():
    w = make_worker()
    first = w.prepare(items([("a", 0, False), ("b", 0, False)]))
    w.holder.swap(FakeModel("v2"))
    # a's chunk 1 arrives while the batch with chunk 0 is still being predicted: the
    # tracker has not seen `a` yet, but the chunk must be predicted with a's version.
    second = w.prepare(items([("a", 1, True), ("c", 0, True)], start=2), previous=first)
    assert second.skip == set() and second.versions == {0: "v1", 1: "v2"}
    for b in (first, second):
        w.predict(b)
    w.finish(first)
    done = w.finish(second)
    assert [(v.song_id, v.model_version, v.chunk_count) for v in verdicts(done)] == [("a", "v1", 2), ("c", "v2", 1)]
    assert done.offsets == {"p0": 1}  # b is still open


def test_finish_drops_what_the_early_prepare_let_through_when_the_song_was_decided_meanwhile():
    w = make_worker()
    first = w.prepare(items([("a", 0, False), ("a", 1, True)]))
    second = w.prepare(items([("a", 1, True)], start=2), previous=first)  # a duplicate of the last chunk
    assert second.skip == set()
    for b in (first, second):
        w.predict(b)
    assert [v.song_id for v in verdicts(w.finish(first))] == ["a"]
    done = w.finish(second)  # as process() would: a tail of a decided song only moves the watermark
    assert done.outputs == [] and done.offsets == {"p0": 3}


def test_pipelined_worker_thread_gives_the_verdicts_of_one_batch_at_a_time():
    songs = {f"s{k}": (2 + k % 5, 1.0 if k % 3 else -1.0) for k in range(40)}
    seq = [(s, i, i == n - 1, sign) for i in range(6) for s, (n, sign) in songs.items() if i < n]
    sequential = make_worker(batch_max_size=8)
    expected = []
    for k in range(0, len(seq), 8):
        expected += verdicts(sequential.process(items(seq[k:k + 8], start=k)))
    w = make_worker(batch_max_size=8, batch_max_wait_ms=5)
    w.work = WorkQueue(10_000)
    w.work.put_many(items(seq))  # a backlog: every batch after the first is taken while one is predicted
    w.start()
    w.work.put_marker(Marker("barrier", seq=1))
    got: list[Done] = []
    while not got or got[-1].marker is None:
        got.append(w.results.get(timeout=10))
    w.work.close()
    assert w.join(5)
    assert sum(d.chunks for d in got) == len(seq)
    assert [v.identity() for d in got for v in verdicts(d)] == [v.identity() for v in expected]
    assert got[-1].offsets == {"p0": len(seq)} and len(w.tracker) == 0


def test_a_version_picked_by_an_early_prepare_survives_a_swap_until_its_songs_end():
    w = make_worker()
    first = w.prepare(items([("a", 0, True)]))
    second = w.prepare(items([("b", 0, False)], start=1), previous=first)  # b opens on v1
    w.holder.swap(FakeModel("v2"))
    for b in (first, second):
        w.predict(b)
    w.finish(first)  # no tracked song uses v1, but the unfinished batch does
    assert "v1" in w.holder.models
    w.finish(second)
    done = w.process(items([("b", 1, True)], start=2))
    assert [(v.song_id, v.model_version) for v in verdicts(done)] == [("b", "v1")]
    assert w.holder.released == ["v1"]


class MelModel(FakeModel):
    """A model on feature spec v2 that reads the log-mel: p(a) = 0.9 when its mean is positive."""

    def __init__(self, version: str) -> None:
        super().__init__(version)
        self.spec = MEL_SPEC

    def input_arrays(self, feats):  # noqa: ANN001
        return {"mfcc_mean": np.array([float(f.logmel.mean()) for f in feats], dtype=np.float32)}


def v2_features(song: str, index: int, last: bool, sign: float = 1.0, mel_sign: float | None = None) -> Features:
    f = features(song, index, last, sign)
    logmel = np.full(MEL_SPEC.feature_shapes()["logmel"], sign if mel_sign is None else mel_sign, np.float32)
    return replace(f, spec_id=MEL_SPEC.id, arrays={**f.arrays, "logmel": logmel})


def test_a_v2_model_gives_an_error_verdict_to_a_song_without_log_mel_and_classifies_the_others():
    w = make_worker(MelModel("musicnn-abc"))
    lacking = replace(v2_features("b", 0, True), arrays=features("b", 0, True).arrays)  # says v2, has no logmel
    batch = [Item("p0", 0, v2_features("a", 0, False)), Item("p0", 1, lacking),
             Item("p0", 2, features("c", 0, True)),  # spec v1
             Item("p0", 3, v2_features("a", 1, True)), Item("p0", 4, v2_features("d", 0, True, -1.0))]
    done = w.process(batch)
    assert w.holder.model.calls == [3]  # a (2 chunks) and d, in one predict call
    vs = {v.song_id: v for v in verdicts(done)}
    assert [(k, v.status, v.genre) for k, v in sorted(vs.items())] == [
        ("a", "ok", "a"), ("b", "error", ""), ("c", "error", ""), ("d", "ok", "b")]
    for song in ("b", "c"):
        reason = vs[song].error
        assert "musicnn-abc" in reason and MEL_SPEC.id in reason and "lack the log-mel input" in reason
        assert "GENRE_FEATURE_SPEC=2" in reason and vs[song].model_version == "musicnn-abc"
    assert DEFAULT_SPEC.id in vs["c"].error  # names the spec the features have


def test_a_v1_model_classifies_v2_features_ignoring_the_log_mel():
    w = make_worker()
    # the log-mel's sign is the opposite of the mfcc's: a model reading it would flip the genre
    (v,) = verdicts(w.process([Item("p0", 0, v2_features("a", 0, True, 1.0, mel_sign=-1.0))]))
    assert (v.status, v.genre) == ("ok", "a")


def test_predictions_and_verdicts_carry_every_field_of_their_chunks():
    w = make_worker()
    batch = [Item("p3", 7, features("a", 0, False, produced_at=1000.0)),
             Item("p3", 8, features("a", 1, True, -1.0, produced_at=1000.0)),
             Item("p3", 9, features("b", 0, False))]
    done = w.process(batch)
    assert [(o.topic, o.key) for o in done.outputs] == [("preds", "a"), ("preds", "a"), ("verdicts", "a"), ("preds", "b")]
    p0, p1, pb = predictions(done)
    assert p0 == Prediction(song_id="a", filename="a.wav", index=0, last=False, probabilities=[0.8999999761581421,
                            0.10000002384185791], genres=["a", "b"], model_version="v1", error="", produced_at=1000.0)
    assert (p1.index, p1.last, p1.probabilities) == (1, True, [0.20000000298023224, 0.800000011920929])
    assert (pb.song_id, pb.filename, pb.index, pb.last, pb.produced_at) == ("b", "b.wav", 0, False, 0.0)
    (v,) = verdicts(done)
    assert (v.song_id, v.filename, v.status, v.chunk_count, v.model_version, v.produced_at, v.error) == (
        "a", "a.wav", "ok", 2, "v1", 1000.0, "")
    assert v.genre in ("a", "b") and set(v.probabilities) == {"a", "b"}
    assert (done.offsets, done.generation, done.inflight_songs, done.chunks, done.marker) == ({"p3": 9}, 0, 1, 3, None)
    assert w.results.get_nowait() is done and w.results.empty()
    w.on_marker(Marker("revoke", frozenset({"p0"})))
    assert w.process(items([("c", 0, True)], "p3", start=10)).generation == 1


def test_predict_metrics_and_queue_wait_on_the_injected_clock():
    metrics = ServiceMetrics("classifier")
    w = InferenceWorker(WorkQueue(64), FakeHolder(FakeModel("v1")), SETTINGS, metrics, clock=lambda: 100.0)
    batch = [Item("p0", 0, features("a", 0, True), arrived=99.75),
             Item("p0", 1, features("b", 0, True), arrived=100.5),  # "arrived" after the batch started: 0
             Item("p0", 2, None, arrived=99.5)]
    w.process(batch)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"service": "classifier", **labels})

    assert sample("genre_classifier_queue_wait_seconds_count") == 3.0
    assert sample("genre_classifier_queue_wait_seconds_sum") == 0.75
    assert (sample("genre_classifier_batch_size_count"), sample("genre_classifier_batch_size_sum")) == (1.0, 2.0)
    assert sample("genre_processing_seconds_count", stage="predict") == 1.0
    assert 0.0 <= sample("genre_processing_seconds_sum", stage="predict") < 5.0
    assert sample("genre_verdicts_total", genre="a", status="ok") == 2.0
    assert sample("genre_end_to_end_seconds_count") is None  # no produced_at: not observed


class ShortModel(FakeModel):
    """Returns one row fewer than it was given."""

    def predict_arrays(self, inputs):  # noqa: ANN001
        return super().predict_arrays(inputs)[1:]


def test_a_predict_that_returns_the_wrong_number_of_rows_fails_its_group():
    w = make_worker(ShortModel("v1"))
    done = w.process(items([("a", 0, True), ("b", 0, True)]))
    assert [p.error for p in predictions(done)] == ["prediction failed: predict returned 1 rows for 2 chunks"] * 2
    assert all(p.probabilities == [] for p in predictions(done))


def test_a_batch_finished_without_its_predict_gives_errors_not_empty_predictions():
    w = make_worker()
    done = w.finish(w.prepare(items([("a", 0, True)])))
    (p,) = predictions(done)
    (v,) = verdicts(done)
    assert (p.error, p.probabilities, v.status, v.error) == ("prediction missing", [], "error", "prediction missing")


class FlippedModel(FakeModel):
    """The opposite of FakeModel: p(a) = 0.2 when the chunk's mfcc is positive."""

    def predict_arrays(self, inputs):  # noqa: ANN001
        return super().predict_arrays(inputs)[:, ::-1]


def test_an_open_song_keeps_its_own_model_object_across_a_swap_until_it_ends():
    w = make_worker()
    w.process(items([("old", 0, False)]))
    w.holder.swap(FlippedModel("v2"))
    done = w.process(items([("new", 0, False)], start=1))  # old is open on v1, in no batch: v1 stays loaded
    assert "v1" in w.holder.models and w.holder.released == []
    done = w.process(items([("new", 1, True), ("old", 1, True)], start=2))
    vs = {v.song_id: (v.model_version, v.genre) for v in verdicts(done)}
    assert vs == {"old": ("v1", "a"), "new": ("v2", "b")}
    assert w.holder.released == ["v1"]


def test_a_batch_prepared_behind_another_takes_a_pinned_model_from_it_even_if_the_holder_let_it_go():
    w = make_worker()
    first = w.prepare(items([("a", 0, False)]))
    w.holder.swap(FlippedModel("v2"))
    w.holder.retain(set())  # the holder no longer has v1; the unfinished batch still holds it
    assert w.holder.get("v1") is None
    second = w.prepare(items([("a", 1, True)], start=1), previous=first)
    assert second.versions == {0: "v1"} and second.models["v1"] is first.models["v1"]
    for b in (first, second):
        w.predict(b)
    w.finish(first)
    (v,) = verdicts(w.finish(second))
    assert (v.song_id, v.model_version, v.genre, v.chunk_count) == ("a", "v1", "a", 2)


class BadInputModel(FakeModel):
    """Its inputs cannot be built once `broken` (as a network whose input arrays do not stack)."""

    broken = False

    def input_arrays(self, feats):  # noqa: ANN001
        if self.broken:
            raise ValueError("cannot stack")
        return super().input_arrays(feats)


def test_inputs_that_cannot_be_built_fail_their_model_group_only(caplog):
    v1 = BadInputModel("v1")
    w = make_worker(v1)
    w.process(items([("old", 0, False)]))
    v1.broken = True
    v2 = FakeModel("v2")
    w.holder.swap(v2)
    with caplog.at_level(logging.ERROR, logger="services.classifier"):
        done = w.process(items([("old", 1, True), ("new", 0, True)], start=1))
    assert [(p.song_id, p.model_version, p.error) for p in predictions(done)] == [
        ("old", "v1", "prediction failed: cannot stack"), ("new", "v2", "")]
    assert [(v.song_id, v.status) for v in verdicts(done)] == [("old", "error"), ("new", "ok")]
    assert (v1.calls, v2.calls) == ([1], [1])  # v1's group never reached predict
    (rec,) = [r for r in caplog.records if r.name == "services.classifier"]
    assert rec.getMessage() == "predict failed on a batch of 1: cannot stack"


def test_a_chunk_repeated_in_the_batch_that_decided_its_song_gets_its_prediction_but_no_second_verdict():
    w = make_worker()
    done = w.process(items([("a", 0, False), ("a", 1, True), ("a", 1, True)]))
    assert [p.index for p in predictions(done)] == [0, 1, 1]
    assert [v.song_id for v in verdicts(done)] == ["a"]
    assert done.offsets == {"p0": 3} and len(w.tracker) == 0
