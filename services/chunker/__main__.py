"""python -m services.chunker: decode each ingested song and publish its chunks."""

from __future__ import annotations

import logging
import sys
from typing import Iterator

from kafka.errors import KafkaError

from shared import kafka_io
from shared.audio import DecodeError, chunk_song
from shared.blobstore import BlobNotFound, BlobStore
from shared.featurespec import DEFAULT_SPEC, FeatureSpec
from shared.metrics import ServiceMetrics
from shared.schemas import CHUNK_READ_VERSIONS, Chunk, SongRef, now
from shared.service import Output, StartupError, StopFlag, StreamService, run_service
from shared.settings import Settings

logger = logging.getLogger("services.chunker")
SERVICE = "chunker"


def song_chunks(ref: SongRef, settings: Settings, store: BlobStore, spec: FeatureSpec,
                metrics: ServiceMetrics) -> Iterator[Output]:
    """Every chunk of one song, then (on failure) one error chunk that ends the song.

    Any failure of the song itself (not of Kafka) ends it with an error chunk, so the
    classifier closes the song with an error verdict at once instead of waiting for
    chunks that will never come."""
    index = 0

    def out(chunk: Chunk) -> Output:
        return Output(settings.topic_chunks, ref.song_id, chunk, settings.chunk_schema)

    try:
        path = store.open_path(ref.blob)
        for c in chunk_song(path, spec, min_chunk_seconds=settings.min_chunk_seconds,
                            timeout_s=settings.decode_timeout_s, max_seconds=settings.max_decoded_seconds):
            index = c.index + 1
            metrics.song_seconds.labels(SERVICE).inc(c.n_samples / spec.sample_rate)
            yield out(Chunk(song_id=ref.song_id, filename=ref.filename, index=c.index, last=c.last,
                            sample_rate=spec.sample_rate, n_samples=c.n_samples, pcm=c.pcm,
                            produced_at=ref.produced_at, chunked_at=now()))
    except (KafkaError, kafka_io.KafkaIOError):
        raise
    except Exception as exc:  # noqa: BLE001 - hostile input must end as a verdict, not a crash
        expected = isinstance(exc, (DecodeError, BlobNotFound))
        metrics.errors.labels(SERVICE, "decode" if expected else "chunk").inc()
        if expected:
            logger.info("song %s (%r): %s", ref.song_id, ref.filename, exc)
            reason = str(exc)
        else:
            logger.exception("song %s (%r): chunking failed", ref.song_id, ref.filename)
            reason = f"chunking failed: {type(exc).__name__}: {exc}"
        yield out(Chunk(song_id=ref.song_id, filename=ref.filename, index=index, last=True,
                        sample_rate=spec.sample_rate, n_samples=0, error=reason,
                        produced_at=ref.produced_at, chunked_at=now()))


def build(settings: Settings, metrics: ServiceMetrics, stop: StopFlag) -> StreamService[SongRef]:
    if settings.chunk_schema not in CHUNK_READ_VERSIONS:
        raise StartupError(f"GENRE_CHUNK_SCHEMA={settings.chunk_schema}: not a chunk schema version "
                           f"(one of {sorted(CHUNK_READ_VERSIONS)}; 1 is exact float32, 2 compact FLAC)")
    store = BlobStore(settings.blob_dir)
    return StreamService(
        SERVICE, settings, settings.group_chunker, settings.topic_songs, SongRef,
        lambda ref: song_chunks(ref, settings, store, DEFAULT_SPEC, metrics),
        max_poll_records=1, max_poll_interval_ms=900_000, metrics=metrics, stop=stop,
    )


def main() -> int:
    return run_service(SERVICE, build)


if __name__ == "__main__":
    sys.exit(main())
