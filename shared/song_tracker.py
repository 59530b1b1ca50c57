"""Per-song vote state for the classifier, and the offsets that are safe to commit.

Mechanism (why no song is lost and none gets two different verdicts):
- Everything about a song is keyed by its song id, so all its feature records sit in one
  partition, in chunk order (each stage consumes and produces a song in order).
- A tally starts only at a chunk-0 record. The committed offset of a partition never
  passes the first record of a song that has no verdict yet. After a restart or a
  rebalance the new owner therefore re-reads every incomplete song from its chunk 0 and
  rebuilds the tally; a record with index > 0 of a song it has no tally for belongs to a
  song whose verdict was already published (its chunk 0 lies before the committed offset),
  so it is ignored.
- Replays recompute the same probabilities with the same model, so a re-emitted verdict
  is identical; the verdict topic is compacted and keyed by song id. (Predictions do not
  depend on which other chunks share a batch: each row of a batch is computed alone.)
- A song is pinned to the model version that predicted its chunk 0 (`model_version`), so
  a model swapped in while the song is open never mixes two models in one verdict.
- With the classifier's worker thread, only the worker calls this class, and it sees each
  partition's records in offset order. On a rebalance the poll thread queues a marker
  behind the revoked partitions' records; the worker drains them, the offsets from
  `safe_offsets()` are committed once the outputs are acknowledged, and then
  `forget_partitions` drops their songs: the next owner rebuilds them from chunk 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Hashable

import numpy as np

from shared.vote import VoteTally


@dataclass
class _Open:
    tally: VoteTally
    partition: Hashable
    first_offset: int
    model_version: str = ""
    updated: float = field(default_factory=time.monotonic)


class SongTracker:
    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._next_offset: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def observe(
        self,
        partition: Hashable,
        offset: int,
        song_id: str,
        *,
        index: int,
        last: bool,
        filename: str = "",
        produced_at: float = 0.0,
        probabilities: np.ndarray | None = None,
        error: str = "",
        model_version: str = "",
    ) -> VoteTally | None:
        """Record one chunk's outcome; returns the tally when this record completes its song.

        `model_version` is remembered when the record opens the song (chunk 0)."""
        self._next_offset[partition] = max(self._next_offset.get(partition, 0), offset + 1)
        entry = self._open.get(song_id)
        if entry is None:
            if index != 0:
                return None  # the song's verdict was published before our start offset
            entry = _Open(VoteTally(song_id, filename, produced_at, first_seen=time.time()), partition, offset,
                          model_version)
            self._open[song_id] = entry
        entry.tally.add(index, last, probabilities, error)
        entry.updated = time.monotonic()
        if entry.tally.complete:
            del self._open[song_id]
            return entry.tally
        return None

    def is_open(self, song_id: str) -> bool:
        return song_id in self._open

    def model_version(self, song_id: str) -> str | None:
        """The model version the open song is pinned to (None if it is not open)."""
        entry = self._open.get(song_id)
        return None if entry is None else entry.model_version

    def versions_in_use(self) -> set[str]:
        return {e.model_version for e in self._open.values()}

    def would_open_or_extend(self, song_id: str, index: int) -> bool:
        """False for a record `observe` would ignore (a tail of a song already decided)."""
        return index == 0 or song_id in self._open

    def advance(self, partition: Hashable, offset: int) -> None:
        """A record that holds no chunk (dead-lettered) is done once seen."""
        self._next_offset[partition] = max(self._next_offset.get(partition, 0), offset + 1)

    def safe_offsets(self) -> dict[Hashable, int]:
        """Per partition: the offset below which every song has its verdict."""
        safe = dict(self._next_offset)
        for entry in self._open.values():
            if entry.partition in safe:
                safe[entry.partition] = min(safe[entry.partition], entry.first_offset)
        return safe

    def forget_partitions(self, partitions: set[Hashable]) -> None:
        """On revocation: another consumer rebuilds these songs from the committed offsets."""
        for song_id in [s for s, e in self._open.items() if e.partition in partitions]:
            del self._open[song_id]
        for p in partitions:
            self._next_offset.pop(p, None)

    def stale(self, older_than_s: float) -> list[VoteTally]:
        """Songs with no progress for `older_than_s` (a chunk lost upstream); removed."""
        return [t for t, _v in self.stale_with_versions(older_than_s)]

    def stale_with_versions(self, older_than_s: float) -> list[tuple[VoteTally, str]]:
        """Like `stale`, with the model version each song was pinned to."""
        cutoff = time.monotonic() - older_than_s
        out = [(e.tally, e.model_version) for e in self._open.values() if e.updated < cutoff]
        for t, _v in out:
            del self._open[t.song_id]
        return out
