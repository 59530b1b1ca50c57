"""Build verdict messages; the one place that turns votes or failures into a Verdict."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from shared.schemas import Verdict, now
from shared.vote import VoteTally, song_verdict


def ok_verdict(
    song_id: str,
    filename: str,
    probabilities: np.ndarray,
    genres: Sequence[str],
    model_version: str,
    *,
    produced_at: float = 0.0,
    timings: dict[str, float] | None = None,
) -> Verdict:
    vote = song_verdict(probabilities, genres)
    return Verdict(
        song_id=song_id,
        filename=filename,
        status="ok",
        genre=vote.genre,
        confidence=vote.confidence,
        probabilities=vote.probabilities,
        votes=vote.votes,
        chunk_count=len(vote.votes),
        model_version=model_version,
        timings=dict(timings or {}),
        produced_at=produced_at,
        verdict_at=now(),
    )


def error_verdict(
    song_id: str,
    filename: str,
    reason: str,
    model_version: str = "",
    *,
    chunk_count: int = 0,
    produced_at: float = 0.0,
    timings: dict[str, float] | None = None,
) -> Verdict:
    return Verdict(
        song_id=song_id,
        filename=filename,
        status="error",
        error=reason,
        chunk_count=chunk_count,
        model_version=model_version,
        timings=dict(timings or {}),
        produced_at=produced_at,
        verdict_at=now(),
    )


def verdict_from_tally(tally: VoteTally, genres: Sequence[str], model_version: str) -> Verdict:
    """A complete tally's verdict: an error if any chunk failed, else the vote."""
    assert tally.complete, "verdict_from_tally needs a complete tally"
    assert tally.last_index is not None
    done = now()
    timings = {"classifier_s": round(max(0.0, done - tally.first_seen), 4)} if tally.first_seen else {}
    if tally.produced_at:
        timings["end_to_end_s"] = round(max(0.0, done - tally.produced_at), 4)
    if tally.errors:
        return error_verdict(
            tally.song_id, tally.filename, tally.error(), model_version,
            chunk_count=tally.last_index + 1, produced_at=tally.produced_at, timings=timings,
        )
    return ok_verdict(
        tally.song_id, tally.filename, tally.stacked(), genres, model_version,
        produced_at=tally.produced_at, timings=timings,
    )
