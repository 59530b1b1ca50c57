"""Pooling several sources and scoring them separately and together (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.evaluation import (
    LabelledChunks, concat_chunks, format_table, pool_sources, score, select, songs_per_source,
)
from tests.fixtures.models import fake_chunk


def _chunks(songs: list[tuple[str, str, int]]) -> LabelledChunks:
    """(song id, genre, number of chunks) -> chunks in song order."""
    feats, labels, ids = [], [], []
    for k, (song, genre, n) in enumerate(songs):
        feats += [fake_chunk("a", 10 * k + c) for c in range(n)]
        labels += [genre] * n
        ids += [song] * n
    return LabelledChunks(feats, labels, ids, [1000] * len(ids))


def _onehot(genres: list[str], predicted: list[str]) -> np.ndarray:
    return np.array([[0.9 if g == p else 0.1 / (len(genres) - 1) for g in genres] for p in predicted])


def test_pool_sources_prefixes_ids_and_labels_each_chunk():
    real = _chunks([("pop/1.mp3", "pop", 2), ("rock/1.mp3", "rock", 1)])
    midi = _chunks([("pop/1.mp3", "pop", 1)])  # the same id in another source is another song
    chunks, groups = pool_sources([("real", real, ["artist:x", "artist:x", "artist:y"]), ("midi", midi, ["artist:x"])])
    assert chunks.songs == ["real:pop/1.mp3"] * 2 + ["real:rock/1.mp3", "midi:pop/1.mp3"]
    assert groups == ["real:artist:x"] * 2 + ["real:artist:y", "midi:artist:x"]
    assert chunks.sources == ["real"] * 3 + ["midi"]
    assert chunks.labels == ["pop", "pop", "rock", "pop"] and chunks.n_samples == [1000] * 4
    assert songs_per_source(chunks) == {"real": 2, "midi": 1}
    # one source stays as it was: single-dataset runs are unchanged
    same, g = pool_sources([("real", real, ["a", "a", "b"])])
    assert same is real and g == ["a", "a", "b"] and same.sources is None and songs_per_source(same) == {}
    with pytest.raises(ValueError, match="must differ"):
        pool_sources([("x", real, ["a"] * 3), ("x", midi, ["b"])])


def test_select_and_concat_keep_every_per_chunk_list():
    chunks, _ = pool_sources([("r", _chunks([("s", "pop", 2)]), ["g", "g"]), ("m", _chunks([("t", "rock", 1)]), ["h"])])
    sub = select(chunks, [2, 0])
    assert (sub.songs, sub.labels, sub.sources) == (["m:t", "r:s"], ["rock", "pop"], ["m", "r"])
    both = concat_chunks([sub, select(chunks, [1])])
    assert both.songs == ["m:t", "r:s", "r:s"] and both.sources == ["m", "r", "r"]
    assert concat_chunks([sub, _chunks([("u", "pop", 1)])]).sources is None  # unknown for the plain part


def test_score_reports_each_source_and_the_pool():
    genres = ["classical", "pop", "rock"]
    real = _chunks([("1", "pop", 2), ("2", "rock", 3)])
    midi = _chunks([("1", "pop", 1), ("2", "classical", 3)])
    chunks, _ = pool_sources([("real", real, ["a"] * 5), ("midi", midi, ["b"] * 4)])
    # real: both songs right, one rock chunk wrong; midi: the pop song wrong, classical right by 2 votes to 1
    predicted = ["pop", "pop", "rock", "rock", "pop", "rock", "classical", "classical", "pop"]
    rep = score(_onehot(genres, predicted), chunks, genres)
    assert (rep["songs"], rep["songs_correct"], rep["chunks"]) == (4, 3, 9)
    assert rep["song_accuracy"] == 0.75 and rep["chunk_accuracy"] == 0.6667
    assert list(rep["sources"]) == ["real", "midi"]
    r, m = rep["sources"]["real"], rep["sources"]["midi"]
    assert (r["song_accuracy"], r["chunk_accuracy"], r["songs"], r["chunks"]) == (1.0, 0.8, 2, 5)
    assert (m["song_accuracy"], m["chunk_accuracy"], m["songs"], m["chunks"]) == (0.5, 0.5, 2, 4)
    assert m["confusion"] == {"labels": genres, "matrix": [[1, 0, 0], [0, 0, 1], [0, 0, 0]]}
    assert [p["song"] for p in m["predictions"]] == ["midi:1", "midi:2"] and "sources" not in m
    table = format_table(rep | {"model_version": "v1"})
    assert "(4 songs, 9 chunks; real 2, midi 2)" in table
    lines = table.splitlines()
    assert lines[2].split() == ["model", "0.750", "0.667"]
    assert lines[3].split() == ["real", "1.000", "0.800"] and lines[4].split() == ["midi", "0.500", "0.500"]
    # a single source: no per-source part, the table as before
    plain = score(_onehot(genres, predicted[:5]), real, genres)
    assert "sources" not in plain and "real" not in format_table(plain)
