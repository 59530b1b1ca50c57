import msgpack
import numpy as np
import pytest

from shared.schemas import Chunk, Features, SchemaError, SongRef, Verdict, decode


def feats(**kw):
    arrays = {"mfcc": np.ones((646, 20), np.float32), "peaks": np.ones((1292, 7), np.float32),
              "valleys": np.zeros((1292, 7), np.float32)}
    base = dict(song_id="abc", filename="x.mp3", index=0, last=True, spec_id="s", arrays=arrays)
    base.update(kw)
    return Features(**base)


def test_round_trip_keeps_arrays_exact():
    f = feats()
    g = decode(f.encode(), Features)
    assert g.song_id == "abc" and g.last is True
    np.testing.assert_array_equal(g.arrays["mfcc"], f.arrays["mfcc"])
    c = Chunk(song_id="s-1", filename="ü ñ.flac", index=3, last=False, sample_rate=22050, n_samples=10,
              pcm=np.arange(10, dtype=np.float32))
    assert decode(c.encode(), Chunk).pcm.tolist() == list(range(10))


def test_not_msgpack_is_a_schema_error():
    with pytest.raises(SchemaError, match="msgpack"):
        decode(b"\xc1\xff garbage", SongRef)
    with pytest.raises(SchemaError):
        decode(None, SongRef)


def test_wrong_version_type_and_fields():
    d = SongRef(song_id="a", filename="f", blob="0" * 64, size=1).to_dict()
    with pytest.raises(SchemaError, match="version"):
        decode(msgpack.packb({**d, "v": 99}), SongRef)
    with pytest.raises(SchemaError, match="type"):
        decode(msgpack.packb(d), Verdict)
    with pytest.raises(SchemaError, match="missing"):
        decode(msgpack.packb({k: v for k, v in d.items() if k != "blob"}), SongRef)
    with pytest.raises(SchemaError, match="expected int"):
        decode(msgpack.packb({**d, "size": "big"}), SongRef)


def test_claim_check_key_cannot_be_a_path():
    d = SongRef(song_id="a", filename="f", blob="0" * 64, size=1).to_dict()
    with pytest.raises(SchemaError, match="SHA-256"):
        decode(msgpack.packb({**d, "blob": "../../etc/passwd"}), SongRef)
    with pytest.raises(SchemaError, match="song_id"):
        decode(msgpack.packb({**d, "song_id": "../x"}), SongRef)


def test_wrong_array_shape_and_dtype_rejected():
    d = feats().to_dict()
    d["arrays"]["mfcc"]["shape"] = [10, 10]
    with pytest.raises(SchemaError, match="do not fill"):
        decode(msgpack.packb(d, use_bin_type=True), Features)
    bad = feats(arrays={"mfcc": np.ones((4,), np.float32), "peaks": np.ones((2, 7), np.float32),
                        "valleys": np.ones((2, 7), np.float32)})
    with pytest.raises(SchemaError, match="2-D"):
        decode(bad.encode(), Features)
