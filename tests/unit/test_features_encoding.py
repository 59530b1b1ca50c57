"""Features schema v2: the log-mel in 16-bit fixed point, the Vamp arrays float32 (shared/schemas.py)."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from shared.features import extract_chunk, get_extractor
from shared.featurespec import MEL_SPEC
from shared.schemas import (
    FEATURES_SCHEMA_VERSION,
    FIXED16_LEVELS,
    Features,
    SchemaError,
    decode,
    pack_fixed16,
    unpack_fixed16,
)
from tests.fixtures.audio import make_song


@pytest.fixture(scope="module")
def mel_arrays() -> dict[str, np.ndarray]:
    """The spec-v2 arrays of a real 30-s extraction (generated audio)."""
    pcm = make_song("clicks", 30.0, seed=11)[: MEL_SPEC.chunk_samples]
    return extract_chunk(pcm, MEL_SPEC, get_extractor("builtin")).arrays()


def features(arrays: dict[str, np.ndarray], **kw: object) -> Features:
    return Features(song_id="s-1", filename="x.flac", index=2, last=False, spec_id=MEL_SPEC.id, arrays=arrays, **kw)


def test_v2_is_written_by_default_and_the_vamp_arrays_stay_bit_exact(mel_arrays):
    d = features(mel_arrays).to_dict()
    assert d["v"] == FEATURES_SCHEMA_VERSION == 2
    assert d["arrays"]["logmel"]["codec"] == "u16-affine"
    got = decode(msgpack.packb(d, use_bin_type=True), Features)
    for name in ("mfcc", "peaks", "valleys"):  # the contract with sonic-annotator: untouched
        np.testing.assert_array_equal(got.arrays[name], mel_arrays[name])
        assert got.arrays[name].dtype == np.float32


def test_the_log_mel_is_within_half_a_step_of_its_range(mel_arrays):
    x = mel_arrays["logmel"]
    got = decode(features(mel_arrays).encode(2), Features).arrays["logmel"]
    assert got.shape == x.shape and got.dtype == np.float32
    step = (float(x.max()) - float(x.min())) / FIXED16_LEVELS
    err = float(np.abs(got.astype(np.float64) - x).max())
    bound = step / 2 + 4 * float(np.finfo(np.float32).eps) * float(np.abs(x).max())
    assert 0 < err <= bound  # lossy, and no worse than the bound
    assert bound < 1e-4  # ~4e-5 on a log-mel of range 0-5
    assert float(got.min()) == pytest.approx(float(x.min()), abs=bound)
    assert float(got.max()) == pytest.approx(float(x.max()), abs=bound)


def test_v2_halves_the_log_mel_and_the_record_is_under_0_6_of_v1(mel_arrays):
    f = features(mel_arrays)
    v1, v2 = len(f.encode(1)), len(f.encode(2))
    assert v2 < 0.6 * v1
    assert len(msgpack.packb(pack_fixed16(mel_arrays["logmel"]), use_bin_type=True)) < 0.51 * mel_arrays["logmel"].nbytes


def test_an_old_v1_record_still_decodes_bit_for_bit(mel_arrays):
    got = decode(features(mel_arrays).encode(1), Features)
    for name, a in mel_arrays.items():
        np.testing.assert_array_equal(got.arrays[name], a)


@pytest.mark.parametrize("values", [np.full((4, 96), 2.5, np.float32), np.zeros((0, 96), np.float32),
                                    np.array([[0.0, np.inf], [1.0, 2.0]], np.float32),
                                    np.array([[np.nan, 1.0]], np.float32)])
def test_constant_empty_and_non_finite_arrays_come_back_exactly(values):
    got = unpack_fixed16(msgpack.unpackb(msgpack.packb(pack_fixed16(values), use_bin_type=True), raw=False), "logmel")
    np.testing.assert_array_equal(got, values)  # constant: a zero step is never written; the others travel as float32


def test_a_wide_range_keeps_its_relative_bound():
    x = np.linspace(-1e6, 1e6, 5000, dtype=np.float32).reshape(50, 100)
    got = unpack_fixed16(pack_fixed16(x), "x")
    assert float(np.abs(got.astype(np.float64) - x).max()) <= 2e6 / FIXED16_LEVELS / 2 * 1.001 + 0.25


def test_errors_and_empty_feature_maps_round_trip_in_both_versions():
    for version in (1, 2):
        e = decode(features({}, error="feature extraction failed: boom").encode(version), Features)
        assert e.error == "feature extraction failed: boom" and e.arrays == {}


def test_versions_not_read_are_refused_on_both_sides(mel_arrays):
    with pytest.raises(SchemaError, match="cannot be written"):
        features(mel_arrays).encode(3)
    d = features(mel_arrays).to_dict()
    with pytest.raises(SchemaError, match=r"schema version 3 is not supported \(expected 1 or 2\)"):
        decode(msgpack.packb({**d, "v": 3}, use_bin_type=True), Features)


def _logmel_map(mel_arrays, **change):
    d = features(mel_arrays).to_dict(2)
    return {**d, "arrays": {**d["arrays"], "logmel": {**d["arrays"]["logmel"], **change}}}


CORRUPT = {
    "codec": ({"codec": "u8-affine"}, r"arrays.logmel: codec 'u8-affine' is not supported"),
    "negative step": ({"step": -1e-4}, r"step positive"),
    "zero step": ({"step": 0.0}, r"step positive"),
    "nan lo": ({"lo": math.nan}, r"lo and step must be finite floats"),
    "integer lo": ({"lo": 0}, r"lo and step must be finite floats"),
    "cut data": ({"data": b"\0" * 10}, r"arrays.logmel: 10 bytes do not fill shape"),
    "bad shape": ({"shape": [-1, 96]}, r"arrays.logmel: bad shape"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_corrupt_fixed_point_map_is_a_schema_error_with_the_reason(mel_arrays, case):
    change, reason = CORRUPT[case]
    with pytest.raises(SchemaError, match=reason):
        decode(msgpack.packb(_logmel_map(mel_arrays, **change), use_bin_type=True), Features)


def test_a_fixed_point_map_with_keys_missing_or_added_is_refused(mel_arrays):
    d = features(mel_arrays).to_dict(2)
    for logmel in ({k: v for k, v in d["arrays"]["logmel"].items() if k != "step"},
                   {**d["arrays"]["logmel"], "extra": 1}):
        with pytest.raises(SchemaError, match="expected a fixed-point map"):
            decode(msgpack.packb({**d, "arrays": {**d["arrays"], "logmel": logmel}}, use_bin_type=True), Features)


def test_only_the_log_mel_is_written_in_fixed_point(mel_arrays):
    d = features(mel_arrays).to_dict(2)
    assert {k for k, a in d["arrays"].items() if "codec" in a} == {"logmel"}
    # a fixed-point map under a Vamp name is not read as one: the contract arrays are float32 only
    arrays = {**d["arrays"], "mfcc": pack_fixed16(mel_arrays["mfcc"])}
    with pytest.raises(SchemaError, match="arrays.mfcc: expected an array map"):
        decode(msgpack.packb({**d, "arrays": arrays}, use_bin_type=True), Features)
