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
