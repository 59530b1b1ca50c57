"""The song verdict: mode of the per-chunk votes, with a deterministic tie-break.

Ties between equally voted genres go to the larger summed probability, then to the
genre that sorts first, so a replay of the same chunks always yields the same verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SongVote:
    genre: str
    confidence: float  # share of chunks that voted for `genre`
    probabilities: dict[str, float]  # mean probability per genre
    votes: list[str]  # per-chunk winning genre, in chunk order


def song_verdict(probabilities: np.ndarray, genres: Sequence[str]) -> SongVote:
    """probabilities: (n_chunks, n_genres) in chunk order."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] != len(genres):
        raise ValueError(f"expected (n_chunks >= 1, {len(genres)}) probabilities, got {p.shape}")
    winners = p.argmax(axis=1)
    counts = np.bincount(winners, minlength=len(genres))
    sums = p.sum(axis=0)
    # Highest count, then highest summed probability, then the name.
    order = sorted(range(len(genres)), key=lambda g: (-counts[g], -sums[g], genres[g]))
    best = order[0]
    return SongVote(
        genre=genres[best],
        confidence=float(counts[best] / p.shape[0]),
        probabilities={g: float(m) for g, m in zip(genres, p.mean(axis=0))},
        votes=[genres[i] for i in winners],
    )


@dataclass
class VoteTally:
    """Collects one song's chunk predictions as they arrive, in any order, with duplicates.

    Complete once the chunk marked last has arrived and every index before it too.
    A chunk carrying an error makes the song an error once complete."""

    song_id: str
    filename: str = ""
    produced_at: float = 0.0
    probabilities: dict[int, np.ndarray] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    last_index: int | None = None
    first_seen: float = 0.0

    def add(self, index: int, last: bool, probabilities: np.ndarray | None = None, error: str = "") -> None:
        if error:
            self.errors[index] = error
        elif probabilities is not None:
            self.probabilities[index] = np.asarray(probabilities, dtype=np.float32)
        if last:
            self.last_index = index

    @property
    def complete(self) -> bool:
        if self.last_index is None:
            return False
        seen = set(self.probabilities) | set(self.errors)
        return all(i in seen for i in range(self.last_index + 1))

    def error(self) -> str:
        """The first error in chunk order ('' if none)."""
        return self.errors[min(self.errors)] if self.errors else ""

    def stacked(self) -> np.ndarray:
        assert self.last_index is not None
        return np.stack([self.probabilities[i] for i in range(self.last_index + 1)])
