"""The shared song store behind the claim checks on the songs topic (and where the
chunker keeps the songs that arrive as raw audio on the audio topic).

Files are stored under their SHA-256 (`<root>/<2 hex>/<64 hex>`), so a key from a message
is validated as a digest and can never name a path outside the store.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from shared.schemas import BLOB_KEY_RE

COPY_BLOCK = 1 << 20


class BlobNotFound(FileNotFoundError):
    pass


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        if not isinstance(key, str) or not BLOB_KEY_RE.fullmatch(key):
            raise ValueError(f"{key!r} is not a blob key (a SHA-256 hex digest)")
        path = self.root / key[:2] / key
        # Its own containment check, not only the schema's regex: whatever a key is, the
        # path it names (with ".." collapsed) is a file two levels under the root.
        norm = Path(os.path.normpath(path))
        if norm.name != key or norm.parent.parent != Path(os.path.normpath(self.root)):
            raise ValueError(f"{key!r} names a path outside the blob store")
        return path

    def put_file(self, src: str | Path) -> tuple[str, int]:
        """Copy a file in (atomically, hashing as it goes); returns (key, size)."""

        def blocks() -> Iterator[bytes]:
            with open(src, "rb") as fh:
                yield from iter(lambda: fh.read(COPY_BLOCK), b"")

        return self._put(blocks())

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store a song held in memory (atomically, as put_file does); returns (key, size)."""
        return self._put(iter((data,)))

    def _put(self, blocks: Iterator[bytes]) -> tuple[str, int]:
        """Write `blocks` to a temporary file inside the store while hashing them, then
        rename it to its digest (an existing blob with that digest is kept)."""
        self.root.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                for block in blocks:
                    h.update(block)
                    out.write(block)
                    size += len(block)
            key = h.hexdigest()
            dest = self.path_for(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                os.unlink(tmp)
            else:
                os.replace(tmp, dest)
            return key, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def open_path(self, key: str) -> Path:
        path = self.path_for(key)
        if not path.is_file():
            raise BlobNotFound(f"song {key[:12]}… is not in the shared store {self.root} (GENRE_BLOB_DIR)")
        return path
