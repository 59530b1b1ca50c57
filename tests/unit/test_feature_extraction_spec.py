"""Training's cached extraction and `genre classify` compute the arrays of the spec they are given."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.feature_cache import extract_songs
from shared.features import extract_features
from shared.featurespec import DEFAULT_SPEC, MEL_SPEC, FeatureSpec
from shared.logmel import log_mel_chunk
from shared.pipeline import classify_file
from shared.settings import Settings
from tests.fixtures.audio import SR, make_song


def test_extract_songs_stores_and_reloads_the_log_mel_under_v2(song_factory, tmp_path: Path) -> None:
    path = song_factory("cache.flac", "drone", 62.0, seed=3)  # two whole chunks, a dropped tail
    (first,) = extract_songs([path], MEL_SPEC, root=tmp_path)
    assert not first.error and not first.cached and len(first.features) == 2
    assert {k: a.shape for k, a in first.features[0].arrays().items()} == MEL_SPEC.feature_shapes()
    pcm = make_song("drone", 62.0, seed=3)[: MEL_SPEC.chunk_samples]
    np.testing.assert_allclose(first.features[0].logmel, log_mel_chunk(pcm, SR), atol=1e-3)  # flac: 16-bit

    (again,) = extract_songs([path], MEL_SPEC, root=tmp_path)
    assert again.cached and again.n_samples == first.n_samples
    for a, b in zip(first.features, again.features):
        for k in MEL_SPEC.feature_shapes():
            np.testing.assert_array_equal(a.arrays()[k], b.arrays()[k])

    (v1,) = extract_songs([path], DEFAULT_SPEC, root=tmp_path)  # another cache key: computed, no log-mel
    assert not v1.cached and v1.features[0].logmel is None
    np.testing.assert_array_equal(v1.features[0].mfcc, first.features[0].mfcc)
    files = sorted(tmp_path.rglob("*.npz"))
    assert len(files) == 2
    keys = [set(np.load(f, allow_pickle=False).files) for f in files]
    assert sorted(map(sorted, keys)) == [["logmel", "mfcc", "n_samples", "peaks", "valleys"],
                                         ["mfcc", "n_samples", "peaks", "valleys"]]


class RecordingModel:
    """The parts of a ModelArtifact that classify_file uses; records what it is fed."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec, self.genres, self.version = spec, ["clicks", "drone"], f"rec-{spec.version}"
        self.seen: list = []

    def predict(self, batch):  # noqa: ANN001
        self.seen += batch
        return np.tile(np.float32([0.25, 0.75]), (len(batch), 1))


def test_classify_computes_the_log_mel_only_for_a_model_on_spec_v2(song_factory) -> None:
    path = song_factory("classify.flac", "drone", 30.0, seed=4)
    for spec in (MEL_SPEC, DEFAULT_SPEC):
        model = RecordingModel(spec)
        verdict = classify_file(path, model, extract_features, Settings())  # type: ignore[arg-type]
        assert verdict.status == "ok" and len(model.seen) == 1
        assert {k: a.shape for k, a in model.seen[0].arrays().items()} == spec.feature_shapes()
