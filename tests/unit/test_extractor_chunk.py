"""services/extractor: each chunk's features under the feature spec GENRE_FEATURE_SPEC names."""

from __future__ import annotations

import numpy as np
import pytest

from services.extractor.__main__ import build, chunk_features
from shared.features import extract_chunk, extract_features
from shared.featurespec import DEFAULT_SPEC, MEL_SPEC
from shared.logmel import log_mel_chunk
from shared.metrics import ServiceMetrics
from shared.schemas import Chunk, Features, decode
from shared.service import StartupError, StopFlag
from shared.settings import Settings

SETTINGS = Settings(topic_features="features")


def _chunk() -> Chunk:
    n = DEFAULT_SPEC.chunk_samples
    t = np.arange(n) / DEFAULT_SPEC.sample_rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    return Chunk(song_id="s", filename="s.flac", index=0, last=True, sample_rate=DEFAULT_SPEC.sample_rate,
                 n_samples=n, pcm=pcm)


def _features(spec, settings: Settings = SETTINGS) -> Features:  # noqa: ANN001
    (out,) = chunk_features(_chunk(), settings, spec, extract_features, ServiceMetrics("extractor"))
    assert out.topic == "features" and out.version == settings.features_schema
    return decode(out.message.encode(out.version), Features)  # what the classifier receives


def test_v2_emits_the_vamp_arrays_and_the_log_mel() -> None:
    f = _features(MEL_SPEC)
    assert not f.error and f.spec_id == MEL_SPEC.id
    assert {k: a.shape for k, a in f.arrays.items()} == MEL_SPEC.feature_shapes()
    vamp = extract_features(_chunk().pcm, DEFAULT_SPEC.sample_rate)
    for k, a in vamp.arrays().items():
        np.testing.assert_array_equal(f.arrays[k], a)  # the v1 arrays, bit for bit
    np.testing.assert_array_equal(f.arrays["logmel"], log_mel_chunk(_chunk().pcm, DEFAULT_SPEC.sample_rate))


def test_v1_emits_no_log_mel() -> None:
    f = _features(DEFAULT_SPEC)
    assert not f.error and f.spec_id == DEFAULT_SPEC.id
    assert set(f.arrays) == {"mfcc", "peaks", "valleys"}
    assert extract_chunk(_chunk().pcm, DEFAULT_SPEC, extract_features).logmel is None


def test_feature_spec_setting_defaults_to_2_and_a_bad_one_stops_the_extractor() -> None:
    assert Settings().feature_spec == 2 and Settings.from_env({"GENRE_FEATURE_SPEC": "1"}).feature_spec == 1
    with pytest.raises(ValueError, match="GENRE_FEATURE_SPEC"):
        Settings.from_env({"GENRE_FEATURE_SPEC": "v2"})
    with pytest.raises(StartupError, match="GENRE_FEATURE_SPEC=3: unknown feature spec version 3"):
        build(Settings(feature_spec=3), ServiceMetrics("extractor"), StopFlag())


def test_features_schema_2_writes_the_log_mel_in_16_bits_and_the_vamp_arrays_exactly() -> None:
    exact = _features(MEL_SPEC)  # the default, schema 1: float32 throughout
    assert Settings().features_schema == 1
    f = _features(MEL_SPEC, Settings(topic_features="features", features_schema=2))
    for k in ("mfcc", "peaks", "valleys"):
        np.testing.assert_array_equal(f.arrays[k], exact.arrays[k])
    err = np.abs(f.arrays["logmel"] - exact.arrays["logmel"])
    assert 0 < float(err.max()) < 1e-4


def test_an_unknown_features_schema_stops_the_extractor_at_startup() -> None:
    with pytest.raises(StartupError, match="GENRE_FEATURES_SCHEMA=3: not a features schema"):
        build(Settings(features_schema=3), ServiceMetrics("extractor"), StopFlag())
