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


DIGEST = "0123456789abcdef" * 4


@pytest.mark.parametrize("blob", [
    DIGEST + "\n",                        # `$` matches before a trailing newline
    DIGEST + "/../../../../etc/passwd",    # a valid digest, then a path
    DIGEST[:-1],                           # one digit short
    DIGEST.upper(),                        # the store's names are lower case
])
def test_blob_key_must_be_exactly_a_digest(blob):
    """The key check is a full match: a digest with anything after it is refused."""
    d = SongRef(song_id="a", filename="f", blob=DIGEST, size=1).to_dict()
    assert decode(msgpack.packb(d), SongRef).blob == DIGEST
    with pytest.raises(SchemaError, match="SHA-256"):
        decode(msgpack.packb({**d, "blob": blob}), SongRef)


@pytest.mark.parametrize("song_id", ["abc\n", "abc/../x", "a" * 129, "-a"])
def test_song_id_must_be_exactly_an_id(song_id):
    """Song ids key every topic and name nothing else: a trailing newline or a suffix is refused."""
    d = SongRef(song_id="abc", filename="f", blob=DIGEST, size=1).to_dict()
    assert decode(msgpack.packb({**d, "song_id": "a" * 128}), SongRef).song_id == "a" * 128
    with pytest.raises(SchemaError, match="song_id"):
        decode(msgpack.packb({**d, "song_id": song_id}), SongRef)


def test_wrong_array_shape_and_dtype_rejected():
    d = feats().to_dict()
    d["arrays"]["mfcc"]["shape"] = [10, 10]
    with pytest.raises(SchemaError, match="do not fill"):
        decode(msgpack.packb(d, use_bin_type=True), Features)
    bad = feats(arrays={"mfcc": np.ones((4,), np.float32), "peaks": np.ones((2, 7), np.float32),
                        "valleys": np.ones((2, 7), np.float32)})
    with pytest.raises(SchemaError, match="2-D"):
        decode(bad.encode(), Features)


def v2_feats(**arrays):
    from shared.featurespec import MEL_SPEC

    full = {k: np.full(s, 0.5, np.float32) for k, s in MEL_SPEC.feature_shapes().items()}
    return feats(spec_id=MEL_SPEC.id, arrays={**full, **arrays})


def test_v2_features_with_logmel_round_trip_within_the_size_limits():
    from shared.kafka_io import MAX_RECORD_BYTES
    from shared.schemas import MAX_MESSAGE_BYTES

    f = v2_feats()
    raw = f.encode()
    assert 800_000 < len(raw) < MAX_MESSAGE_BYTES <= MAX_RECORD_BYTES  # ~0.85 MB: the features topic takes it
    g = decode(raw, Features)
    assert g.spec_id == f.spec_id and set(g.arrays) == {"mfcc", "peaks", "valleys", "logmel"}
    np.testing.assert_array_equal(g.arrays["logmel"], f.arrays["logmel"])
    assert g.arrays["logmel"].shape == (1876, 96) and g.arrays["logmel"].dtype == np.float32


def test_unknown_arrays_missing_arrays_and_non_float32_logmel_are_rejected():
    with pytest.raises(SchemaError, match="may hold logmel"):
        decode(v2_feats(chroma=np.ones((10, 12), np.float32)).encode(), Features)
    without_peaks = {k: v for k, v in v2_feats().arrays.items() if k != "peaks"}
    with pytest.raises(SchemaError, match="need mfcc, peaks, valleys"):
        decode(feats(arrays=without_peaks).encode(), Features)
    with pytest.raises(SchemaError, match="logmel: expected a 2-D float32"):
        decode(v2_feats(logmel=np.ones((1876, 96), np.int16)).encode(), Features)
    d = v2_feats().to_dict()
    d["arrays"]["logmel"] = {"dtype": "float64", "shape": [1876, 96], "data": np.ones((1876, 96)).tobytes()}
    with pytest.raises(SchemaError, match="logmel: dtype 'float64' not allowed"):
        decode(msgpack.packb(d, use_bin_type=True), Features)
    with pytest.raises(SchemaError, match="not allowed"):
        v2_feats(logmel=np.ones((1876, 96))).encode()


def sized_features(total: int) -> bytes:
    """An encoded features record of exactly `total` bytes, each array well under the limit
    (so only the whole-message check can refuse it), padded through the file name."""
    arrays = {k: np.ones((1024, 240), np.float32) for k in ("mfcc", "peaks", "valleys")}  # 0.94 MiB each
    pad = 0
    for _ in range(10):
        raw = feats(arrays=arrays, filename="x" * pad).encode()
        if len(raw) == total:
            return raw
        pad += total - len(raw)
    raise AssertionError(f"could not size a record to {total} bytes")


def test_a_record_over_the_message_size_limit_is_refused_and_one_at_it_decodes():
    """The 3 MiB limit of README's Limits table: a features record one byte over it is a
    schema error (a dead letter), though each of its arrays alone is within msgpack's
    per-bin limit; a record of exactly the limit decodes."""
    from shared.schemas import MAX_MESSAGE_BYTES

    assert MAX_MESSAGE_BYTES == 3 * 1024 * 1024
    at_limit = sized_features(MAX_MESSAGE_BYTES)
    assert decode(at_limit, Features).arrays["mfcc"].shape == (1024, 240)
    over = sized_features(MAX_MESSAGE_BYTES + 1)
    with pytest.raises(SchemaError, match=f"message of {MAX_MESSAGE_BYTES + 1} bytes exceeds {MAX_MESSAGE_BYTES}"):
        decode(over, Features)
