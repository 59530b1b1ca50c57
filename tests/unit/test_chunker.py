"""The chunker's choice of chunk schema: exact float32 (v1, the default) or compact FLAC (v2)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from services.chunker.__main__ import build, song_chunks
from shared.blobstore import BlobStore
from shared.featurespec import DEFAULT_SPEC
from shared.metrics import ServiceMetrics
from shared.schemas import Chunk, SchemaError, SongRef, decode
from shared.service import StartupError, StopFlag
from shared.settings import Settings
from tests.fixtures.audio import make_song, write_audio


@pytest.mark.parametrize("schema", [1, 2])
def test_chunks_are_written_in_the_configured_schema_and_read_back(tmp_path, schema):
    store = BlobStore(tmp_path / "blobs")
    key, size = store.put_file(write_audio(tmp_path / "s.wav", make_song("drone", 45, 3)))
    ref = SongRef(song_id="s1", filename="s.wav", blob=key, size=size)
    settings = Settings.from_env({}, chunk_schema=schema, blob_dir=str(tmp_path / "blobs"))
    outs = list(song_chunks(ref, settings, store, DEFAULT_SPEC, ServiceMetrics("chunker")))
    assert [o.message.index for o in outs] == [0, 1] and outs[-1].message.last
    for out in outs:
        assert out.version == schema
        wire = out.message.encode(out.version)
        assert msgpack.unpackb(wire, raw=False)["v"] == schema
        back = decode(wire, Chunk)
        assert back.n_samples == out.message.n_samples
        if schema == 1:  # float32 on the wire: bit-exact
            assert np.array_equal(back.pcm, out.message.pcm)
        else:  # 24-bit block floating point: within 2^-23 of each 4096-sample block's peak
            assert np.max(np.abs(back.pcm - out.message.pcm)) <= np.max(np.abs(out.message.pcm)) * 2.0**-22


@pytest.mark.parametrize("schema,bits", [(2, 20), (1, 20), (2, 24)])
def test_chunk_bits_round_v2_chunks_only(tmp_path, schema, bits):
    from shared import pcm_codec

    store = BlobStore(tmp_path / "blobs")
    song = write_audio(tmp_path / "s.wav", make_song("drone", 35, 3), codec_args=("-c:a", "pcm_f32le"))
    key, size = store.put_file(song)  # float samples: every mantissa bit used, as a decoded MP3's
    ref = SongRef(song_id="s1", filename="s.wav", blob=key, size=size)
    cut = list(song_chunks(ref, Settings.from_env({}, chunk_schema=schema, blob_dir=str(tmp_path / "blobs")),
                           store, DEFAULT_SPEC, ServiceMetrics("chunker")))
    settings = Settings.from_env({"GENRE_CHUNK_BITS": str(bits)}, chunk_schema=schema,
                                 blob_dir=str(tmp_path / "blobs"))
    outs = list(song_chunks(ref, settings, store, DEFAULT_SPEC, ServiceMetrics("chunker")))
    for a, b in zip(outs, cut, strict=True):
        rounded = schema == 2 and bits < 24
        expected = pcm_codec.round_bits(b.message.pcm, bits) if rounded else b.message.pcm
        np.testing.assert_array_equal(a.message.pcm, expected)
        if rounded:
            assert not np.array_equal(a.message.pcm, b.message.pcm)
            np.testing.assert_array_equal(decode(a.message.encode(2), Chunk).pcm, expected)  # exact on the wire
            assert len(a.message.encode(2)) < len(b.message.encode(2))


@pytest.mark.parametrize("bits", [15, 25])
def test_chunk_bits_outside_16_to_24_stop_the_chunker_at_startup(tmp_path, bits):
    settings = Settings.from_env({"GENRE_CHUNK_BITS": str(bits)}, chunk_schema=2, blob_dir=str(tmp_path / "blobs"))
    with pytest.raises(StartupError, match=f"GENRE_CHUNK_BITS={bits}"):
        build(settings, ServiceMetrics("chunker"), StopFlag())


def test_an_unknown_chunk_schema_stops_the_chunker_at_startup(tmp_path):
    settings = Settings.from_env({}, chunk_schema=3, blob_dir=str(tmp_path / "blobs"))
    with pytest.raises(StartupError, match="GENRE_CHUNK_SCHEMA=3"):
        build(settings, ServiceMetrics("chunker"), StopFlag())


# --- raw audio from the audio topic -----------------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402

from services.chunker.__main__ import ingest_chunks  # noqa: E402
from shared.audio_ingest import audio_from_record, audio_topic_max_bytes  # noqa: E402
from shared.content_id import song_id_for_file  # noqa: E402


@dataclass
class AudioRec:
    value: bytes
    headers: list = field(default_factory=list)
    key: bytes = b"client-1"
    timestamp: int = 1_700_000_000_000
    topic: str = "genre.audio"


def test_a_raw_audio_record_is_stored_and_chunked_like_a_claim_checked_song(tmp_path):
    path = write_audio(tmp_path / "s.wav", make_song("drone", 45, 3))
    store = BlobStore(tmp_path / "blobs")
    settings = Settings.from_env({}, blob_dir=str(tmp_path / "blobs"))
    sub = audio_from_record(AudioRec(path.read_bytes(), [("filename", b"/home/me/s.wav")]), 1 << 24)
    outs = list(ingest_chunks(sub, settings, store, DEFAULT_SPEC, ServiceMetrics("chunker")))
    key, size = store.put_file(path)  # already there: the same key
    claim = SongRef(song_id=song_id_for_file(path), filename="s.wav", blob=key, size=size, produced_at=1.7e9)
    expected = list(song_chunks(claim, settings, store, DEFAULT_SPEC, ServiceMetrics("chunker")))
    assert [o.key for o in outs] == [song_id_for_file(path)] * 2
    for a, b in zip(outs, expected, strict=True):
        assert (a.topic, a.key, a.message.index, a.message.last, a.message.filename, a.message.produced_at) == \
            (b.topic, b.key, b.message.index, b.message.last, "s.wav", 1.7e9)
        assert np.array_equal(a.message.pcm, b.message.pcm)


def test_bytes_that_are_not_audio_end_as_an_error_chunk_with_ffmpegs_reason(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    settings = Settings.from_env({}, blob_dir=str(tmp_path / "blobs"))
    sub = audio_from_record(AudioRec(b"this is not audio\n" * 100, [("filename", b"notes.mp3")]), 1 << 24)
    outs = list(ingest_chunks(sub, settings, store, DEFAULT_SPEC, ServiceMetrics("chunker")))
    assert len(outs) == 1
    chunk = outs[0].message
    assert (outs[0].key, chunk.song_id, chunk.index, chunk.last, chunk.n_samples) == (sub.song_id, sub.song_id, 0, True, 0)
    assert chunk.error and "blobs" not in chunk.error, chunk.error


def test_the_chunker_reads_the_audio_topic_with_fetches_that_fit_a_whole_record(tmp_path):
    settings = Settings.from_env({}, blob_dir=str(tmp_path / "blobs"), audio_record_max_bytes=1000)
    svc = build(settings, ServiceMetrics("chunker"), StopFlag())
    assert svc.topics == [settings.topic_songs, settings.topic_audio]
    assert svc.consumer_overrides == {"max_partition_fetch_bytes": audio_topic_max_bytes(settings)}
    decoded = svc.decoders[settings.topic_audio](AudioRec(b"x" * 1000, [("filename", b"a.mp3")]))
    assert decoded.filename == "a.mp3" and decoded.audio == b"x" * 1000
    with pytest.raises(SchemaError, match="exceeds the limit of 1000 bytes"):
        svc.decoders[settings.topic_audio](AudioRec(b"x" * 1001, [("filename", b"a.mp3")]))
