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


@pytest.mark.parametrize("schema, size", [(1, (800_000, 900_000)), (2, (450_000, 500_000))])
def test_v2_features_with_logmel_round_trip_within_the_size_limits(schema, size):
    from shared.kafka_io import MAX_RECORD_BYTES
    from shared.schemas import MAX_MESSAGE_BYTES

    f = v2_feats()
    raw = f.encode(schema)
    # ~0.85 MB as float32, ~0.48 MB with the log-mel in 16 bits: the features topic takes both
    assert size[0] < len(raw) < size[1] < MAX_MESSAGE_BYTES <= MAX_RECORD_BYTES
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
        decode(v2_feats(logmel=np.ones((1876, 96), np.int16)).encode(1), Features)
    with pytest.raises(SchemaError, match="int16 not allowed"):
        v2_feats(logmel=np.ones((1876, 96), np.int16)).encode(2)
    d = v2_feats().to_dict()
    d["arrays"]["logmel"] = {"dtype": "float64", "shape": [1876, 96], "data": np.ones((1876, 96)).tobytes()}
    with pytest.raises(SchemaError, match="logmel: dtype 'float64' not allowed"):
        decode(msgpack.packb(d, use_bin_type=True), Features)
    for schema in (1, 2):
        with pytest.raises(SchemaError, match="not allowed"):
            v2_feats(logmel=np.ones((1876, 96))).encode(schema)


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


# --- every accept/reject decision of the decoder, at its bounds -------------------------------


def song(**kw):
    return {**SongRef(song_id="a", filename="f", blob=DIGEST, size=1).to_dict(), **kw}


def test_a_tombstone_and_a_non_map_are_refused_with_their_reason():
    with pytest.raises(SchemaError, match=r"^empty message \(tombstone\)$"):
        decode(None, SongRef)
    with pytest.raises(SchemaError, match="expected a msgpack map, got list"):
        decode(msgpack.packb([1, 2]), SongRef)
    with pytest.raises(SchemaError, match="not a msgpack message: ExtraData"):
        decode(msgpack.packb(song()) + b"\x00", SongRef)


def test_version_and_type_errors_name_what_the_record_held():
    with pytest.raises(SchemaError, match="schema version 99 is not supported"):
        decode(msgpack.packb(song(v=99)), SongRef)
    with pytest.raises(SchemaError, match="message type 'song' where 'verdict' was expected"):
        decode(msgpack.packb(song()), Verdict)


def test_msgpack_limits_refuse_oversized_strings_arrays_maps_ext_types_and_non_string_keys():
    """The decoder's msgpack limits hold inside a record well under the size limit."""
    assert decode(msgpack.packb(song(filename="f" * (1 << 20))), SongRef).filename == "f" * (1 << 20)
    with pytest.raises(SchemaError, match="not a msgpack message"):
        decode(msgpack.packb(song(filename="f" * ((1 << 20) + 1))), SongRef)
    assert len(decode(msgpack.packb(song(extra=[0] * (1 << 16))), SongRef).filename) == 1
    with pytest.raises(SchemaError, match="not a msgpack message"):
        decode(msgpack.packb(song(extra=[0] * ((1 << 16) + 1))), SongRef)
    assert decode(msgpack.packb(song(extra={str(i): 0 for i in range(1 << 10)})), SongRef).size == 1
    with pytest.raises(SchemaError, match="not a msgpack message"):
        decode(msgpack.packb(song(extra={str(i): 0 for i in range(1 + (1 << 10))})), SongRef)
    with pytest.raises(SchemaError, match="not a msgpack message"):
        decode(msgpack.packb(song(extra=msgpack.ExtType(1, b"x"))), SongRef)
    with pytest.raises(SchemaError, match="not a msgpack message"):
        decode(msgpack.packb({**song(), 1: "x"}), SongRef)


def test_bools_are_not_numbers_and_wrong_types_are_named():
    with pytest.raises(SchemaError, match="song.size: expected int, got bool"):
        decode(msgpack.packb(song(size=True)), SongRef)
    with pytest.raises(SchemaError, match="song.produced_at: expected float, got bool"):
        decode(msgpack.packb(song(produced_at=True)), SongRef)
    with pytest.raises(SchemaError, match="song.size: expected int, got str"):
        decode(msgpack.packb(song(size="big")), SongRef)
    assert decode(msgpack.packb(song(produced_at=3)), SongRef).produced_at == 3


def prediction(**kw):
    from shared.schemas import Prediction

    d = {**Prediction(song_id="a", filename="f", index=0, last=True, probabilities=[0.25, 1],
                      genres=["rock", "pop"]).to_dict(), **kw}
    return msgpack.packb(d, use_bin_type=True)


def verdict(**kw):
    return msgpack.packb({**Verdict(song_id="a", filename="f", status="ok", genre="rock", confidence=1.0,
                                    probabilities={"rock": 0.75, "pop": 0}).to_dict(), **kw},
                         use_bin_type=True)


def test_lists_and_maps_of_numbers_and_names_are_checked_element_by_element():
    from shared.schemas import Prediction

    p = decode(prediction(), Prediction)
    assert p.probabilities == [0.25, 1] and p.genres == ["rock", "pop"]
    for bad in (["x"], [True], [None]):
        with pytest.raises(SchemaError, match="prediction.probabilities: expected a list of numbers"):
            decode(prediction(probabilities=bad), Prediction)
    with pytest.raises(SchemaError, match="prediction.genres: expected a list of strings"):
        decode(prediction(genres=["rock", 1]), Prediction)
    assert decode(verdict(), Verdict).probabilities == {"rock": 0.75, "pop": 0}
    for bad in ({"rock": "x"}, {"rock": True}, {b"rock": 0.5}):
        with pytest.raises(SchemaError, match="verdict.probabilities: expected a map of names to numbers"):
            decode(verdict(probabilities=bad), Verdict)


