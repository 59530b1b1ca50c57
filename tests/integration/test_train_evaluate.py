"""End to end on generated audio: dataset split -> train -> evaluate, through the CLI."""

from __future__ import annotations

import json

import pytest

from shared.cli import main
from shared.datapaths import data_location
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


@pytest.fixture(scope="module")
def numbered_collection(tmp_path_factory):
    """A second source laid out like the real recordings: data/<genre>/<n>.wav (the same names in
    every genre) and a manifest naming artists and a fixed, artist-disjoint split."""
    root = tmp_path_factory.mktemp("numbered")
    rows = []
    for g, genre in enumerate(SYNTH_GENRES):
        for k in range(1, 9):
            write_audio(root / "data" / genre / f"{k}.wav", make_song(genre, 30.0, seed=900 + 41 * g + k))
            # the artists have the names the first source's file names give it: only the source keeps them apart
            rows.append(f"data/{genre}/{k}.wav,{genre},{genre}man{k % 4},{'test' if k % 4 == 0 else 'train'}")
    (root / "meta.csv").write_text("path,genre,artist,split\n" + "\n".join(rows) + "\n")
    return root


def test_train_and_evaluate_two_sources(synth_collection, numbered_collection, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    real, midi = tmp_path / "real", tmp_path / "midi"
    assert main(["dataset", "split", str(synth_collection), str(real), "--test-fraction", "0.4",
                 "--group-by", "artist", "--no-probe"]) == 0
    assert main(["dataset", "split", str(numbered_collection), str(midi), "--manifest",
                 str(numbered_collection / "meta.csv"), "--group-by", "artist", "--json", "--no-probe"]) == 0
    capsys.readouterr()
    model = tmp_path / "models" / "two"
    assert main(["train", f"real={real}", str(midi), "--out", str(model), "--arch", "tiny", "--epochs", "40",
                 "--jobs", "1", "--threads", "1", "--members", "2"]) == 0
    meta = json.loads((model / "metadata.json").read_text())
    tr = meta["training"]
    assert tr["members"]["count"] == 2 and len(tr["members"]["best_epochs"]) == 2
    assert tr["loss"] == "categorical_crossentropy"  # both sources have every genre: nothing to mask
    assert meta["genres"] == sorted(SYNTH_GENRES)
    assert tr["sources"] == {"real": {**data_location(real), "songs": 12}, "midi": {**data_location(midi), "songs": 12}}
    assert tr["sources"]["real"]["fingerprint"].startswith("sha256:") and tr["sources"]["real"]["files"] == 21
    # 3 + 3 artists on each train side, same names in both sources: 12 groups only if they are kept apart
    assert tr["groups_train"] + tr["groups_validation"] == 12
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["evaluate", str(model), f"real={real / 'test'}", str(midi / "test"), "--json", "--out", str(out),
                 "--no-seed", "--gain", "6", "--jobs", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["songs"] == 12 and report["test"] == {"real": data_location(real / "test"), "midi": data_location(midi / "test")}
    assert list(report["sources"]) == ["real", "midi"]
    r, m = report["sources"]["real"], report["sources"]["midi"]
    assert (r["songs"], m["songs"]) == (8, 4) and r["chunks"] + m["chunks"] == report["chunks"]
    assert r["songs_correct"] + m["songs_correct"] == report["songs_correct"]
    assert report["song_accuracy"] >= 0.9 and min(r["song_accuracy"], m["song_accuracy"]) >= 0.75
    assert "predictions" not in r and set(report["baseline"]["sources"]) == {"real", "midi"}
    assert report["gain_agreement"]["+6"] >= 0.9
    assert json.loads((out / "report.json").read_text())["sources"]["midi"]["songs"] == 4
    for name in ("confusion.png", "confusion-real.png", "confusion-midi.png"):
        assert (out / name).stat().st_size > 1000
    # the text table gives each source under the pooled line
    assert main(["evaluate", str(model), f"real={real / 'test'}", str(midi / "test"), "--no-seed", "--no-baseline",
                 "--no-gain-check", "--jobs", "1"]) == 0
    table = capsys.readouterr().out
    assert "(12 songs," in table and "; real 8, midi 4)" in table
    assert [ln.split()[0] for ln in table.splitlines()[2:5]] == ["model", "real", "midi"]
    # one --manifest per dataset or none; sane ensemble and loss options
    for bad in (["--members", "0"], ["--absent-weight", "1.5"]):
        assert main(["train", str(real), "--out", str(tmp_path / "x"), "--arch", "tiny", *bad]) == 2
        assert bad[0] in capsys.readouterr().err
    assert main(["evaluate", str(model), str(real / "test"), str(midi / "test"), "--manifest", "x.csv"]) == 2
    assert "1 --manifest for 2 datasets" in capsys.readouterr().err


def test_crossval_two_sources(synth_collection, numbered_collection, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cv"
    assert main(["crossval", f"synth={synth_collection}", str(numbered_collection / "data"), "--manifest", "",
                 "--manifest", str(numbered_collection / "meta.csv"), "--folds", "3", "--arch", "tiny",
                 "--epochs", "20", "--test-chunks", "1", "--no-baseline", "--jobs", "1", "--threads", "1",
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tiny = report["models"]["tiny"]
    assert tiny["songs"] == 36 and {k: v["songs"] for k, v in tiny["sources"].items()} == {"synth": 20, "data": 16}
    # 10 artists from the file names + 8 from the manifest, each in one fold
    assert sum(row["groups"] for row in report["per_fold"]) == 18
    for name in ("confusion.png", "confusion-synth.png", "confusion-data.png"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.slow
def test_train_and_evaluate_the_pretrained_default(synth_collection, tmp_path, monkeypatch, capsys):
    """The default arch (frozen musicnn beside the Vamp trunk) through the CLI: v2 features
    with the log-mel, one artifact that reads them, level-invariant verdicts."""
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    assert main(["dataset", "split", str(synth_collection), str(data), "--test-fraction", "0.4",
                 "--group-by", "artist", "--no-probe"]) == 0
    model = tmp_path / "models" / "pre"
    assert main(["train", str(data), "--out", str(model), "--epochs", "12", "--jobs", "1", "--threads", "1"]) == 0
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["arch"] == "pretrained" and meta["feature_spec"]["id"].startswith("qm-mfcc20+bbc-contrast7+logmel96/v2")
    assert meta["pretrained"]["networks"] == ["MSD_musicnn"] and meta["frames_per_chunk"]["logmel"] == 1870
    embedded = list((tmp_path / "cache" / "embeddings").rglob("*.npy"))
    assert len(embedded) == meta["training"]["chunks_train"] + meta["training"]["chunks_validation"]
    capsys.readouterr()
    assert main(["evaluate", str(model), str(data / "test"), "--json", "--no-seed", "--gain", "-12", "--gain", "6",
                 "--jobs", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arch"] == "pretrained" and report["songs"] == 8
    assert report["song_accuracy"] >= 0.75, report["per_genre"]
    assert report["gain_agreement"] == {"-12": 1.0, "+6": 1.0}
    assert report["inference_ms_per_chunk"] is None  # embeddings may be cached: bench/model.py times it
