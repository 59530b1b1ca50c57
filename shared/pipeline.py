"""The embedded default: decode, chunk, extract, predict and vote in one process.

The same stage functions the services run, called in a loop; no broker."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from shared.audio import DecodeError, chunk_song
from shared.content_id import song_id_for_file
from shared.features import Extractor, extract_chunk
from shared.featurespec import ChunkFeatures
from shared.model import ModelArtifact
from shared.schemas import Verdict
from shared.settings import Settings
from shared.verdicts import error_verdict, ok_verdict

__all__ = ["classify_file", "song_id_for_file"]


def classify_file(
    path: str | Path,
    model: ModelArtifact,
    extract: Extractor,
    settings: Settings,
    *,
    song_id: str | None = None,
    batch_size: int = 64,
) -> Verdict:
    """One verdict for one file; an unreadable file yields an error verdict, never raises.
    The features are those of the model's spec (a v2 model's include the log-mel)."""
    path = Path(path)
    sid = song_id or song_id_for_file(path)
    name = path.name
    t0 = time.perf_counter()
    decode_s = extract_s = predict_s = 0.0
    features: list[ChunkFeatures] = []
    try:
        chunks = chunk_song(
            path, model.spec, min_chunk_seconds=settings.min_chunk_seconds,
            timeout_s=settings.decode_timeout_s, max_seconds=settings.max_decoded_seconds,
        )
        t_dec = time.perf_counter()
        for chunk in chunks:
            t1 = time.perf_counter()
            decode_s += t1 - t_dec
            features.append(extract_chunk(chunk.pcm, model.spec, extract))
            t_dec = time.perf_counter()
            extract_s += t_dec - t1
    except DecodeError as exc:
        return error_verdict(sid, name, str(exc), model.version, timings={"total_s": time.perf_counter() - t0})
    except Exception as exc:  # an extractor backend failing must not stop the other files
        return error_verdict(sid, name, f"feature extraction failed: {exc}", model.version,
                             timings={"total_s": time.perf_counter() - t0})
    t2 = time.perf_counter()
    probs = [model.predict(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
    predict_s = time.perf_counter() - t2
    timings = {
        "decode_s": round(decode_s, 4),
        "extract_s": round(extract_s, 4),
        "predict_s": round(predict_s, 4),
        "total_s": round(time.perf_counter() - t0, 4),
    }
    return ok_verdict(sid, name, np.concatenate(probs), model.genres, model.version, timings=timings)