def test_verdict_status_is_ok_or_error():
    assert decode(verdict(status="error", error="boom"), Verdict).status == "error"
    assert decode(verdict(), Verdict).status == "ok"
    with pytest.raises(SchemaError, match="verdict status 'OK' must be 'ok' or 'error'"):
        decode(verdict(status="OK"), Verdict)


def test_verdict_identity_ignores_float_noise_and_wall_clock_but_not_values():
    v = Verdict(song_id="a", filename="f", status="ok", genre="rock", confidence=0.5,
                probabilities={"rock": 0.3, "pop": 0.7}, votes=["rock", "pop"], chunk_count=2,
                model_version="m1", timings={"classify": 1.0}, produced_at=1.0, verdict_at=2.0)

    def replay(**kw):
        base = dict(v.__dict__)
        base.update(kw)
        return Verdict(**base)

    same = replay(confidence=0.5 + 4e-7, probabilities={"pop": 0.7, "rock": 0.3 + 4e-6},
                  timings={"classify": 9.0}, produced_at=5.0, verdict_at=6.0)
    assert same.identity() == v.identity()
    for changed in (replay(confidence=0.500002), replay(probabilities={"rock": 0.30002, "pop": 0.7}),
                    replay(probabilities={"rock": 0.7, "pop": 0.3}), replay(votes=["pop", "rock"]),
                    replay(chunk_count=3), replay(model_version="m2"), replay(error="x"),
                    replay(genre="pop"), replay(status="error"), replay(song_id="b")):
        assert changed.identity() != v.identity()


def test_song_size_and_chunk_index_may_be_zero_not_negative():
    assert decode(msgpack.packb(song(size=0)), SongRef).size == 0
    with pytest.raises(SchemaError, match="^size must not be negative$"):
        decode(msgpack.packb(song(size=-1)), SongRef)
    c = Chunk(song_id="s", filename="f", index=0, last=True, sample_rate=22050, n_samples=3,
              pcm=np.zeros(3, np.float32))
    assert decode(c.encode(), Chunk).index == 0
    c.index = -1
    with pytest.raises(SchemaError, match="^chunk index must not be negative$"):
        decode(c.encode(), Chunk)
    with pytest.raises(SchemaError, match="^chunk index must not be negative$"):
        decode(feats(index=-1).encode(), Features)
    assert decode(feats(index=0).encode(), Features).index == 0


def test_pcm_is_one_dimensional_unless_the_chunk_carries_an_error():
    bad = Chunk(song_id="s", filename="f", index=0, last=True, sample_rate=22050, n_samples=4,
                pcm=np.zeros((2, 2), np.float32))
    with pytest.raises(SchemaError, match=r"pcm must be 1-D, got shape \(2, 2\)"):
        decode(bad.encode(), Chunk)
    failed = Chunk(song_id="s", filename="f", index=2, last=True, sample_rate=22050, n_samples=0,
                   error="decoder failed")
    g = decode(failed.encode(), Chunk)
    assert g.error == "decoder failed" and g.pcm.shape == (0,)


def test_a_dead_letter_round_trips():
    from shared.schemas import DeadLetter

    d = DeadLetter(service="chunker", topic="songs", partition=1, offset=7, reason="bad", key="k",
                   payload_head=b"\x00\xff")
    g = decode(d.encode(), DeadLetter)
    assert (g.service, g.offset, g.payload_head) == ("chunker", 7, b"\x00\xff")


def array_map(shape, data, dtype="float32", **extra):
    return {"dtype": dtype, "shape": shape, "data": data, **extra}


@pytest.mark.parametrize("shape", [[3], [1, 3], [1, 1, 3], [0], [10_000_000, 0], [0, 10_000_000, 0]])
def test_arrays_of_rank_1_to_3_with_sizes_up_to_ten_million_unpack(shape):
    from shared.schemas import unpack_array

    n = int(np.prod(shape))
    a = unpack_array(array_map(shape, np.arange(n, dtype=np.float32).tobytes()), "x")
    assert list(a.shape) == shape and a.dtype == np.float32


@pytest.mark.parametrize("d, reason", [
    (array_map([1, 1, 1, 1], b"\0" * 4), r"x: bad shape \[1, 1, 1, 1\]"),
    (array_map([], b"\0" * 4), r"x: bad shape \[\]"),
    (array_map([-1], b""), r"x: bad shape \[-1\]"),
    (array_map([2.0], b"\0" * 8), r"x: bad shape \[2.0\]"),
    (array_map([10_000_001, 0], b""), r"x: bad shape \[10000001, 0\]"),
    (array_map((1,), b"\0" * 4), r"x: bad shape \(1,\)"),
    (array_map([1], "abcd"), "x: data must be bytes"),
    (array_map([1], b"\0" * 4, extra=1), "x: expected an array map with dtype, shape, data"),
    (["dtype", "shape", "data"], "x: expected an array map with dtype, shape, data"),
])
def test_malformed_array_maps_are_refused_with_their_reason(d, reason):
    from shared.schemas import unpack_array

    with pytest.raises(SchemaError, match=reason):
        unpack_array(d, "x")


def test_a_bad_array_in_a_record_is_named_by_its_field():
    d = Chunk(song_id="s", filename="f", index=0, last=True, sample_rate=22050, n_samples=1,
              pcm=np.zeros(1, np.float32)).to_dict(1)  # v1: the raw float32 array map
    d["pcm"]["shape"] = [1, 1, 1, 1]
    with pytest.raises(SchemaError, match=r"pcm: bad shape"):
        decode(msgpack.packb(d, use_bin_type=True), Chunk)
