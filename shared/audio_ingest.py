"""Raw-audio ingest: a record on the audio topic is a whole audio file sent by any Kafka
client (kcat, a Java producer, ...), not a message of ours.

The record:

- value: the song's audio file bytes, at most `Settings.audio_record_max_bytes`
  (GENRE_AUDIO_MAX_BYTES, 16 MiB by default). Larger songs go by claim check
  (`genre produce`); the topic's max.message.bytes (`audio_topic_max_bytes`: the limit
  plus 64 KiB of record overhead) makes the broker refuse bigger records to the producer.
- key: optional, the client's id; only logged.
- header ``filename`` (required, UTF-8): the original file name. Any path components
  are stripped (``a/b\\c.mp3`` -> ``c.mp3``); it is a label for the verdict, never a path.
- header ``song-id`` (optional, UTF-8, a valid song id): otherwise the id is the content
  hash (`shared/content_id.py`: the first 16 hex digits of the SHA-256 of the bytes), the
  id `genre classify` gives the same file.

`audio_from_record` turns a consumed record into an `AudioSubmission` or raises
`AudioRecordError` (a `SchemaError`: the stream loop dead-letters the record with the
reason). The content is not sniffed: bytes that are not audio are stored and chunked like
any song, ffmpeg fails on them, and the song gets an error verdict with ffmpeg's reason.
`stored_song_ref` puts the bytes in the blob store and gives the claim check the chunker
handles for both topics alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from shared.blobstore import BlobStore
from shared.content_id import song_id_for_bytes
from shared.kafka_io import RECORD_OVERHEAD_BYTES
from shared.schemas import SONG_ID_RE, SchemaError, SongRef, now
from shared.settings import Settings

FILENAME_HEADER = "filename"
SONG_ID_HEADER = "song-id"
MAX_FILENAME_BYTES = 1024
"""Longest `filename` header (UTF-8 bytes) accepted."""
MAX_CLIENT_CHARS = 200
"""The record key (the client's id) is cut to this many characters for the logs."""
_PATH_SEPARATORS = re.compile(r"[/\\]")


class AudioRecordError(SchemaError):
    """A raw-audio record that cannot be taken; the message is the dead letter's reason."""


@dataclass(frozen=True)
class AudioSubmission:
    """A validated raw-audio record: one song to store and chunk."""

    song_id: str
    filename: str
    audio: bytes
    client: str = ""
    """The record key as text ("" without one): who sent it, for the logs."""
    produced_at: float = 0.0
    """When the client produced it (the record's timestamp), in seconds since the epoch."""


def audio_topic_max_bytes(settings: Settings) -> int:
    """The audio topic's max.message.bytes and the chunker's max_partition_fetch_bytes:
    the largest accepted audio file plus room for the record's key, headers and batch header."""
    return settings.audio_record_max_bytes + RECORD_OVERHEAD_BYTES


def clean_filename(raw: str) -> str:
    """The last path component of `raw` ('/' and '\\' both separate); raises
    AudioRecordError when nothing usable is left."""
    name = _PATH_SEPARATORS.split(raw)[-1]
    if name in ("", ".", ".."):
        raise AudioRecordError(f"header {FILENAME_HEADER!r} ({raw!r}) names no file")
    return name


def header_text(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The UTF-8 value of header `name` (None when absent); a header that appears twice,
    has no value or is not UTF-8 raises AudioRecordError."""
    values = [v for k, v in headers or () if k == name]
    if not values:
        return None
    if len(values) > 1:
        raise AudioRecordError(f"header {name!r} appears {len(values)} times")
    value = values[0]
    if value is None:
        raise AudioRecordError(f"header {name!r} has no value")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise AudioRecordError(f"header {name!r} is {type(value).__name__}, not bytes")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AudioRecordError(f"header {name!r} is not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _client(key: Any) -> str:
    if key is None:
        return ""
    text = key.decode("utf-8", "replace") if isinstance(key, (bytes, bytearray)) else str(key)
    return text[:MAX_CLIENT_CHARS]


def audio_from_record(record: Any, max_bytes: int) -> AudioSubmission:
    """Validate a consumed raw-audio record (kafka-python's ConsumerRecord: value, key,
    headers, timestamp) into an AudioSubmission; raises AudioRecordError with the reason."""
    value = getattr(record, "value", None)
    if value is None:
        raise AudioRecordError("no audio: the record has no value (tombstone)")
    if len(value) > max_bytes:
        raise AudioRecordError(f"audio of {len(value)} bytes exceeds the limit of {max_bytes} bytes "
                               f"(GENRE_AUDIO_MAX_BYTES); send larger files with `genre produce`")
    if len(value) == 0:
        raise AudioRecordError("no audio: the record's value is empty")
    headers = getattr(record, "headers", None)
    if headers is not None and not isinstance(headers, (list, tuple)):
        raise AudioRecordError(f"headers of an unexpected shape ({type(headers).__name__})")
    try:
        raw_name = header_text(headers, FILENAME_HEADER)
        raw_id = header_text(headers, SONG_ID_HEADER)
    except AudioRecordError:
        raise
    except (TypeError, ValueError) as exc:  # a header list of another shape
        raise AudioRecordError(f"headers do not decode: {type(exc).__name__}: {exc}") from None
    if raw_name is None:
        raise AudioRecordError(f"missing header {FILENAME_HEADER!r} (the file's name, UTF-8)")
    if len(raw_name.encode("utf-8")) > MAX_FILENAME_BYTES:
        raise AudioRecordError(f"header {FILENAME_HEADER!r} is longer than {MAX_FILENAME_BYTES} bytes")
    filename = clean_filename(raw_name)
    if raw_id is None:
        song_id = song_id_for_bytes(value)
    elif SONG_ID_RE.fullmatch(raw_id):
        song_id = raw_id
    else:
        raise AudioRecordError(f"header {SONG_ID_HEADER!r} ({raw_id[:140]!r}) is not a valid song id "
                               f"(letters, digits, '.', '_', '-'; at most 128)")
    timestamp = getattr(record, "timestamp", None)
    produced_at = timestamp / 1000.0 if isinstance(timestamp, (int, float)) and timestamp > 0 else now()
    return AudioSubmission(song_id=song_id, filename=filename, audio=bytes(value),
                           client=_client(getattr(record, "key", None)), produced_at=produced_at)


def stored_song_ref(sub: AudioSubmission, store: BlobStore) -> SongRef:
    """Put the submission's bytes in the blob store (by content hash, atomically) and
    return the claim check for them: what `genre produce` would have sent."""
    key, size = store.put_bytes(sub.audio)
    return SongRef(song_id=sub.song_id, filename=sub.filename, blob=key, size=size, produced_at=sub.produced_at)
