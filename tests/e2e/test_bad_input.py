"""Hostile and broken input through the real broker and the three services (no mocks).

Every file of the generated corpus (tests/fixtures/bad_input.py) gets exactly one verdict
with a clear answer, every undecodable record on each consumed topic becomes a dead
letter with its reason, the services never restart, and a normal song sent after all of
it still gets its right verdict. The chunker's peak RSS (VmHWM) is measured before and
after the 3-hour file to show decoding memory does not grow with the song's length.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared import kafka_io
from shared.features import extract_features
from shared.featurespec import DEFAULT_SPEC
from shared.schemas import DeadLetter, Features, Verdict, decode
from shared.settings import REPO_ROOT
from tests.fixtures.audio import SR, make_song, write_audio
from tests.fixtures.bad_input import WEIRD_NAME, bad_messages, wrong_shape_features
from tests.e2e.test_faults import scrape

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RSS_LIMIT_MB = 400
"""The chunker's whole-life peak must stay below this (baseline ~100 MB; a 3-hour song
buffered in memory would be ~1 GB of float32 chunks)."""


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a live process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def send_raw(settings, records) -> None:  # noqa: ANN001
    producer = kafka_io.make_producer(settings)
    try:
        futures = [kafka_io.send(producer, topic, key, value) for topic, key, value in records]
        kafka_io.flush_or_raise(producer, futures)
    finally:
        producer.close()


def read_dead_letters(settings, want_keys: set[str], timeout: float = 90) -> dict[str, DeadLetter]:  # noqa: ANN001
    reader = kafka_io.make_reader(settings, settings.topic_deadletter)
    found: dict[str, DeadLetter] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not want_keys <= set(found):
            for records in reader.poll(timeout_ms=500).values():
                for rec in records:
                    dl = decode(rec.value, DeadLetter)
                    found[dl.key] = dl
    finally:
        reader.close()
    return found


def embedded(pipeline, paths: list[Path]) -> dict[str, dict]:  # noqa: ANN001
    """`genre classify --json` on the same files: {file name: verdict}."""
    res = subprocess.run([sys.executable, "-m", "shared.cli", "classify", "--json", "--model",
                          pipeline.env["GENRE_MODEL_PATH"], *map(str, paths)],
                         cwd=REPO_ROOT, env=pipeline.env, capture_output=True, text=True, timeout=300)
    return {json.loads(line)["filename"]: json.loads(line) for line in res.stdout.splitlines() if line.strip()}


def test_bad_files_and_bad_records_get_answers_and_the_services_keep_going(
        pipeline, bad_input_corpus, tmp_path, record_property):  # noqa: ANN001
    corpus = bad_input_corpus
    pipeline.start()
    chunker = pipeline.services["chunker"]

    # 1. every bad or borderline file except the long one, and bad records on every topic
    small = {n: bf for n, bf in corpus.items() if n != "three_hours"}
    ids = pipeline.produce(*(bf.path for bf in small.values()))
    msgs = bad_messages(pipeline.settings, tag=f"bad{int(time.time())}")
    send_raw(pipeline.settings, [(m.topic, m.key, m.value) for m in msgs])
    pipeline.verdicts(len(ids), timeout=300)
    rss_before = vm_hwm_mb(chunker.proc.pid)

    # 2. the 3-hour file, then a normal song after everything
    long_ids = pipeline.produce(corpus["three_hours"].path)
    normal = write_audio(tmp_path / "normal after.flac", make_song("clicks", 35, seed=77))
    normal_ids = pipeline.produce(normal)
    ids.update(long_ids)
    ids.update(normal_ids)
    t0 = time.monotonic()
    records = pipeline.verdicts(len(ids), timeout=480)
    rss_after = vm_hwm_mb(chunker.proc.pid)
    long_s = time.monotonic() - t0
    record_property("chunker_vmhwm_mb_before_3h", round(rss_before, 1))
    record_property("chunker_vmhwm_mb_after_3h", round(rss_after, 1))
    print(f"\nchunker VmHWM: {rss_before:.0f} MB before the 3-hour file, {rss_after:.0f} MB after "
          f"(3-hour file + normal song done in {long_s:.0f} s)")

    # exactly one distinct verdict per song, and nothing for unknown songs
    by_song: dict[str, set] = {}
    latest: dict[str, dict] = {}
    for r in records:
        by_song.setdefault(r["song_id"], set()).add(r["_identity"])
        latest[r["song_id"]] = r
    assert set(by_song) == set(ids.values())
    assert all(len(v) == 1 for v in by_song.values()), {k: v for k, v in by_song.items() if len(v) > 1}

    for name, bf in corpus.items():
        v = latest[ids[str(bf.path)]]
        assert v["filename"] == str(bf.path), (name, v["filename"])
        if bf.expect == "error":
            assert v["status"] == "error", (name, v)
            assert re.search(bf.reason, v["error"]), (name, v["error"])
            assert pipeline.env["GENRE_BLOB_DIR"] not in v["error"], f"{name}: the reason leaks a storage path"
        else:
            assert v["status"] == "ok", (name, v)
            probs = v["probabilities"]
            assert set(probs) == {"clicks", "drone"} and all(math.isfinite(p) for p in probs.values()), (name, v)
            assert abs(sum(probs.values()) - 1) < 1e-3, (name, probs)
            if bf.genre:
                assert v["genre"] == bf.genre, (name, v)
    assert latest[ids[str(corpus["three_hours"].path)]]["chunk_count"] == 361
    assert latest[ids[str(corpus["weird_name"].path)]]["filename"].endswith(WEIRD_NAME)
    after = latest[normal_ids[str(normal)]]
    assert after["status"] == "ok" and after["genre"] == "clicks", after

    # silence (and every other small file) gets what the embedded default gives
    emb = embedded(pipeline, [bf.path for bf in small.values()])
    for name, bf in small.items():
        e, k = emb[bf.path.name], latest[ids[str(bf.path)]]
        assert e["status"] == k["status"], (name, e, k)
        if k["status"] == "ok":
            assert (e["genre"], e["votes"]) == (k["genre"], k["votes"]), name
            for g, p in k["probabilities"].items():
                assert abs(e["probabilities"][g] - p) < 1e-4, (name, g)

    # every bad record is a dead letter, from the service that consumes its topic, with the reason
    letters = read_dead_letters(pipeline.settings, {m.key for m in msgs})
    for m in msgs:
        assert m.key in letters, f"no dead letter for {m.name}"
        dl = letters[m.key]
        assert (dl.service, dl.topic) == (m.service, m.topic), m.name
        assert re.search(m.reason, dl.reason), (m.name, dl.reason)
        assert dl.payload_head == m.value[:len(dl.payload_head)] and dl.offset >= 0

    # nobody crashed or restarted, and memory stayed bounded through the 3-hour song
    for name, svc in pipeline.services.items():
        assert svc.alive() and svc.starts == 1, f"{name} died:\n{svc.log_tail()}"
    assert rss_after < RSS_LIMIT_MB, f"chunker peak RSS {rss_after:.0f} MB"
    assert rss_after - rss_before < 150, f"the 3-hour file grew the chunker from {rss_before:.0f} to {rss_after:.0f} MB"


def _features_of(song_id: str, genre: str, seconds: float, seed: int) -> list[Features]:
    pcm = make_song(genre, seconds, seed=seed)
    size = DEFAULT_SPEC.chunk_samples
    n = len(pcm) // size
    return [Features(song_id=song_id, filename=f"{song_id}.flac", index=i, last=i == n - 1, spec_id=DEFAULT_SPEC.id,
                     arrays=extract_features(pcm[i * size:(i + 1) * size], SR).arrays()) for i in range(n)]


def test_features_of_the_wrong_shape_do_not_poison_a_batch(pipeline):  # noqa: ANN001
    good = _features_of("good-song", "clicks", 90, seed=5)
    bad_width = wrong_shape_features("bad-width", (646, 7))
    bad_frames = wrong_shape_features("bad-frames", (10, 20))
    # all on the topic before the classifier starts, so its first poll batches them together;
    # a batch of exactly the five, taken only when all five wait (or the oldest waited 120 s)
    send_raw(pipeline.settings, [(pipeline.settings.topic_features, f.song_id, f.encode())
                                 for f in (good[0], bad_width, good[1], bad_frames, good[2])])
    ports = pipeline.expose_metrics()
    classifier = pipeline.services["classifier"]
    classifier.env = {**classifier.env, "GENRE_BATCH_MAX_SIZE": "5", "GENRE_BATCH_MAX_WAIT_MS": "120000",
                      "GENRE_BATCH_PREFERRED_SIZES": ""}
    pipeline.start("classifier")
    s = pipeline.settings
    verdicts: dict[str, dict] = {}
    letters: set[str] = set()
    deadline = time.monotonic() + 180
    readers = kafka_io.make_reader(s, s.topic_verdicts), kafka_io.make_reader(s, s.topic_deadletter)
    try:
        while time.monotonic() < deadline and not (
                {"good-song", "bad-width", "bad-frames"} <= set(verdicts) or letters):
            for records in readers[0].poll(timeout_ms=300).values():
                for rec in records:
                    v = decode(rec.value, Verdict)
                    verdicts[v.song_id] = v.to_dict()
            for records in readers[1].poll(timeout_ms=300).values():
                letters.update(decode(rec.value, DeadLetter).key for rec in records)
    finally:
        for r in readers:
            r.close()
    assert verdicts.get("good-song", {}).get("status") == "ok", verdicts.get("good-song")
    assert verdicts["good-song"]["genre"] == "clicks", verdicts["good-song"]
    # README: an error verdict naming the shape, not a dead letter
    assert not letters, f"dead letters where README promises error verdicts: {sorted(letters)}"
    for sid, shape in (("bad-width", "(646, 7)"), ("bad-frames", "(10, 20)")):
        assert sid in verdicts, f"{sid}: no verdict"
        v = verdicts[sid]
        assert v["status"] == "error" and "shape" in v["error"] and shape in v["error"], v
    # ... and the five records shared one batch: a batch is taken when 5 items wait or when
    # the oldest has waited 120 s; every wait was shorter, so the only batch held all five,
    # and its one predict call held the three good chunks.
    label = '{service="classifier"}'

    def count_and_sum(metric: str) -> tuple[float, float]:
        return (scrape(ports["classifier"], f"{metric}_count").get(label, 0.0),
                scrape(ports["classifier"], f"{metric}_sum").get(label, 0.0))

    waits, wait_seconds = count_and_sum("genre_classifier_queue_wait_seconds")
    assert waits == 5 and wait_seconds < 120, (waits, wait_seconds)
    assert count_and_sum("genre_classifier_batch_size") == (1, 3)
