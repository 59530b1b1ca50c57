"""A song's id from its content: the first 16 hex digits of the SHA-256 of its bytes.

One definition for every way a song enters: `genre classify` (a file), and the raw-audio
topic (the record's bytes, `shared/audio_ingest.py`), so the same file gets the same id,
and therefore the same verdict key, whichever way it came in. The blob store keys a song
by the full digest (`shared/blobstore.py`); its first 16 digits are this id.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SONG_ID_HEX_DIGITS = 16
HASH_BLOCK = 1 << 20


def song_id_for_digest(sha256_hex: str) -> str:
    """The song id of content whose SHA-256 hex digest is `sha256_hex`."""
    return sha256_hex[:SONG_ID_HEX_DIGITS]


def song_id_for_bytes(data: bytes | bytearray | memoryview) -> str:
    """The song id of a song's file content held in memory."""
    return song_id_for_digest(hashlib.sha256(data).hexdigest())


def song_id_for_file(path: str | Path) -> str:
    """The song id of a file (hashed in blocks); an unreadable file gets the id of its
    path's text, so it still has one (its verdict is then an error)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(HASH_BLOCK), b""):
                h.update(block)
    except OSError:
        h = hashlib.sha256(str(path).encode("utf-8", "surrogateescape"))
    return song_id_for_digest(h.hexdigest())
