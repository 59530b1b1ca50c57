"""shared/featurespec.py: spec ids, shapes, the registry and which features a model accepts."""

from __future__ import annotations

import numpy as np
import pytest

from shared.featurespec import (
    DEFAULT_SPEC,
    KNOWN_SPECS,
    MEL_SPEC,
    ChunkFeatures,
    FeatureSpec,
    SpecMismatch,
    require_compatible_spec,
    require_feature_shapes,
    spec_by_id,
    spec_by_version,
)

V1_ID = "qm-mfcc20+bbc-contrast7/v1@22050Hz/30s"
V2_ID = "qm-mfcc20+bbc-contrast7+logmel96/v2@22050Hz/30s"
# feature_spec of a v1 model's metadata.json, as written before spec v2 existed
OLD_V1 = {
    "chunk_seconds": 30.0, "contrast_block": 1024, "contrast_step": 512, "dtype": "float32",
    "frame_convention": "sonic-annotator-1.6: centred frames at k*step, ceil(N/1024) host blocks",
    "id": V1_ID, "mfcc_block": 2048, "mfcc_step": 1024, "n_bands": 7, "n_mfcc": 20,
    "name": "qm-mfcc20+bbc-contrast7", "sample_rate": 22050, "version": 1,
}


def _arrays(spec: FeatureSpec) -> dict[str, np.ndarray]:
    return {k: np.zeros(s, np.float32) for k, s in spec.feature_shapes().items()}


def test_ids_and_registry() -> None:
    assert DEFAULT_SPEC.id == V1_ID and MEL_SPEC.id == V2_ID
    assert set(KNOWN_SPECS) == {V1_ID, V2_ID}
    assert spec_by_id(V2_ID) is MEL_SPEC and spec_by_id("other/v9") is None
    assert spec_by_version(1) is DEFAULT_SPEC and spec_by_version(2) is MEL_SPEC
    with pytest.raises(ValueError, match="valid: 1 .*, 2 "):
        spec_by_version(3)


def test_shapes_add_logmel_only_under_v2() -> None:
    v1 = {"mfcc": (646, 20), "peaks": (1292, 7), "valleys": (1292, 7)}
    assert DEFAULT_SPEC.feature_shapes() == v1
    assert MEL_SPEC.feature_shapes() == {**v1, "logmel": (1876, 96)}
    assert MEL_SPEC.feature_shapes(10 * 22050)["logmel"] == (1 + 160000 // 256, 96)


def test_v1_metadata_is_unchanged_and_old_metadata_loads() -> None:
    assert DEFAULT_SPEC.to_dict() == OLD_V1  # so v1 model versions (hashes over metadata) do not change
    old = FeatureSpec.from_dict(OLD_V1)
    assert old == DEFAULT_SPEC and old.mel_bands == 0 and "logmel" not in old.feature_shapes()
    again = FeatureSpec.from_dict(MEL_SPEC.to_dict())
    assert again == MEL_SPEC and again.id == V2_ID


def test_chunk_features_arrays_carry_logmel_only_when_present() -> None:
    a = _arrays(MEL_SPEC)
    assert set(ChunkFeatures(a["mfcc"], a["peaks"], a["valleys"]).arrays()) == {"mfcc", "peaks", "valleys"}
    assert set(ChunkFeatures(**a).arrays()) == {"mfcc", "peaks", "valleys", "logmel"}


def test_a_v1_model_accepts_v1_and_v2_features() -> None:
    for got in (DEFAULT_SPEC, MEL_SPEC):
        require_compatible_spec(got.id, DEFAULT_SPEC)
        require_feature_shapes(_arrays(got), DEFAULT_SPEC)  # the extra logmel is ignored


def test_a_v2_model_refuses_v1_features_and_says_what_to_do() -> None:
    require_compatible_spec(V2_ID, MEL_SPEC)
    require_feature_shapes(_arrays(MEL_SPEC), MEL_SPEC)
    with pytest.raises(SpecMismatch, match=r"lack the log-mel input.*GENRE_FEATURE_SPEC=2") as exc:
        require_compatible_spec(V1_ID, MEL_SPEC)
    assert V1_ID in str(exc.value) and V2_ID in str(exc.value)
    with pytest.raises(SpecMismatch, match="lack the log-mel input"):
        require_feature_shapes(_arrays(DEFAULT_SPEC), MEL_SPEC)


def test_unknown_specs_and_wrong_shapes_are_refused() -> None:
    with pytest.raises(SpecMismatch, match="re-extract"):
        require_compatible_spec("other-spec", DEFAULT_SPEC)
    with pytest.raises(SpecMismatch, match="re-extract"):
        require_compatible_spec(FeatureSpec(sample_rate=16000).id, DEFAULT_SPEC)
    bad = {**_arrays(MEL_SPEC), "logmel": np.zeros((1876, 40), np.float32)}
    with pytest.raises(SpecMismatch, match="shapes"):
        require_feature_shapes(bad, MEL_SPEC)
    with pytest.raises(SpecMismatch, match="shapes"):
        require_feature_shapes({k: v for k, v in bad.items() if k != "peaks"}, DEFAULT_SPEC)
