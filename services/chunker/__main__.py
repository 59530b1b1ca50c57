"""python -m services.chunker: decode each ingested song and publish its chunks.

Songs come in two ways, read by one consumer group: claim checks on the songs topic
(`genre produce`), and raw audio files on the audio topic from any Kafka client
(`shared/audio_ingest.py`), which are first put in the blob store and then chunked by
the same `song_chunks` as a claim-checked song."""

from __future__ import annotations

import logging
import sys
from typing import Iterator

from kafka.errors import KafkaError

from shared import audio_ingest, kafka_io, pcm_codec
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
    bits = settings.chunk_bits if settings.chunk_schema >= 2 else pcm_codec.BITS  # v1 is float32 as cut

    def out(chunk: Chunk) -> Output:
        return Output(settings.topic_chunks, ref.song_id, chunk, settings.chunk_schema)

    try:
        path = store.open_path(ref.blob)
        for c in chunk_song(path, spec, min_chunk_seconds=settings.min_chunk_seconds,
                            timeout_s=settings.decode_timeout_s, max_seconds=settings.max_decoded_seconds):
            index = c.index + 1
            metrics.song_seconds.labels(SERVICE).inc(c.n_samples / spec.sample_rate)
            pcm = c.pcm if bits >= pcm_codec.BITS else pcm_codec.round_bits(c.pcm, bits)
            yield out(Chunk(song_id=ref.song_id, filename=ref.filename, index=c.index, last=c.last,
                            sample_rate=spec.sample_rate, n_samples=c.n_samples, pcm=pcm,
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


def ingest_chunks(msg: SongRef | audio_ingest.AudioSubmission, settings: Settings, store: BlobStore,
                  spec: FeatureSpec, metrics: ServiceMetrics) -> Iterator[Output]:
    """The chunks of a song from either topic: a raw-audio submission is stored by its
    content hash first and becomes the claim check `genre produce` would have sent (a
    failure to store it raises: the loop dead-letters the record with the reason)."""
    if isinstance(msg, audio_ingest.AudioSubmission):
        ref = audio_ingest.stored_song_ref(msg, store)
        logger.info("song %s (%r, %d bytes of raw audio) from client %r", ref.song_id, ref.filename,
                    ref.size, msg.client)
    else:
        ref = msg
    yield from song_chunks(ref, settings, store, spec, metrics)


def build(settings: Settings, metrics: ServiceMetrics,
          stop: StopFlag) -> StreamService[SongRef | audio_ingest.AudioSubmission]:
    if settings.chunk_schema not in CHUNK_READ_VERSIONS:
        raise StartupError(f"GENRE_CHUNK_SCHEMA={settings.chunk_schema}: not a chunk schema version "
                           f"(one of {sorted(CHUNK_READ_VERSIONS)}; 1 is exact float32, 2 compact FLAC)")
    if not pcm_codec.MIN_BITS <= settings.chunk_bits <= pcm_codec.BITS:
        raise StartupError(f"GENRE_CHUNK_BITS={settings.chunk_bits}: bits per block must be within "
                           f"[{pcm_codec.MIN_BITS}, {pcm_codec.BITS}]")
    store = BlobStore(settings.blob_dir)
    max_audio = settings.audio_record_max_bytes

    def decode_audio(rec: object) -> audio_ingest.AudioSubmission:
        return audio_ingest.audio_from_record(rec, max_audio)

    return StreamService(
        SERVICE, settings, settings.group_chunker, settings.topic_songs, SongRef,  # type: ignore[arg-type]
        lambda msg: ingest_chunks(msg, settings, store, DEFAULT_SPEC, metrics),
        extra_inputs={settings.topic_audio: decode_audio},
        # a whole audio record (16 MiB + overhead) must fit one partition's fetch
        consumer_overrides={"max_partition_fetch_bytes": audio_ingest.audio_topic_max_bytes(settings)},
        max_poll_records=1, max_poll_interval_ms=900_000, metrics=metrics, stop=stop,
    )


def main() -> int:
    return run_service(SERVICE, build)


if __name__ == "__main__":
    sys.exit(main())
