"""The `pretrained` architecture end to end on generated chunks: train a head on cached
musicnn embeddings, assemble one artifact reading the raw inputs, save, load, predict."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shared import musicnn
from shared.features import extract_chunk, get_extractor
from shared.featurespec import DEFAULT_SPEC, MEL_SPEC
from shared.model import MODEL_FILE, PRETRAINED_NETWORKS, ModelArtifact
from shared.training import predict_chunks, train_model
from tests.fixtures.audio import make_song

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("musicnn") is None,
                       reason="musicnn weights not installed (pip install --no-deps musicnn==0.1.0)"),
    pytest.mark.slow,
]

GENRES = ("clicks", "drone")  # bright noise bursts over a thin tone / a low harmonic drone
PER_GENRE = 4


@pytest.fixture(scope="module")
def chunks():
    """(features, labels, groups): PER_GENRE 30-s chunks of each genre, one song each."""
    extract = get_extractor("builtin")
    features, labels, groups = [], [], []
    for g, genre in enumerate(GENRES):
        for k in range(PER_GENRE):
            pcm = make_song(genre, MEL_SPEC.chunk_seconds, seed=300 + 17 * g + k)
            features.append(extract_chunk(pcm, MEL_SPEC, extract))
            labels.append(genre)
            groups.append(f"{genre}-song{k}")
    return features, labels, groups


def _all_layers(layer):
    yield layer
    for sub in [*getattr(layer, "layers", ()), *([layer.layer] if hasattr(layer, "layer") else [])]:
        yield from _all_layers(sub)


def _cached(cache: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (cache / "embeddings").rglob("*.npy")}


@pytest.fixture(scope="module")
def trained(chunks, tmp_path_factory):
    """The artifact, trained with the embedding cache in a fresh folder (GENRE_CACHE_DIR)."""
    cache = tmp_path_factory.mktemp("genre-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENRE_CACHE_DIR", str(cache))
        features, labels, groups = chunks
        artifact = train_model(features, labels, groups, arch="pretrained", spec=MEL_SPEC, epochs=3,
                               validation_fraction=0.25)
        yield artifact, cache


@pytest.fixture(scope="module")
def loaded(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained-model")
    trained[0].save(folder)
    return ModelArtifact.load(folder, expected_spec=MEL_SPEC)


def test_artifact_reads_the_raw_inputs_and_records_the_network(trained) -> None:
    artifact, _ = trained
    assert set(artifact.input_names) == {"mfcc", "peaks", "valleys", "logmel"}
    meta = artifact.metadata
    assert meta["arch"] == "pretrained" and artifact.genres == sorted(GENRES)
    assert meta["feature_spec"]["id"] == MEL_SPEC.id and MEL_SPEC.version == 2
    assert meta["pretrained"]["networks"] == list(PRETRAINED_NETWORKS) == ["MSD_musicnn"]
    assert musicnn.WHEEL in meta["pretrained"]["weights"]
    assert meta["frames_per_chunk"]["logmel"] == musicnn.CHUNK_FRAMES
    assert "embedding" not in meta["frames_per_chunk"] and "logmel" not in meta["preprocessing"]["normalisation"]
    assert meta["training"]["chunks_validation"] == 2 and meta["training"]["epochs_run"] >= 1
    artifact.model.get_layer("musicnn"), artifact.model.get_layer("head")  # both parts, one network


def test_save_and_safe_mode_load_give_the_same_predictions(chunks, trained, loaded) -> None:
    import keras

    features = chunks[0]
    artifact, _ = trained
    assert loaded.version == artifact.version and loaded.input_names == artifact.input_names
    before = artifact.predict(features)
    assert before.shape == (len(features), 2)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(loaded.predict(features), before)
    # ModelArtifact.load reads with safe_mode=True; no Lambda or custom layer needs it off
    model = keras.saving.load_model(str(loaded.path / MODEL_FILE), compile=False, safe_mode=True)
    kinds = {type(layer).__name__ for layer in _all_layers(model)}
    assert {"Conv2D", "BatchNormalization", "TimeDistributed", "Dense"} <= kinds and "Lambda" not in kinds


def test_predict_chunks_equals_predict(chunks, trained, loaded, monkeypatch) -> None:
    features = chunks[0]
    artifact, cache = trained
    monkeypatch.setenv("GENRE_CACHE_DIR", str(cache))
    before = _cached(cache)
    for art in (artifact, loaded):
        np.testing.assert_allclose(predict_chunks(art, features, slice_size=3), art.predict(features), atol=1e-5)
    assert _cached(cache) == before  # served from the training run's embeddings


def test_embedding_cache_holds_one_file_per_chunk_and_is_reused(chunks, trained, monkeypatch) -> None:
    features, labels, groups = chunks
    _, cache = trained
    first = _cached(cache)
    assert len(first) == len(features)
    monkeypatch.setenv("GENRE_CACHE_DIR", str(cache))
    again = train_model(features, labels, groups, arch="pretrained", spec=MEL_SPEC, epochs=1,
                        validation_fraction=0.25)
    assert set(again.input_names) == {"mfcc", "peaks", "valleys", "logmel"}
    assert _cached(cache) == first  # nothing added, nothing rewritten


def test_frozen_network_keeps_the_checkpoint_weights(trained, loaded) -> None:
    reference = musicnn.build_patch_network("MSD_musicnn", musicnn.read_checkpoint("MSD_musicnn"))
    ckpt = musicnn.read_checkpoint("MSD_musicnn")
    for art in (trained[0], loaded):
        embedder = art.model.get_layer("musicnn")
        assert not embedder.trainable_weights
        patch_net = embedder.get_layer("msd_musicnn_patches").layer
        got, want = patch_net.get_weights(), reference.get_weights()
        assert len(got) == len(want) > 0
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(patch_net.get_layer("msd_musicnn_tags").get_weights()[0], ckpt["dense_1/kernel"])
        mean = patch_net.get_layer("msd_musicnn_input_bn").get_weights()[2]
        np.testing.assert_array_equal(mean, ckpt["batch_normalization/moving_mean"])


def test_v1_features_are_refused_with_a_log_mel_message(chunks, tmp_path, monkeypatch) -> None:
    features, labels, groups = chunks
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    v1 = extract_chunk(make_song("drone", DEFAULT_SPEC.chunk_seconds, seed=1), DEFAULT_SPEC, get_extractor("builtin"))
    assert v1.logmel is None
    no_mel = [replace(f, logmel=None) for f in features]
    with pytest.raises(ValueError, match="log-mel"):
        train_model([v1, *no_mel[1:]], labels, groups, arch="pretrained", spec=DEFAULT_SPEC, epochs=1)
    with pytest.raises(ValueError, match="log-mel"):  # a v2 spec, but chunks without one
        train_model(no_mel, labels, groups, arch="pretrained", spec=MEL_SPEC, epochs=1)
    assert not list(tmp_path.rglob("*.npy"))
