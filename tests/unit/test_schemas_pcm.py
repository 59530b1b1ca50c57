"""The chunk's v2 PCM map and array-map fields of shared/schemas.py: what a malformed record
is refused with (its dead letter's reason), the limits at their boundaries, and the
empty and one-sample chunks."""

from __future__ import annotations

import numpy as np
import pytest

from shared import pcm_codec
from shared.schemas import (
    MAX_CHUNK_SAMPLES,
    Chunk,
    Message,
    SchemaError,
    pack_array,
    pack_pcm,
    unpack_pcm,
)

RATE = 22050


def pcm_map(**changes: object) -> dict:
    d = pack_pcm(np.linspace(-0.5, 0.5, 3000, dtype=np.float32), RATE)
    d.update(changes)
    return d


def chunk(pcm: np.ndarray, error: str = "") -> Chunk:
    return Chunk(song_id="s", filename="f.mp3", index=0, last=True, sample_rate=RATE,
                 n_samples=int(np.size(pcm)), pcm=pcm, error=error)


def test_a_map_with_other_keys_is_refused_naming_the_keys_and_the_field():
    with pytest.raises(SchemaError, match=r"^pcm: expected an encoded pcm map with block, codec, data, exponents, n$"):
        unpack_pcm({"n": 0})
    with pytest.raises(SchemaError, match=r"^x: expected an encoded pcm map with "):
        unpack_pcm([], "x")


@pytest.mark.parametrize("exponents, data", [("ab", b""), (b"", "ab"), (None, None)])
def test_payloads_that_are_not_bytes_are_refused(exponents, data):
    with pytest.raises(SchemaError, match=r"^pcm: exponents and data must be bytes$"):
        unpack_pcm(pcm_map(exponents=exponents, data=data))


def test_the_sample_count_limit_is_inclusive():
    with pytest.raises(SchemaError, match=rf"^pcm: {MAX_CHUNK_SAMPLES + 1} samples exceed the {MAX_CHUNK_SAMPLES} "):
        unpack_pcm(pcm_map(n=MAX_CHUNK_SAMPLES + 1))
    # n = MAX_CHUNK_SAMPLES passes the limit and reaches the codec, which finds the payload short
    with pytest.raises(SchemaError) as err:
        unpack_pcm(pcm_map(n=MAX_CHUNK_SAMPLES))
    assert "exceed" not in str(err.value)


@pytest.mark.parametrize("exponents, data, count", [(b"ab", b"c", 3), (b"", b"cd", 2), (b"a", b"", 1)])
def test_an_empty_chunk_with_a_payload_is_refused_with_its_size(exponents, data, count):
    with pytest.raises(SchemaError, match=rf"^pcm: an empty chunk carries {count} payload bytes$"):
        unpack_pcm(pcm_map(n=0, exponents=exponents, data=data))


def test_empty_and_one_sample_chunks_round_trip():
    empty = pack_pcm(np.zeros(0, np.float32), RATE)
    assert empty == {"codec": pcm_codec.CODEC, "n": 0, "block": pcm_codec.BLOCK, "exponents": b"", "data": b""}
    assert unpack_pcm(empty).shape == (0,)
    one = pack_pcm(np.array([0.25], np.float32), RATE)
    assert one["n"] == 1 and one["data"] != b""
    np.testing.assert_array_equal(unpack_pcm(one), [0.25])


def test_a_chunk_is_one_dimensional_unless_it_is_an_error():
    with pytest.raises(SchemaError, match=r"^pcm must be 1-D, got shape \(2, 2\)$"):
        chunk(np.zeros((2, 2), np.float32)).validate()
    chunk(np.zeros((2, 2), np.float32), error="decode failed").validate()


def test_a_chunk_holds_at_most_max_chunk_samples():
    chunk(np.zeros(MAX_CHUNK_SAMPLES, np.float32)).validate()
    with pytest.raises(SchemaError, match=rf"^pcm: {MAX_CHUNK_SAMPLES + 1} samples exceed the {MAX_CHUNK_SAMPLES} "):
        chunk(np.zeros(MAX_CHUNK_SAMPLES + 1, np.float32)).validate()


def test_an_array_field_is_one_array_map_or_a_map_of_names_to_array_maps():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(Message._unpack_arrays("x", pack_array(a), 1), a)
    both = Message._unpack_arrays("x", {"a": pack_array(a), "b": pack_array(a[0]), 7: pack_array(a)}, 1)
    assert sorted(both) == ["a", "b"]
    np.testing.assert_array_equal(both["b"], a[0])
    with pytest.raises(SchemaError, match=r"^x: expected an array map with dtype, shape, data$"):
        Message._unpack_arrays("x", [1, 2], 1)
    with pytest.raises(SchemaError, match=r"^x\.a: expected an array map with dtype, shape, data$"):
        Message._unpack_arrays("x", {"a": [1]}, 1)
    with pytest.raises(SchemaError, match=r"^x: bad shape"):
        Message._unpack_arrays("x", {"dtype": "float32", "shape": "no", "data": b""}, 1)
