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
