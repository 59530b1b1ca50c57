"""python -m services.extractor: compute each chunk's features (GENRE_FEATURE_SPEC) with the configured backend."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Iterator

from threadpoolctl import threadpool_limits

from shared.features import extract_chunk
from shared.featurespec import ChunkFeatures, FeatureSpec, spec_by_version
from shared.metrics import ServiceMetrics
from shared.schemas import FEATURES_READ_VERSIONS, Chunk, Features
from shared.service import Output, StartupError, StopFlag, StreamService, run_service
from shared.settings import Settings

logger = logging.getLogger("services.extractor")
SERVICE = "extractor"


def chunk_features(chunk: Chunk, settings: Settings, spec: FeatureSpec,
                   extract: Callable[[object, int], ChunkFeatures], metrics: ServiceMetrics) -> Iterator[Output]:
    """One features message per chunk; a failed chunk passes its error downstream."""
    error = chunk.error
    arrays = {}
    started = time.perf_counter()
    if not error and chunk.sample_rate != spec.sample_rate:
        error = f"chunk sample rate {chunk.sample_rate} Hz differs from the feature spec's {spec.sample_rate} Hz"
    if not error and len(chunk.pcm) != spec.chunk_samples:
        error = f"chunk holds {len(chunk.pcm)} samples where the spec needs {spec.chunk_samples}"
    if not error:
        try:
            arrays = extract_chunk(chunk.pcm, spec, extract).arrays()
        except Exception as exc:  # the sonic-annotator backend can fail on a chunk
            logger.exception("extraction failed for %s#%d", chunk.song_id, chunk.index)
            error = f"feature extraction failed: {exc}"
    if error and not chunk.error:
        metrics.errors.labels(SERVICE, "extract").inc()
    yield Output(settings.topic_features, chunk.song_id, Features(
        song_id=chunk.song_id, filename=chunk.filename, index=chunk.index, last=chunk.last,
        spec_id=spec.id, arrays=arrays, error=error, produced_at=chunk.produced_at,
        extract_seconds=time.perf_counter() - started,
    ), settings.features_schema)


def build(settings: Settings, metrics: ServiceMetrics, stop: StopFlag) -> StreamService[Chunk]:
    from shared.features import get_extractor
    from shared.sonic_annotator import SonicAnnotatorError

    try:
        spec = spec_by_version(settings.feature_spec)
    except ValueError as exc:
        raise StartupError(f"GENRE_FEATURE_SPEC={settings.feature_spec}: {exc}") from None
    if settings.features_schema not in FEATURES_READ_VERSIONS:
        raise StartupError(f"GENRE_FEATURES_SCHEMA={settings.features_schema}: not a features schema "
                           f"(one of {sorted(FEATURES_READ_VERSIONS)}; 1 is float32, 2 the log-mel in 16 bits)")
    try:
        extract = get_extractor(settings.extractor_backend)
    except (ValueError, SonicAnnotatorError) as exc:
        raise StartupError(f"EXTRACTOR_BACKEND={settings.extractor_backend}: {exc}") from None
    logger.info("extractor backend: %s, feature spec: %s", settings.extractor_backend, spec.id)
    # One BLAS/FFT thread per process: scale by processes (replicas), not threads.
    threadpool_limits(limits=1)
    return StreamService(
        SERVICE, settings, settings.group_extractor, settings.topic_chunks, Chunk,
        lambda chunk: chunk_features(chunk, settings, spec, extract, metrics),
        max_poll_records=4, metrics=metrics, stop=stop,
    )


def main() -> int:
    return run_service(SERVICE, build)


if __name__ == "__main__":
    sys.exit(main())
