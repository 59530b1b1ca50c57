"""A client we did not write submits songs as raw audio: kcat -> genre.audio -> the real
chunker (a separate process) -> chunks, dead letters and error chunks on the real broker.

The records are produced by kcat (librdkafka) exactly as the README shows; the verdicts
of such songs through the whole pipeline are in tests/e2e/test_pipeline.py."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from shared import kafka_io
from shared.audio_ingest import audio_topic_max_bytes
from shared.content_id import song_id_for_file
from shared.schemas import Chunk, DeadLetter, decode
from shared.settings import Settings
from tests.fixtures.audio import make_song, write_audio
from tests.fixtures.kcat import kcat_produce
from tests.fixtures.services import ServiceProcess, settings_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def chunker(kafka_settings: Settings, tmp_path: Path) -> Iterator[ServiceProcess]:
    env = dict(os.environ)
    env.update(settings_env(kafka_settings))
    env.update({"GENRE_BLOB_DIR": str(tmp_path / "blobs"), "GENRE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    svc = ServiceProcess("chunker", env, tmp_path).start()
    try:
        yield svc
    finally:
        status = svc.terminate(timeout=20)
        assert status == 0, f"the chunker exited {status}:\n{svc.log_tail()}"


def read_until(settings: Settings, topic: str, done: Callable[[list], bool], service: ServiceProcess,
               timeout: float = 120) -> list:
    """Every record of `topic` once `done(records)` holds."""
    reader = kafka_io.make_reader(settings, topic)
    seen: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=500).values():
                seen.extend(records)
            if done(seen):
                return seen
            assert service.alive(), f"the chunker died:\n{service.log_tail()}"
    finally:
        reader.close()
    raise AssertionError(f"{len(seen)} records on {topic} after {timeout:g} s\n{service.log_tail()}")


def test_kcat_submits_an_mp3_and_its_chunks_carry_the_content_hash_as_song_id(kafka_settings, chunker, tmp_path):
    s = kafka_settings
    # 75 s at 320 kbit/s: ~3 MB, over the 1 MiB every Kafka client and topic allow by default
    mp3 = write_audio(tmp_path / "in" / "song.mp3", make_song("clicks", 75, 11), codec_args=("-b:a", "320k"))
    assert 1024 * 1024 < mp3.stat().st_size < s.audio_record_max_bytes
    res = kcat_produce(s, mp3, headers=("filename=song.mp3",))
    assert res.returncode == 0, res.stderr
    # a second client names its song, and sends the file with a path in its name
    res = kcat_produce(s, mp3, key="client-2", headers=("filename=/music/Album/again.mp3", "song-id=my-song-1"))
    assert res.returncode == 0, res.stderr

    def both_complete(recs: list) -> bool:
        lasts = {decode(r.value, Chunk).song_id for r in recs if decode(r.value, Chunk).last}
        return {song_id_for_file(mp3), "my-song-1"} <= lasts

    chunks = [(r.key.decode(), decode(r.value, Chunk)) for r in read_until(s, s.topic_chunks, both_complete, chunker)]
    by_song: dict[str, list[Chunk]] = {}
    for key, c in chunks:
        assert key == c.song_id
        by_song.setdefault(c.song_id, []).append(c)
    assert set(by_song) == {song_id_for_file(mp3), "my-song-1"}
    first, named = by_song[song_id_for_file(mp3)], by_song["my-song-1"]
    assert [c.index for c in first] == [0, 1, 2] and first[-1].last  # 30 + 30 + 15 s (padded)
    assert [c.error for c in first] == ["", "", ""]
    assert [c.n_samples for c in first[:2]] == [30 * 22050] * 2 and 14 * 22050 < first[2].n_samples < 16 * 22050
    assert {c.filename for c in first} == {"song.mp3"} and {c.filename for c in named} == {"again.mp3"}
    assert [c.pcm.tobytes() for c in named] == [c.pcm.tobytes() for c in first]
    blobs = list((tmp_path / "blobs").rglob("*"))
    assert [p.name for p in blobs if p.is_file()] == [hashlib.sha256(mp3.read_bytes()).hexdigest()]
    log = chunker.log_path.read_text()
    assert f"song {song_id_for_file(mp3)} ('song.mp3', {mp3.stat().st_size} bytes of raw audio) from client 'client-1'" in log


def test_bad_records_from_kcat_are_dead_letters_or_error_chunks_and_the_chunker_goes_on(
        kafka_settings, chunker, tmp_path):
    s = kafka_settings
    text = tmp_path / "notes.mp3"
    text.write_bytes(b"these are my notes, not audio\n" * 200)
    oversized = tmp_path / "big.bin"
    oversized.write_bytes(b"\x00" * (s.audio_record_max_bytes + 1))
    too_big_for_the_topic = tmp_path / "huge.bin"
    too_big_for_the_topic.write_bytes(b"\x00" * (audio_topic_max_bytes(s) + 1))
    good = write_audio(tmp_path / "good.flac", make_song("drone", 31, 5))

    assert kcat_produce(s, text, key="no-name").returncode == 0  # no filename header
    assert kcat_produce(s, oversized, key="big", headers=("filename=big.mp3",)).returncode == 0
    refused = kcat_produce(s, too_big_for_the_topic, key="huge", headers=("filename=huge.mp3",))
    # the broker refuses it to kcat: "% Delivery failed for message: Broker: Message size too large", exit 1
    assert refused.returncode == 1 and "message size too large" in refused.stderr.lower(), refused.stderr
    # kcat sends nothing for an empty file: an empty value and a tombstone come from kafka-python
    producer = kafka_io.make_producer(s)
    try:
        kafka_io.send_and_wait(producer, s.topic_audio, "empty", b"", {"filename": "empty.mp3"})
        kafka_io.send_and_wait(producer, s.topic_audio, "tombstone", None, {"filename": "none.mp3"})  # type: ignore[arg-type]
    finally:
        producer.close()
    assert kcat_produce(s, text, key="notes", headers=("filename=notes.mp3",)).returncode == 0
    assert kcat_produce(s, good, key="good", headers=("filename=good.flac",)).returncode == 0

    dls = read_until(s, s.topic_deadletter, lambda recs: len(recs) >= 4, chunker)
    letters = {d.key: d for d in (decode(r.value, DeadLetter) for r in dls)}
    assert set(letters) == {"no-name", "big", "empty", "tombstone"}
    assert letters["empty"].reason == "no audio: the record's value is empty"
    assert letters["tombstone"].reason == "no audio: the record has no value (tombstone)"
    assert letters["no-name"].reason == "missing header 'filename' (the file's name, UTF-8)"
    assert letters["no-name"].topic == s.topic_audio and letters["no-name"].service == "chunker"
    assert letters["no-name"].payload_head == text.read_bytes()[:256]
    assert letters["big"].reason == (f"audio of {s.audio_record_max_bytes + 1} bytes exceeds the limit of "
                                     f"{s.audio_record_max_bytes} bytes (GENRE_AUDIO_MAX_BYTES); send larger "
                                     f"files with `genre produce`")

    wanted = {song_id_for_file(text), song_id_for_file(good)}
    recs = read_until(s, s.topic_chunks,
                      lambda rs: wanted <= {decode(r.value, Chunk).song_id for r in rs if decode(r.value, Chunk).last},
                      chunker)
    chunks = [decode(r.value, Chunk) for r in recs]
    [err] = [c for c in chunks if c.song_id == song_id_for_file(text)]
    assert (err.filename, err.index, err.last, err.n_samples) == ("notes.mp3", 0, True, 0)
    assert err.error.startswith("not a readable audio file"), err.error
    assert [(c.index, c.last, c.error) for c in chunks if c.song_id == song_id_for_file(good)] == [(0, True, "")]
    assert {c.song_id for c in chunks} == wanted  # nothing of the refused records
