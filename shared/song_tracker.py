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
  is identical; the verdict topic is compacted and keyed by song id.
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
    ) -> VoteTally | None:
        """Record one chunk's outcome; returns the tally when this record completes its song."""
        self._next_offset[partition] = max(self._next_offset.get(partition, 0), offset + 1)
        entry = self._open.get(song_id)
        if entry is None:
            if index != 0:
                return None  # the song's verdict was published before our start offset
            entry = _Open(VoteTally(song_id, filename, produced_at, first_seen=time.time()), partition, offset)
            self._open[song_id] = entry
        entry.tally.add(index, last, probabilities, error)
        entry.updated = time.monotonic()
        if entry.tally.complete:
            del self._open[song_id]
            return entry.tally
        return None

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
        cutoff = time.monotonic() - older_than_s
        out = [e.tally for s, e in self._open.items() if e.updated < cutoff]
        for t in out:
            del self._open[t.song_id]
        return out
