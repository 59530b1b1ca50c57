"""Raw-audio records (shared/audio_ingest.py): what a client we did not write may send on
the audio topic, and the reason a record is refused with (its dead letter's)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from shared.audio_ingest import (
    MAX_FILENAME_BYTES,
    AudioRecordError,
    AudioSubmission,
    audio_from_record,
    audio_topic_max_bytes,
    clean_filename,
    stored_song_ref,
)
from shared.blobstore import BlobStore
from shared.content_id import song_id_for_bytes, song_id_for_digest, song_id_for_file
from shared.kafka_io import RECORD_OVERHEAD_BYTES
from shared.pipeline import song_id_for_file as pipeline_song_id_for_file
from shared.schemas import SchemaError
from shared.settings import Settings

AUDIO = b"ID3\x04" + bytes(range(256)) * 4
LIMIT = 64


@dataclass
class Rec:
    value: bytes | None
    headers: list = field(default_factory=lambda: [("filename", b"song.mp3")])
    key: bytes | None = b"client-1"
    timestamp: int = 1_700_000_000_123
    topic: str = "genre.audio"
    partition: int = 0
    offset: int = 0


def test_a_record_with_a_filename_becomes_a_submission_keyed_by_the_content_hash():
    sub = audio_from_record(Rec(AUDIO), max_bytes=len(AUDIO))
    assert sub == AudioSubmission(song_id=hashlib.sha256(AUDIO).hexdigest()[:16], filename="song.mp3",
                                  audio=AUDIO, client="client-1", produced_at=1_700_000_000.123)


def test_the_content_hash_is_the_id_genre_classify_gives_the_same_file(tmp_path):
    path = tmp_path / "song.mp3"
    path.write_bytes(AUDIO)
    sub = audio_from_record(Rec(AUDIO), max_bytes=LIMIT * 100)
    assert sub.song_id == song_id_for_file(path) == pipeline_song_id_for_file(path) == song_id_for_bytes(AUDIO)
    assert song_id_for_digest(hashlib.sha256(AUDIO).hexdigest()) == sub.song_id and len(sub.song_id) == 16


def test_an_unreadable_file_still_gets_an_id_from_its_path(tmp_path):
    missing = tmp_path / "missing.mp3"
    assert song_id_for_file(missing) == song_id_for_bytes(str(missing).encode())


def test_a_song_id_header_names_the_song():
    rec = Rec(AUDIO, headers=[("filename", b"a.mp3"), ("song-id", b"my-song_1.2")])
    assert audio_from_record(rec, max_bytes=10_000).song_id == "my-song_1.2"


@pytest.mark.parametrize("bad", [b"", b"../etc", b"a b", b"x" * 129, b"\xff"])
def test_a_song_id_header_that_is_not_an_id_is_refused(bad):
    rec = Rec(AUDIO, headers=[("filename", b"a.mp3"), ("song-id", bad)])
    with pytest.raises(AudioRecordError, match="header 'song-id'"):
        audio_from_record(rec, max_bytes=10_000)


def test_exactly_the_limit_is_taken_and_one_byte_over_is_refused():
    assert audio_from_record(Rec(b"a" * LIMIT), max_bytes=LIMIT).audio == b"a" * LIMIT
    with pytest.raises(AudioRecordError) as err:
        audio_from_record(Rec(b"a" * (LIMIT + 1)), max_bytes=LIMIT)
    assert str(err.value) == (f"audio of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes "
                              f"(GENRE_AUDIO_MAX_BYTES); send larger files with `genre produce`")


def test_an_oversized_record_is_refused_before_its_headers_are_read():
    with pytest.raises(AudioRecordError, match="exceeds the limit"):
        audio_from_record(Rec(b"a" * (LIMIT + 1), headers=[]), max_bytes=LIMIT)


@pytest.mark.parametrize("value, reason", [
    (b"", "no audio: the record's value is empty"),
    (None, "no audio: the record has no value (tombstone)"),
])
def test_an_empty_value_is_refused(value, reason):
    with pytest.raises(AudioRecordError) as err:
        audio_from_record(Rec(value), max_bytes=LIMIT)
    assert str(err.value) == reason


@pytest.mark.parametrize("headers", [None, [], [("song-id", b"abc")], [("Filename", b"a.mp3")]])
def test_a_missing_filename_header_is_refused(headers):
    with pytest.raises(AudioRecordError) as err:
        audio_from_record(Rec(AUDIO, headers=headers), max_bytes=10_000)
    assert str(err.value) == "missing header 'filename' (the file's name, UTF-8)"


@pytest.mark.parametrize("headers, reason", [
    ([("filename", b"caf\xe9.mp3")], "header 'filename' is not UTF-8 (invalid continuation byte at byte 3)"),
    ([("filename", None)], "header 'filename' has no value"),
    ([("filename", b"a.mp3"), ("filename", b"b.mp3")], "header 'filename' appears 2 times"),
    ([("filename", b"a.mp3"), ("song-id", b"x"), ("song-id", b"y")], "header 'song-id' appears 2 times"),
    ([("filename",)], "headers do not decode: ValueError: not enough values to unpack (expected 2, got 1)"),
    ([7], "headers do not decode: TypeError: cannot unpack non-iterable int object"),
    ([("filename", 7)], "header 'filename' is int, not bytes"),
    ("filename=a.mp3", "headers of an unexpected shape (str)"),
    ([("filename", b"/")], "header 'filename' ('/') names no file"),
    ([("filename", b"a/..")], "header 'filename' ('a/..') names no file"),
    ([("filename", ("x" * (MAX_FILENAME_BYTES + 1)).encode())], "header 'filename' is longer than 1024 bytes"),
])
def test_headers_that_do_not_decode_are_refused_with_the_reason(headers, reason):
    with pytest.raises(AudioRecordError) as err:
        audio_from_record(Rec(AUDIO, headers=headers), max_bytes=10_000)
    assert str(err.value) == reason
    assert isinstance(err.value, SchemaError)  # what the stream loop dead-letters


def test_non_ascii_names_and_other_headers_are_fine():
    rec = Rec(AUDIO, headers=[("trace", b"\xff\xfe"), ("filename", "Dröne ü 'q' \"x\".flac".encode())])
    assert audio_from_record(rec, max_bytes=10_000).filename == "Dröne ü 'q' \"x\".flac"
    assert audio_from_record(Rec(AUDIO, headers=[("filename", b"x" * MAX_FILENAME_BYTES)]),
                             max_bytes=10_000).filename == "x" * MAX_FILENAME_BYTES


@pytest.mark.parametrize("raw, name", [
    ("song.mp3", "song.mp3"),
    ("/srv/music/Album/song.mp3", "song.mp3"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\song.flac", "song.flac"),
    ("a/b\\c d.ogg", "c d.ogg"),
    ("..hidden", "..hidden"),
])
def test_path_components_are_stripped_from_the_filename(raw, name):
    assert clean_filename(raw) == name
    rec = Rec(AUDIO, headers=[("filename", raw.encode())])
    assert audio_from_record(rec, max_bytes=10_000).filename == name


def test_the_key_is_optional_and_only_a_label():
    assert audio_from_record(Rec(AUDIO, key=None), max_bytes=10_000).client == ""
    assert audio_from_record(Rec(AUDIO, key=b"\xffbot" + b"x" * 500), max_bytes=10_000).client == "\ufffdbot" + "x" * 196


def test_a_record_without_a_timestamp_is_stamped_when_read(monkeypatch):
    monkeypatch.setattr("shared.audio_ingest.now", lambda: 42.0)
    assert audio_from_record(Rec(AUDIO, timestamp=-1), max_bytes=10_000).produced_at == 42.0


def test_a_key_of_another_type_is_its_text():
    assert audio_from_record(Rec(AUDIO, key="client-7"), max_bytes=10_000).client == "client-7"  # type: ignore[arg-type]
    assert audio_from_record(Rec(AUDIO, key=bytearray(b"ba")), max_bytes=10_000).client == "ba"  # type: ignore[arg-type]


@pytest.mark.parametrize("timestamp, produced_at", [(0, 42.0), (1, 0.001), (2500, 2.5)])
def test_only_a_positive_timestamp_is_the_production_time(monkeypatch, timestamp, produced_at):
    monkeypatch.setattr("shared.audio_ingest.now", lambda: 42.0)
    assert audio_from_record(Rec(AUDIO, timestamp=timestamp), max_bytes=10_000).produced_at == produced_at


class Bare:
    """A record object with only some of ConsumerRecord's attributes."""

    def __init__(self, **attrs: object) -> None:
        self.__dict__.update(attrs)


