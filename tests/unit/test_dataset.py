"""Dataset discovery, the train/test split and loading labelled songs."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from shared.dataset import (
    DatasetError,
    Item,
    discover,
    group_of,
    load_labelled_songs,
    split_dataset,
    split_items,
)
from shared.training import label_indices, split_by_group


def make_items(n_genres=4, artists=6, songs_per_artist=(1, 2, 3, 4)):
    items = []
    for g in range(n_genres):
        for a in range(artists):
            for s in range(songs_per_artist[(a + g) % len(songs_per_artist)]):
                items.append(Item(Path(f"/x/g{g}/artist{g}_{a}-song{s}.wav"), f"genre{g}", f"Artist {g}/{a}"))
    return items


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_split_is_deterministic_and_independent_of_order():
    items = make_items()
    a = split_items(items, 0.3, seed=0, group_by="artist")
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    b = split_items(shuffled, 0.3, seed=0, group_by="artist")
    assert a == b
    c = split_items(items, 0.3, seed=1, group_by="artist")
    assert c != a  # the seed changes the split


def test_split_is_stratified_and_artist_disjoint():
    items = make_items()
    sides = split_items(items, 0.3, seed=0, group_by="artist")
    per_genre = defaultdict(Counter)
    artist_sides = defaultdict(set)
    for it, side in sides.items():
        per_genre[it.genre][side] += 1
        artist_sides[it.artist].add(side)
    for genre, c in per_genre.items():
        share = c["test"] / (c["test"] + c["train"])
        assert 0.15 <= share <= 0.45, (genre, c)
    assert all(len(s) == 1 for s in artist_sides.values())


def test_split_by_song_hits_the_fraction():
    items = [Item(Path(f"/x/{g}/{i}.wav"), g) for g in ("a", "b") for i in range(20)]
    sides = split_items(items, 0.3, seed=0, group_by="song")
    for g in ("a", "b"):
        assert sum(1 for it, s in sides.items() if it.genre == g and s == "test") == 6


def test_artist_from_file_name_when_no_manifest():
    assert group_of(Item(Path("/x/rock/Led_Zeppelin-kashmir.wav"), "rock"), "artist") == "led_zeppelin"
    assert group_of(Item(Path("/x/rock/track01.wav"), "rock"), "artist").startswith("song:")


def test_validation_split_by_group_is_clean_and_stratified():
    labels = [g for g in "ab" for _ in range(40)]
    groups = [f"{g}{i // 4}" for g, i in zip(labels, list(range(40)) * 2)]
    mask = split_by_group(labels, groups, 0.2, seed=0)
    val_groups = {g for g, m in zip(groups, mask) if m}
    train_groups = {g for g, m in zip(groups, mask) if not m}
    assert not val_groups & train_groups
    assert {g[0] for g in val_groups} == {"a", "b"}
    assert (split_by_group(labels, groups, 0.2, seed=0) == mask).all()


def test_label_indices_are_sorted_names():
    genres, idx = label_indices(["rock", "blues", "jazz", "blues"])
    assert genres == ["blues", "jazz", "rock"]
    assert idx.tolist() == [2, 0, 1, 0]


def test_layouts(tmp_path):
    # ancestor: train|test/<genre>/*
    anc = tmp_path / "anc"
    touch(anc / "train" / "rock" / "a-1.mp3")
    touch(anc / "test" / "rock" / "b-1.mp3")
    touch(anc / "train" / "jazz" / "c-1.flac")
    items, layout, _ = discover(anc)
    assert layout == "train/test" and sorted(i.genre for i in items) == ["jazz", "rock", "rock"]
    # GTZAN
    gtz = tmp_path / "gtzan"
    for g in ("blues", "metal"):
        for k in range(3):
            touch(gtz / "genres" / g / f"{g}.{k:05d}.au")
    touch(gtz / "genres" / "bextract_single.mf")
    items, layout, _ = discover(gtz)
    assert layout == "gtzan" and len(items) == 6
    items, layout, _ = discover(gtz / "genres")
    assert layout == "gtzan" and len(items) == 6
    # flat
    flat = tmp_path / "flat"
    touch(flat / "pop" / "x.ogg")
    touch(flat / "pop" / ".hidden.wav")
    touch(flat / "pop" / "cover.jpg")
    items, layout, ignored = discover(flat)
    assert layout == "flat" and [i.path.name for i in items] == ["x.ogg"] and ignored == [str(flat / "pop" / "cover.jpg")]
    # manifest
    man = tmp_path / "m.csv"
    with open(man, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "genre", "artist"])
        w.writerow(["flat/pop/x.ogg", "pop", "Someone"])
    items, layout, _ = discover(tmp_path, manifest=man)
    assert layout == "manifest" and items[0].artist == "Someone" and items[0].path == flat / "pop" / "x.ogg"
    with pytest.raises(DatasetError, match="no genre folders"):
        discover(tmp_path / "anc" / "train" / "rock")


def test_split_dataset_writes_links_and_reports(tmp_path):
    src = tmp_path / "src"
    for g in ("rock", "jazz"):
        for a in range(5):
            for s in range(2):
                touch(src / g / f"{g}man{a}-s{s}.wav", f"{g}{a}{s}".encode())
    (src / "empty").mkdir()
    touch(src / "solo" / "onlyone-s0.wav")
    dest = tmp_path / "dest"
    report = split_dataset(src, dest, test_fraction=0.3, seed=0, group_by="artist", probe_audio=False)
    assert report.empty_genres == ["empty"]
    assert report.one_sided == {"solo": "test"}
    assert report.counts["rock"]["train"] + report.counts["rock"]["test"] == 10
    assert report.counts["rock"]["test"] in (2, 4)
    rows = list(csv.DictReader(open(dest / "split.csv")))
    by_artist = defaultdict(set)
    for r in rows:
        by_artist[r["artist"]].add(r["split"])
        assert (dest / r["path"]).is_file()
    assert all(len(v) == 1 for v in by_artist.values())
    assert any("no test songs" in p for p in report.problems())
    with pytest.raises(DatasetError, match="not empty"):
        split_dataset(src, dest, probe_audio=False)
    # the loader reads the artists back from split.csv
    songs = load_labelled_songs(dest / "train")
    assert [s[1] for s in songs] == sorted(s[1] for s in songs)
    assert all(s[2].startswith("artist:") for s in songs)


def test_unreadable_files_are_reported(tmp_path, song_factory):
    src = tmp_path / "src"
    good = song_factory("good.wav", "drone", 12.0, 1)
    for g in ("a", "b"):
        for k in range(3):
            (src / g).mkdir(parents=True, exist_ok=True)
            (src / g / f"s{k}.wav").write_bytes(good.read_bytes())
    touch(src / "a" / "broken.wav", b"this is not audio at all")
    touch(src / "b" / "empty.mp3", b"")
    report = split_dataset(src, tmp_path / "dest", test_fraction=0.34, probe_audio=True)
    bad = {Path(p).name: why for p, why in report.unreadable}
    assert set(bad) == {"broken.wav", "empty.mp3"} and "empty" in bad["empty.mp3"]
    assert sum(c["train"] + c["test"] for c in report.counts.values()) == 6


def test_cli_split(tmp_path, capsys):
    from shared.cli import main

    src = tmp_path / "src"
    for g in ("rock", "jazz"):
        for k in range(4):
            touch(src / g / f"{g}man{k}-s.wav", bytes([k]))
    assert main(["dataset", "split", str(src), str(tmp_path / "d"), "--no-probe", "--json", "--seed", "3"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["counts"]["rock"]["test"] == 1 or rep["counts"]["rock"]["test"] == 2
    assert main(["dataset", "split", str(src), str(tmp_path / "e"), "--test-fraction", "1.5"]) == 2


def test_load_labelled_songs_ignores_listing_order(tmp_path):
    for g in ("zeta", "alpha", "mid"):
        touch(tmp_path / g / "b.wav")
        touch(tmp_path / g / "a.wav")
    songs = load_labelled_songs(tmp_path)
    assert [(p.name, g) for p, g, _ in songs] == [
        ("a.wav", "alpha"), ("b.wav", "alpha"), ("a.wav", "mid"), ("b.wav", "mid"), ("a.wav", "zeta"), ("b.wav", "zeta"),
    ]
    assert all(grp.startswith("song:") for _, _, grp in songs)
