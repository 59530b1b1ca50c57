"""Cross-validation logic: folds by group, chunk positions, pooling over folds (with a
stand-in trainer; the real training runs in tests/integration/test_train_evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.crossval import (
    BASELINE, CrossValidationError, chunk_folds, chunk_positions, cross_validate, format_crossval, group_folds,
)
from shared.evaluation import LabelledChunks
from shared.featurespec import DEFAULT_SPEC, MEL_SPEC
from tests.fixtures.models import fake_chunk


def test_group_folds_keep_groups_whole_spread_genres_and_repeat():
    genres = [g for g in "abc" for _ in range(12)]
    groups = [f"{g}-artist{i // 2}" for g in "abc" for i in range(12)]  # 6 artists per genre, 2 songs each
    fold = group_folds(genres, groups, 3, seed=7)
    assert sorted(set(fold.tolist())) == [0, 1, 2]
    for artist in set(groups):
        assert len({f for f, a in zip(fold, groups) if a == artist}) == 1
    for k in range(3):
        assert [sum(1 for f, g in zip(fold, genres) if f == k and g == genre) for genre in "abc"] == [4, 4, 4]
    assert group_folds(genres, groups, 3, seed=7).tolist() == fold.tolist()
    assert group_folds(genres, groups, 3, seed=8).tolist() != fold.tolist()


def test_group_folds_refuse_what_cannot_be_split():
    with pytest.raises(CrossValidationError, match="3 groups cannot fill 5 folds"):
        group_folds(["a", "a", "b"], ["x", "y", "z"], 5)
    with pytest.raises(CrossValidationError, match="use --folds 3 or fewer"):
        group_folds(["a", "a", "b"], ["x", "y", "z"], 4)
    with pytest.raises(CrossValidationError, match="1 groups cannot fill 2 folds; add songs by other artists"):
        group_folds(["a", "b"], ["x", "x"], 2)
    with pytest.raises(CrossValidationError, match="two genres"):
        group_folds(["a"] * 4, list("wxyz"), 2)
    with pytest.raises(CrossValidationError, match="at least 2 folds"):
        group_folds(["a", "b"], ["x", "y"], 1)


def test_chunk_folds_give_each_chunk_its_songs_fold():
    songs, genres, groups = [], [], []
    for i in range(24):
        n = 1 + i % 3
        songs += [f"s{i}"] * n
        genres += [("a", "b")[i % 2]] * n
        groups += [f"artist{i // 2}"] * n
    fold = chunk_folds(songs, genres, groups, 3, seed=1)
    per_song = group_folds([("a", "b")[i % 2] for i in range(24)], [f"artist{i // 2}" for i in range(24)], 3, seed=1)
    assert fold.tolist() == [per_song[int(s[1:])] for s in songs]


def test_chunk_positions_count_within_each_song():
    assert chunk_positions(["s", "s", "s", "t", "u", "u"]).tolist() == [0, 1, 2, 0, 0, 1]


class _SignModel:
    """Stands in for a trained artifact: genre 'a' when MFCC 1 is positive (how
    fake_chunk tells the genres apart), except on chunks marked as spoilt."""

    genres = ["a", "b"]

    def predict(self, features):
        out = []
        for f in features:
            a = float(np.mean(f.mfcc[:, 1])) > 0
            if f.mfcc[0, 2] > 1000:  # spoilt: predict the other genre
                a = not a
            out.append([0.9, 0.1] if a else [0.1, 0.9])
        return np.array(out)


def _dataset(chunks_per_song=4, spoil_from=2):
    feats, labels, songs, groups = [], [], [], []
    for g in "ab":
        for s in range(8):
            for c in range(chunks_per_song):
                f = fake_chunk(g, 100 * s + c + (0 if g == "a" else 5000))
                if c >= spoil_from:
                    f.mfcc[0, 2] = 2000.0
                feats.append(f)
                labels.append(g)
                songs.append(f"{g}/song{s}")
                groups.append(f"artist:{g}{s // 2}")  # 4 artists per genre
    return LabelledChunks(feats, labels, songs, [1000] * len(feats)), groups


def test_cross_validate_scores_every_song_once_on_models_that_never_saw_its_artist():
    chunks, groups = _dataset(chunks_per_song=4, spoil_from=2)
    calls = []

    def trainer(features, labels, grp, *, arch, seed, songs, n_samples, **kwargs):
        calls.append((arch, set(grp), set(songs), kwargs))
        return _SignModel()

    rounds = []
    report = cross_validate(chunks, groups, folds=4, archs=("default", "seed"), test_chunks=2, seed=3,
                            train=trainer, train_kwargs={"epochs": 5}, on_fold=lambda k, row: rounds.append(k))
    assert rounds == [0, 1, 2, 3] and len(calls) == 8
    all_groups = set(groups)
    held_out = []
    for k, row in enumerate(report["per_fold"]):
        arch, trained_groups, trained_songs, kwargs = calls[2 * k]
        assert arch == "default" and calls[2 * k + 1][0] == "seed"
        assert kwargs == {"epochs": 5, "spec": MEL_SPEC, "sources": None}
        assert calls[2 * k + 1][3] == {"epochs": 5, "spec": DEFAULT_SPEC, "sources": None}
        fold_groups = all_groups - trained_groups
        assert len(fold_groups) == 2  # one artist per genre and fold
        held_out += sorted(fold_groups)
        assert row["songs"] + len(trained_songs) == 16
    assert sorted(held_out) == sorted(all_groups)  # every artist held out exactly once
    # only the first 2 chunks of each held-out song are scored: the spoilt ones never are
    for name in ("default", "seed", BASELINE):
        m = report["models"][name]
        assert (m["songs"], m["songs_correct"]) == (16, 16)
        assert m["chunk_accuracy"] == 1.0
        assert sum(map(sum, m["confusion"]["matrix"])) == 16
    assert report["gains"]["default-seed"] == {"song_accuracy": 0.0, "fold_differences": [0.0] * 4,
                                               "folds_better": 0, "standard_error": 0.0}
    assert "default-baseline" in report["gains"] and report["test_chunks"] == 2
    assert "4-fold cross-validation" in format_crossval(report)


def test_cross_validate_with_all_chunks_counts_the_spoilt_ones():
    chunks, groups = _dataset(chunks_per_song=4, spoil_from=3)
    report = cross_validate(chunks, groups, folds=2, archs=("default",), with_baseline=False,
                            train=lambda *a, **k: _SignModel())
    m = report["models"]["default"]
    assert m["chunk_accuracy"] == 0.75  # the 4th chunk of every song is predicted wrong
    assert m["song_accuracy"] == 1.0  # and out-voted
    assert list(report["models"]) == ["default"] and report["gains"] == {}


def test_cross_validate_scores_each_source_and_the_pool():
    from shared.evaluation import pool_sources

    real, real_groups = _dataset(chunks_per_song=2, spoil_from=2)  # never spoilt: every song right
    midi, midi_groups = _dataset(chunks_per_song=3, spoil_from=1)  # 2 of 3 chunks spoilt: every song wrong
    chunks, groups = pool_sources([("real", real, real_groups), ("midi", midi, midi_groups)])
    seen = []

    def trainer(features, *a, sources, **k):
        seen.append((len(features), list(sources)))
        return _SignModel()

    report = cross_validate(chunks, groups, folds=4, archs=("default",), train=trainer)
    # each fold's training side tells the trainer which source each chunk came from (source_genre_mask)
    assert len(seen) == 4 and all(n == len(src) and set(src) == {"real", "midi"} for n, src in seen)
    # the same artist names in both sources are different groups: 16 artists, each held out once
    assert sum(row["groups"] for row in report["per_fold"]) == 16
    for name in ("default", BASELINE):
        m = report["models"][name]
        assert m["songs"] == 32 and list(m["sources"]) == ["real", "midi"]
        assert sum(s["songs"] for s in m["sources"].values()) == 32
    m = report["models"]["default"]
    assert (m["song_accuracy"], m["chunk_accuracy"]) == (0.5, round((32 + 16) / 80, 4))
    assert m["sources"]["real"] == {"song_accuracy": 1.0, "chunk_accuracy": 1.0, "songs": 16, "songs_correct": 16,
                                    "confusion": {"labels": ["a", "b"], "matrix": [[8, 0], [0, 8]]}}
    assert (m["sources"]["midi"]["song_accuracy"], m["sources"]["midi"]["chunk_accuracy"]) == (0.0, round(16 / 48, 4))
    assert m["sources"]["midi"]["confusion"]["matrix"] == [[0, 8], [8, 0]]
    lines = format_crossval(report).splitlines()
    assert lines[3].split() == ["real", "1.000", "1.000", "(16", "songs)"]
    assert lines[4].split() == ["midi", "0.000", "0.333", "(16", "songs)"]