def test_a_record_object_without_optional_attributes_is_read(monkeypatch):
    monkeypatch.setattr("shared.audio_ingest.now", lambda: 42.0)
    sub = audio_from_record(Bare(value=AUDIO, headers=[("filename", b"a.mp3")]), max_bytes=10_000)
    assert (sub.filename, sub.client, sub.produced_at) == ("a.mp3", "", 42.0)
    with pytest.raises(AudioRecordError, match="missing header 'filename'"):
        audio_from_record(Bare(value=AUDIO), max_bytes=10_000)
    with pytest.raises(AudioRecordError, match="tombstone"):
        audio_from_record(Bare(headers=[("filename", b"a.mp3")]), max_bytes=10_000)


def test_a_bad_song_id_is_quoted_up_to_140_characters():
    bad = "!" * 300
    with pytest.raises(AudioRecordError) as err:
        audio_from_record(Rec(AUDIO, headers=[("filename", b"a.mp3"), ("song-id", bad.encode())]), max_bytes=10_000)
    assert repr("!" * 140) in str(err.value) and repr("!" * 141) not in str(err.value)


@pytest.mark.parametrize("raw", ["", ".", "..", "a/.", "a/..", "dir/"])
def test_a_filename_that_names_no_file_is_refused(raw):
    with pytest.raises(AudioRecordError, match="names no file"):
        clean_filename(raw)


def test_the_topic_takes_the_setting_plus_the_record_overhead():
    s = Settings.from_env({})
    assert s.audio_record_max_bytes == 16 * 1024 * 1024
    assert audio_topic_max_bytes(s) == 16 * 1024 * 1024 + RECORD_OVERHEAD_BYTES
    assert Settings.from_env({"GENRE_AUDIO_MAX_BYTES": "1000"}).audio_record_max_bytes == 1000
    assert Settings.from_env({"GENRE_TOPIC_AUDIO": "x.audio"}).topic_audio == "x.audio"


def test_a_submission_is_stored_by_its_content_hash_and_becomes_a_claim_check(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    sub = audio_from_record(Rec(AUDIO, headers=[("filename", b"x/song.mp3"), ("song-id", b"s1")]), max_bytes=10_000)
    ref = stored_song_ref(sub, store)
    digest = hashlib.sha256(AUDIO).hexdigest()
    assert (ref.song_id, ref.filename, ref.blob, ref.size, ref.produced_at) == (
        "s1", "song.mp3", digest, len(AUDIO), sub.produced_at)
    assert store.open_path(digest).read_bytes() == AUDIO
