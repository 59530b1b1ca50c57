"""The classifier service as real processes against the real broker, fed feature messages
produced straight to the features topic (no chunker/extractor needed).

- two replicas in one group, one SIGKILLed mid-run: every song exactly one distinct
  verdict, identical to a clean in-process computation with the same model;
- songs whose chunks arrive interleaved in one partition (with a kill + restart while
  songs are open): the watermark re-reads them from chunk 0;
- a model swap mid-stream (atomic symlink swap): songs started before it finish on the
  old version, later songs name the new one, and the service never stops.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.models import copy_model_as_version, swap_symlink

from services.classifier.models import ModelHolder  # noqa: F401 - import check: the service module loads
from shared import kafka_io
from shared.featurespec import DEFAULT_SPEC, ChunkFeatures
from shared.model import ModelArtifact
from shared.schemas import Features, Prediction, Verdict, decode, now
from shared.settings import Settings
from shared.thread_priority import COMPUTE_THREADS
from shared.verdicts import ok_verdict
from tests.fixtures.audio import SR, make_song
from tests.fixtures.services import Pipeline, ServiceProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CHUNKS_PER_GENRE = 3


@pytest.fixture(scope="module")
def chunk_bank() -> dict[str, list[ChunkFeatures]]:
    """Real extracted features of a few 30-s chunks of each synthetic genre."""
    from shared.features import extract_features

    size = DEFAULT_SPEC.chunk_samples
    bank: dict[str, list[ChunkFeatures]] = {}
    for g, genre in enumerate(("clicks", "drone")):
        pcm = make_song(genre, 30.0 * CHUNKS_PER_GENRE, seed=500 + g)
        bank[genre] = [extract_features(pcm[k * size:(k + 1) * size], SR) for k in range(CHUNKS_PER_GENRE)]
    return bank


class Song:
    def __init__(self, song_id: str, chunks: list[ChunkFeatures], genre: str) -> None:
        self.song_id, self.chunks, self.genre = song_id, chunks, genre

    def message(self, index: int) -> Features:
        c = self.chunks[index]
        return Features(song_id=self.song_id, filename=f"{self.song_id}.flac", index=index,
                        last=index == len(self.chunks) - 1, spec_id=DEFAULT_SPEC.id,
                        arrays={"mfcc": c.mfcc, "peaks": c.peaks, "valleys": c.valleys}, produced_at=now())


def make_songs(bank: dict[str, list[ChunkFeatures]], n: int, prefix: str, min_chunks: int = 2,
               max_chunks: int = 6) -> list[Song]:
    songs = []
    for k in range(n):
        genre = ("clicks", "drone")[k % 2]
        count = min_chunks + k % (max_chunks - min_chunks + 1)
        chunks = [bank[genre][(k + i) % CHUNKS_PER_GENRE] for i in range(count)]
        songs.append(Song(f"{prefix}-{k:03d}", chunks, genre))
    return songs


def interleave(songs: list[Song]) -> list[tuple[Song, int]]:
    """Chunk i of every song before chunk i+1 of any: maximal interleaving."""
    return [(s, i) for i in range(max(len(s.chunks) for s in songs)) for s in songs if i < len(s.chunks)]


def reference(model_path: str, songs: list[Song]) -> dict[str, tuple]:
    """The clean run, in-process: the same model and the same vote, one song at a time."""
    art = ModelArtifact.load(model_path)
    return {s.song_id: ok_verdict(s.song_id, f"{s.song_id}.flac", art.predict(s.chunks), art.genres,
                                  art.version).identity() for s in songs}


class Feeder:
    def __init__(self, settings) -> None:  # noqa: ANN001
        self.settings = settings
        self.producer = kafka_io.make_producer(settings)

    def send(self, order: list[tuple[Song, int]], partition: int | None = None, delay: float = 0.0) -> None:
        for song, i in order:
            self.producer.send(self.settings.topic_features, key=song.song_id.encode(),
                               value=song.message(i).encode(), partition=partition)
            if delay:
                self.producer.flush()
                time.sleep(delay)
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


def read_topic(settings, topic: str, cls, until=None, timeout: float = 180.0) -> list:  # noqa: ANN001
    """Every record of `topic` (decoded) once `until(records)` holds and the reader is at the end."""
    consumer = kafka_io.make_reader(settings, topic)
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                out.extend(decode(r.value, cls) for r in records)
            if (until is None or until(out)) and kafka_io.at_end(consumer):
                return out
    finally:
        consumer.close()
    raise AssertionError(f"timed out reading {topic}: {len(out)} records")


def verdicts_by_song(settings, n: int, pipeline: Pipeline, timeout: float = 180.0) -> dict[str, list[Verdict]]:  # noqa: ANN001
    try:
        vs = read_topic(settings, settings.topic_verdicts, Verdict, lambda got: len({v.song_id for v in got}) >= n,
                        timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{pipeline.logs()}") from None
    grouped: dict[str, list[Verdict]] = defaultdict(list)
    for v in vs:
        grouped[v.song_id].append(v)
    return grouped


def wait_log(svc: ServiceProcess, text: str, timeout: float = 120.0, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.log_path.exists() and svc.log_path.read_text(errors="replace").count(text) >= count:
            return
        assert svc.alive(), f"{svc.name} exited:\n{svc.log_tail()}"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {svc.log_path}:\n{svc.log_tail()}")


def classifier_pipeline(settings, model_path: str, workdir: Path, replicas: int = 1, **env: str) -> Pipeline:  # noqa: ANN001
    p = Pipeline(settings, model_path, workdir)
    p.env.update(env)
    p.services = {}
    for r in range(replicas):
        d = workdir / f"classifier-{r}"
        d.mkdir(parents=True, exist_ok=True)
        p.services[f"classifier-{r}"] = ServiceProcess("classifier", p.env, d)
    return p


def test_two_replicas_one_killed_mid_run(kafka_settings, synthetic_model, chunk_bank, tmp_path):
    settings = replace(kafka_settings, session_timeout_ms=6000)
    songs = make_songs(chunk_bank, 36, "kill", min_chunks=2, max_chunks=6)
    expected = reference(str(synthetic_model), songs)
    p = classifier_pipeline(settings, str(synthetic_model), tmp_path, replicas=2,
                            GENRE_BATCH_MAX_SIZE="8", GENRE_BATCH_MAX_WAIT_MS="30")
    feeder = Feeder(settings)
    try:
        a, b = p.services["classifier-0"], p.services["classifier-1"]
        a.start()
        wait_log(a, "assigned 3 partitions")
        b.start()
        wait_log(b, "assigned", count=1)  # the group rebalanced: each replica owns part of the topic
        wait_log(a, "assigned", count=2)
        order = interleave(songs)
        half = len(order) // 2
        feeder.send(order[:half], delay=0.02)  # songs are open on both replicas now
        victim_log = a.log_path.read_text()
        assert "revoked" in victim_log  # a drained and committed its partitions on the rebalance
        a.kill()
        feeder.send(order[half:], delay=0.01)
        grouped = verdicts_by_song(settings, len(songs), p)
        assert "assigned 3 partitions" in b.log_path.read_text()  # the survivor took over a's partitions
    finally:
        feeder.close()
        p.stop()
    assert set(grouped) == set(expected)
    for song_id, vs in grouped.items():
        identities = {v.identity() for v in vs}
        assert len(identities) == 1, f"{song_id} got {len(identities)} different verdicts: {vs}"
        assert identities == {expected[song_id]}, (song_id, vs[0])
        assert vs[0].status == "ok"
    genres = {s.song_id: s.genre for s in songs}
    assert all(vs[0].genre == genres[sid] for sid, vs in grouped.items())
    assert a.starts == 1 and not a.alive()


def test_interleaved_chunks_in_one_partition_with_a_restart(kafka_settings, synthetic_model, chunk_bank, tmp_path):
    songs = make_songs(chunk_bank, 10, "mix", min_chunks=1, max_chunks=5)
    # one long song whose chunks are spread across everything else
    long_song = Song("mix-long", [chunk_bank["drone"][i % CHUNKS_PER_GENRE] for i in range(7)], "drone")
    order = interleave(songs)
    spread = [(long_song, i) for i in range(len(long_song.chunks))]
    step = len(order) // len(spread)
    merged: list[tuple[Song, int]] = []
    for k, pair in enumerate(spread):  # chunk 0 after some songs: the watermark must stop there
        merged.extend(order[k * step:(k + 1) * step])
        merged.append(pair)
    merged.extend(order[len(spread) * step:])
    all_songs = songs + [long_song]
    expected = reference(str(synthetic_model), all_songs)
    p = classifier_pipeline(kafka_settings, str(synthetic_model), tmp_path,
                            GENRE_BATCH_MAX_SIZE="4", GENRE_BATCH_MAX_WAIT_MS="20")
    feeder = Feeder(kafka_settings)
    try:
        svc = p.services["classifier-0"]
        svc.start()
        wait_log(svc, "assigned 3 partitions")
        cut = len(merged) // 2
        feeder.send(merged[:cut], partition=0)
        done_first = {s.song_id for s in all_songs if all((s, i) in merged[:cut] for i in range(len(s.chunks)))}
        read_topic(kafka_settings, kafka_settings.topic_verdicts, Verdict,
                   lambda got: {v.song_id for v in got} >= done_first, timeout=120)
        time.sleep(1.0)  # let a commit happen: it must hold at the first record of the oldest open song
        svc.kill()
        first_open = min(k for k, (song, i) in enumerate(merged[:cut]) if i == 0 and song.song_id not in done_first)
        assert committed_offset(kafka_settings, 0) == first_open
        feeder.send(merged[cut:], partition=0)
        svc.start()
        grouped = verdicts_by_song(kafka_settings, len(all_songs), p)
    finally:
        feeder.close()
        p.stop()
    assert set(grouped) == set(expected)
    for song_id, vs in grouped.items():
        assert {v.identity() for v in vs} == {expected[song_id]}, (song_id, vs)
    assert grouped["mix-long"][0].chunk_count == 7 and grouped["mix-long"][0].votes == ["drone"] * 7


def committed_offset(settings, partition: int) -> int | None:  # noqa: ANN001
    from kafka import TopicPartition

    c = kafka_io.make_consumer(settings, settings.group_classifier, [])
    try:
        return c.committed(TopicPartition(settings.topic_features, partition))
    finally:
        c.close()






def thread_nices(pid: int) -> dict[str, set[int]]:
    """Nice values of a process's threads: TensorFlow's and CUDA's (spared) and the others."""
    out: dict[str, set[int]] = {"spared": set(), "other": set()}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text()
            nice = int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
        except (OSError, IndexError, ValueError):
            continue
        out["spared" if name.startswith(COMPUTE_THREADS) else "other"].add(nice)
    return out


