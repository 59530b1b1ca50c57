"""End to end on generated audio: dataset split -> train -> evaluate, through the CLI."""

from __future__ import annotations

import json

import pytest

from shared.cli import main
from tests.fixtures.audio import SYNTH_GENRES, make_song, write_audio


@pytest.fixture(scope="module")
def synth_collection(tmp_path_factory):
    """A flat <genre>/<artist>-<title>.wav collection: 10 songs per genre, 5 artists each."""
    root = tmp_path_factory.mktemp("collection")
    for g, genre in enumerate(SYNTH_GENRES):
        for k in range(10):
            seconds = (30.0, 45.0, 60.0)[k % 3]
            pcm = make_song(genre, seconds, seed=700 + 37 * g + k, gain_db=-4.0 * (k % 3))
            write_audio(root / genre / f"{genre}man{k % 5}-song{k}.wav", pcm)
    (root / "clicks" / "notes.txt").write_text("not audio")
    return root


def test_split_train_evaluate(synth_collection, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    assert main(["dataset", "split", str(synth_collection), str(data), "--test-fraction", "0.4",
                 "--group-by", "artist", "--json"]) == 0
    split = json.loads(capsys.readouterr().out)
    assert split["layout"] == "flat" and split["ignored_files"] == 1
    for genre in SYNTH_GENRES:
        assert split["counts"][genre] == {"train": 6, "test": 4}
    model = tmp_path / "models" / "synth"
    assert main(["train", str(data), "--out", str(model), "--arch", "tiny", "--epochs", "40",
                 "--jobs", "1", "--threads", "1"]) == 0
    assert (model / "model.keras").is_file() and (model / "metadata.json").is_file() and (model / "curves.png").is_file()
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["genres"] == sorted(SYNTH_GENRES)
    # validation split by artist: split.csv names the artists
    assert meta["training"]["groups_validation"] == 2
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["evaluate", str(model), str(data / "test"), "--json", "--out", str(out), "--no-seed",
                 "--gain", "-12", "--gain", "6", "--jobs", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["song_accuracy"] == 1.0
    assert report["chunk_accuracy"] >= 0.95
    assert report["songs"] == 8
    assert set(report["per_genre"]) == set(SYNTH_GENRES)
    assert report["gain_agreement"] == {"-12": 1.0, "+6": 1.0}
    assert report["baseline"]["song_accuracy"] >= 0.75
    assert report["seed"] is None
    for name in ("report.json", "confusion.png", "curves.png"):
        assert (out / name).is_file()
    # second run: features come from the cache
    cached = list((tmp_path / "cache").rglob("*.npz"))
    assert len(cached) >= 20


def test_crossval_scores_every_song_by_artist(synth_collection, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cv"
    assert main(["crossval", str(synth_collection), "--folds", "3", "--arch", "tiny", "--epochs", "30",
                 "--test-chunks", "1", "--jobs", "1", "--threads", "1", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["folds"] == 3 and list(report["models"]) == ["tiny", "baseline"]
    tiny = report["models"]["tiny"]
    # 20 songs, each scored once on its first chunk; 10 artists (from the file names), each in one fold
    assert tiny["songs"] == 20 and report["models"]["baseline"]["songs"] == 20
    assert sum(row["songs"] for row in report["per_fold"]) == 20
    assert sum(row["groups"] for row in report["per_fold"]) == 10
    assert all(row["train_songs"] + row["songs"] == 20 for row in report["per_fold"])
    assert tiny["song_accuracy"] >= 0.9 and tiny["chunk_accuracy"] == tiny["song_accuracy"]
    assert report["gains"]["tiny-baseline"]["fold_differences"] == [
        round(row["song_accuracy"]["tiny"] - row["song_accuracy"]["baseline"], 4) for row in report["per_fold"]]
    assert json.loads((out / "crossval.json").read_text())["models"]["tiny"]["songs"] == 20
    assert (out / "confusion.png").stat().st_size > 1000
    # too many folds for the groups: a usage error that says what to do
    assert main(["crossval", str(synth_collection), "--folds", "50", "--arch", "tiny", "--jobs", "1"]) == 2
    assert "cannot fill 50 folds" in capsys.readouterr().err
