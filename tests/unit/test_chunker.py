"""The chunker's choice of chunk schema: exact float32 (v1, the default) or compact FLAC (v2)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from services.chunker.__main__ import build, song_chunks
from shared.blobstore import BlobStore
from shared.featurespec import DEFAULT_SPEC
from shared.metrics import ServiceMetrics
from shared.schemas import Chunk, SongRef, decode
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


def test_an_unknown_chunk_schema_stops_the_chunker_at_startup(tmp_path):
    settings = Settings.from_env({}, chunk_schema=3, blob_dir=str(tmp_path / "blobs"))
    with pytest.raises(StartupError, match="GENRE_CHUNK_SCHEMA=3"):
        build(settings, ServiceMetrics("chunker"), StopFlag())