def test_model_swap_mid_stream(kafka_settings, synthetic_model, chunk_bank, tmp_path):
    v1 = ModelArtifact.load(synthetic_model).version
    m1 = copy_model_as_version(Path(synthetic_model), tmp_path / "m1", v1)
    m2 = copy_model_as_version(Path(synthetic_model), tmp_path / "m2", "synthetic-rollout-2")
    link = tmp_path / "current"
    os.symlink(m1, link)
    p = classifier_pipeline(kafka_settings, str(link), tmp_path, GENRE_MODEL_CHECK_INTERVAL_S="0.5")
    before = make_songs(chunk_bank, 6, "before", min_chunks=1, max_chunks=3)
    spanning = Song("span", [chunk_bank["clicks"][0], chunk_bank["clicks"][1]], "clicks")
    after = make_songs(chunk_bank, 6, "after", min_chunks=1, max_chunks=3)
    feeder = Feeder(kafka_settings)
    try:
        svc = p.services["classifier-0"]
        svc.start()
        wait_log(svc, "assigned 3 partitions")
        feeder.send([(s, i) for s in before for i in range(len(s.chunks))] + [(spanning, 0)])
        want = {s.song_id for s in before} | {"span"}
        read_topic(kafka_settings, kafka_settings.topic_predictions, Prediction,
                   lambda got: {x.song_id for x in got} >= want, timeout=120)
        read_topic(kafka_settings, kafka_settings.topic_verdicts, Verdict,
                   lambda got: {v.song_id for v in got} >= want - {"span"}, timeout=120)
        swap_symlink(link, m2)
        wait_log(svc, "model changed:")
        feeder.send([(spanning, 1)] + [(s, i) for s in after for i in range(len(s.chunks))])
        grouped = verdicts_by_song(kafka_settings, len(before) + len(after) + 1, p)
        preds = read_topic(kafka_settings, kafka_settings.topic_predictions, Prediction)
        assert svc.alive() and svc.starts == 1  # no restart, no downtime
        nices = thread_nices(svc.proc.pid)
    finally:
        feeder.close()
        p.stop()
    # TensorFlow's compute threads keep their priority through a session and a model
    # reload; every other thread (Kafka clients, poll loop, worker, loader) yields to them.
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert nices["spared"] == {base}
    assert nices["other"] == {min(19, base + Settings().classifier_io_nice)}
    for s in before:
        assert [v.model_version for v in grouped[s.song_id]] == [v1]
    for s in after:
        (v,) = grouped[s.song_id]
        assert v.model_version == "synthetic-rollout-2" and v.genre == s.genre
    # the song open across the swap finished on the version that started it
    assert [v.model_version for v in grouped["span"]] == [v1]
    assert {x.model_version for x in preds if x.song_id == "span"} == {v1}
    assert all(np.isclose(sum(x.probabilities), 1.0, atol=1e-4) for x in preds)
