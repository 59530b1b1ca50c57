"""The model artifact: save/load round trip, version, load errors, preprocessing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from shared.featurespec import DEFAULT_SPEC, ChunkFeatures, FeatureSpec
from shared.model import MAX_PREDICT_BATCH, ModelArtifact, ModelLoadError, device, loudness_normalise, stack_features
from shared.training import train_model
from tests.fixtures.models import SHAPES, fake_chunk, fake_set


@pytest.fixture(scope="module")
def small_artifact():
    feats, labels, groups = fake_set()
    return train_model(feats, labels, groups, arch="tiny", epochs=4, seed=1, name="unit", batch_size=8)


def test_round_trip_same_predictions(small_artifact, tmp_path):
    feats, _, _ = fake_set(seed=5)
    before = small_artifact.predict(feats)
    small_artifact.save(tmp_path / "m")
    loaded = ModelArtifact.load(tmp_path / "m")
    after = loaded.predict(feats)
    assert after.shape == (len(feats), 2) and after.dtype == np.float32
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    assert loaded.genres == ["a", "b"]
    assert loaded.version == small_artifact.version and loaded.version.startswith("unit-")
    assert loaded.spec == DEFAULT_SPEC
    np.testing.assert_allclose(after.sum(axis=1), 1.0, atol=1e-5)
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    for key in ("genres", "feature_spec", "frames_per_chunk", "preprocessing", "arch", "training",
                "data_fingerprint", "metrics", "version"):
        assert key in meta


def test_predict_deterministic_and_batched(small_artifact):
    feats, _, _ = fake_set(songs=3, chunks=1, seed=9)
    one = np.concatenate([small_artifact.predict([f]) for f in feats])
    whole = small_artifact.predict(feats)
    np.testing.assert_allclose(one, whole, atol=1e-5)
    np.testing.assert_array_equal(small_artifact.predict(feats), whole)
    assert small_artifact.predict([]).shape == (0, 2)
    big = small_artifact.predict([feats[0]] * (MAX_PREDICT_BATCH + 3))
    assert big.shape == (MAX_PREDICT_BATCH + 3, 2)
    np.testing.assert_allclose(big, np.repeat(big[:1], len(big), axis=0), atol=1e-5)


def test_version_is_reproducible():
    feats, labels, groups = fake_set(songs=4, chunks=1)
    v1 = train_model(feats, labels, groups, arch="tiny", epochs=2, seed=3, name="rep").version
    v2 = train_model(feats, labels, groups, arch="tiny", epochs=2, seed=3, name="rep").version
    assert v1 == v2


def test_label_order_independent_of_input_order():
    feats, labels, groups = fake_set(genres=("c", "a", "b"), songs=3, chunks=1)
    order = np.random.RandomState(0).permutation(len(feats))
    art = train_model([feats[i] for i in order], [labels[i] for i in order], [groups[i] for i in order],
                      arch="tiny", epochs=1, seed=0)
    assert art.genres == ["a", "b", "c"]
    assert art.predict(feats[:2]).shape == (2, 3)


def test_device_reports_cpu_or_gpu(small_artifact):
    assert device() in ("CPU", "GPU:0")
    assert small_artifact.device == device()


def test_chunk_loudness_normalisation_removes_gain():
    quiet, loud = fake_chunk("a", 7, gain=0.25), fake_chunk("a", 7, gain=2.0)
    frames = {k: v[0] for k, v in SHAPES.items()}
    q = loudness_normalise(stack_features([quiet], frames), "chunk")
    lo = loudness_normalise(stack_features([loud], frames), "chunk")
    np.testing.assert_allclose(q["mfcc"], lo["mfcc"], atol=1e-4)
    for k in ("peaks", "valleys"):
        np.testing.assert_allclose(q[k], lo[k], atol=2e-2)


def test_short_features_are_padded(small_artifact):
    f = fake_chunk("a", 1)
    short = ChunkFeatures(f.mfcc[:100], f.peaks[:200], f.valleys[:200])
    assert small_artifact.predict([short]).shape == (1, 2)
    bad = ChunkFeatures(f.mfcc[:, :5], f.peaks, f.valleys)
    with pytest.raises(ValueError, match="mfcc"):
        small_artifact.predict([bad])


def test_load_errors(small_artifact, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelArtifact.load(tmp_path / "nope")
    folder = small_artifact.save(tmp_path / "m")
    other = tmp_path / "m2"
    shutil.copytree(folder, other)
    (other / "model.keras").unlink()
    with pytest.raises(ModelLoadError, match="no model.keras"):
        ModelArtifact.load(other)
    shutil.rmtree(other)
    shutil.copytree(folder, other)
    (other / "metadata.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        ModelArtifact.load(other)
    meta = json.loads((folder / "metadata.json").read_text())
    meta["feature_spec"]["sample_rate"] = 44100
    (other / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="does not match"):
        ModelArtifact.load(other)
    with pytest.raises(ModelLoadError, match="trained on features"):
        ModelArtifact.load(folder, expected_spec=FeatureSpec(sample_rate=16000))
    meta = json.loads((folder / "metadata.json").read_text())
    meta["genres"] = ["a"]
    (other / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="outputs"):
        ModelArtifact.load(other)


def test_synthetic_model_classifies_generated_files(synthetic_model, song_factory):
    from shared.audio import chunk_song
    from shared.features import extract_features

    art = ModelArtifact.load(synthetic_model)
    assert art.genres == ["clicks", "drone"] and art.metadata["arch"] == "tiny"
    for genre in art.genres:
        for seed, seconds in ((501, 45.0), (502, 31.0)):
            path = song_factory(f"{genre}-{seed}.flac", genre, seconds, seed)
            feats = [extract_features(c.pcm, art.spec.sample_rate) for c in chunk_song(path, art.spec)]
            probs = art.predict(feats)
            assert (probs.argmax(axis=1) == art.genres.index(genre)).all(), (genre, probs)


@pytest.mark.parametrize("arch,inputs", [
    ("merged", {"mfcc", "peaks", "valleys"}), ("mfcc", {"mfcc"}),
    ("contrast", {"peaks", "valleys"}), ("seed", {"mfcc", "peaks"}), ("tiny", {"mfcc", "peaks", "valleys"}),
])
def test_architectures_build(arch, inputs):
    from shared.model import build_network

    frames = {k: v[0] for k, v in SHAPES.items()}
    widths = {k: v[1] for k, v in SHAPES.items()}
    net = build_network(arch, 5, frames, widths)
    assert {t.name for t in net.inputs} == inputs
    assert tuple(net.outputs[0].shape) == (None, 5)


def test_seed_architecture_is_the_ancestors():
    from shared.model import build_network

    frames = {k: v[0] for k, v in SHAPES.items()}
    widths = {k: v[1] for k, v in SHAPES.items()}
    net = build_network("seed", 8, frames, widths)
    conv1, conv2, pconv = net.get_layer("mfcc_conv1"), net.get_layer("mfcc_conv2"), net.get_layer("peaks_conv")
    assert (conv1.filters, conv1.kernel_size) == (100, (4,)) and (conv2.filters, conv2.kernel_size) == (20, (4,))
    assert (pconv.filters, pconv.kernel_size, pconv.strides) == (100, (3,), (4,))
    assert net.get_layer("mfcc_lstm").units == 300 and net.get_layer("peaks_lstm").units == 100
    assert net.get_layer("dense").units == 1000


def test_seed_trains_and_round_trips(tmp_path):
    feats, labels, groups = fake_set(songs=3, chunks=1)
    art = train_model(feats, labels, groups, arch="seed", epochs=1, seed=0, validation_fraction=0.0, batch_size=8)
    assert art.metadata["preprocessing"]["loudness"] == "none"
    art.save(tmp_path / "seed")
    np.testing.assert_allclose(ModelArtifact.load(tmp_path / "seed").predict(feats), art.predict(feats), atol=1e-6)
