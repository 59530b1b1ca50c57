"""Training internals: song windows for augmentation, class weights, metadata."""

from __future__ import annotations

import numpy as np

from shared.featurespec import DEFAULT_SPEC
from shared.training import _Windows, train_model
from tests.fixtures.models import fake_set


def test_windows_cross_chunk_boundaries_within_a_song():
    frames = {"mfcc": 4, "peaks": 8, "valleys": 8}
    # two songs: song A has chunks 0,1 (values 0.., 100..), song B one chunk
    raw = {
        "mfcc": np.stack([np.full((4, 2), v, np.float32) + np.arange(4)[:, None] for v in (0, 100, 200)]),
        "peaks": np.stack([np.full((8, 2), v, np.float32) for v in (0, 100, 200)]),
        "valleys": np.stack([np.full((8, 2), v, np.float32) for v in (0, 100, 200)]),
    }
    w = _Windows(raw, np.array([0, 1, 2]), ["A", "A", "B"], None, frames, DEFAULT_SPEC)
    assert w.example_start == [0, 4, 0]
    win = w.window(0, 2)  # starts half-way into chunk 0, ends in chunk 1
    assert win["mfcc"][:, 0].tolist() == [2, 3, 100, 101]
    assert win["peaks"][:, 0].tolist() == [0] * 4 + [100] * 4
    assert w.window(1, 3)["mfcc"][0, 0] == 100  # clipped at the song's end
    assert w.window(2, -3)["mfcc"][0, 0] == 200  # clipped at the start; song B alone


def test_windows_respect_real_samples_of_a_padded_tail():
    frames = {"mfcc": 4, "peaks": 8, "valleys": 8}
    raw = {k: np.zeros((2, v, 1), np.float32) for k, v in frames.items()}
    step = DEFAULT_SPEC.mfcc_step
    w = _Windows(raw, np.array([0, 1]), ["A", "A"], [4 * step, 1 * step], frames, DEFAULT_SPEC)
    assert w.song_len == [5]  # 4 full frames + 1 real frame of the tail
    assert w.window(1, 0) is not None
    assert w.window(0, 3)["mfcc"].shape == (4, 1)


def test_class_weights_balance_genres_and_metadata_is_complete():
    feats, labels, groups = fake_set(songs=6, chunks=1)
    # drop most of genre b: 6 a, 3 b
    keep = [i for i, l in enumerate(labels) if l == "a" or i % 2 == 0]
    art = train_model([feats[i] for i in keep], [labels[i] for i in keep], [groups[i] for i in keep],
                      arch="tiny", epochs=1, seed=0, validation_fraction=0.0)
    cw = art.metadata["training"]["class_weights"]
    assert cw["b"] > cw["a"]
    assert art.metadata["training"]["chunks_validation"] == 0
    assert art.metadata["data_fingerprint"].startswith("sha256:")
    assert "train_seconds" in art.metadata["created"]


def test_source_genre_mask_allows_each_source_only_its_own_genres():
    from shared.training import source_genre_mask

    y = np.array([0, 1, 2, 1, 3])
    mask = source_genre_mask(["real", "real", "midi", "midi", "midi"], y, 4)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]]
    assert source_genre_mask(["a", "a", "b", "b"], np.array([0, 1, 1, 0]), 2) is None  # both sources have both


def test_source_masked_crossentropy_ignores_only_the_disallowed_genres():
    import keras

    from shared.training import source_masked_crossentropy

    p = np.array([[0.2, 0.1, 0.7], [0.2, 0.1, 0.7]], np.float32)
    everything = np.array([[2, 1, 1]], np.float32)  # label 0, all allowed: plain cross-entropy
    without_2 = np.array([[2, 1, 0]], np.float32)  # label 0, genre 2 not in this source
    plain = float(keras.ops.convert_to_numpy(source_masked_crossentropy()(everything, p[:1]))[0])
    masked = float(keras.ops.convert_to_numpy(source_masked_crossentropy()(without_2, p[:1]))[0])
    assert np.isclose(plain, -np.log(0.2), atol=1e-5)
    assert np.isclose(masked, -np.log(0.2 / 0.3), atol=1e-5)  # the 0.7 on genre 2 costs nothing
    # and the mass on an allowed wrong genre still does
    wrong_allowed = np.array([[0.2, 0.7, 0.1]], np.float32)
    assert float(keras.ops.convert_to_numpy(source_masked_crossentropy()(without_2, wrong_allowed))[0]) > masked + 0.5
    half = float(keras.ops.convert_to_numpy(source_masked_crossentropy(0.5)(without_2, p[:1]))[0])
    assert np.isclose(half, -np.log(0.2 / (0.3 + 0.5 * 0.7)), atol=1e-5)


def test_training_with_sources_records_the_masked_loss_and_saves_without_it(tmp_path):
    from shared.model import ModelArtifact

    chunks, labels, groups = fake_set(genres=("a", "b", "c"), songs=4, seed=3)
    sources = ["x" if lab in ("a", "b") else "y" for lab in labels]
    sources = [s if lab != "b" or i % 2 else "y" for i, (s, lab) in enumerate(zip(sources, labels))]
    for members in (1, 2):
        art = train_model(chunks, labels, groups, arch="merged", epochs=2, seed=0, sources=sources, members=members)
        assert "own source" in art.metadata["training"]["loss"]
        probs = art.predict(chunks[:3])
        assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
        # the training loss is not part of the model: it loads in safe mode without it
        loaded = ModelArtifact.load(art.save(tmp_path / f"m{members}"))
        assert np.allclose(loaded.predict(chunks[:3]), probs, atol=1e-5)


def test_members_ship_the_mean_of_their_networks_and_load_in_safe_mode(tmp_path):
    from shared.model import ModelArtifact

    chunks, labels, groups = fake_set(genres=("a", "b"), songs=4, seed=5)
    art = train_model(chunks, labels, groups, arch="merged", epochs=2, seed=0, members=2)
    assert art.metadata["training"]["members"]["count"] == 2
    mean = art.model.get_layer("members_mean")
    nets = [art.model.get_layer(f"merged_member{i}") for i in range(2)]
    arrays = art.input_arrays(chunks[:4])
    each = [np.asarray(n(arrays, training=False)) for n in nets]
    assert not np.allclose(each[0], each[1])  # two seeds, two networks
    assert np.allclose(art.predict(chunks[:4]), np.mean(each, axis=0), atol=1e-5)
    assert mean is not None
    loaded = ModelArtifact.load(art.save(tmp_path / "m"))
    assert np.allclose(loaded.predict(chunks[:4]), art.predict(chunks[:4]), atol=1e-5)
