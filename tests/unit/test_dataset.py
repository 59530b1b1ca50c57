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
    parse_sources,
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


def test_split_csv_and_its_fingerprint_do_not_depend_on_where_the_data_set_was_made(tmp_path, monkeypatch):
    from shared.datapaths import fingerprint

    made = []
    for machine, copy in (("one", False), ("two", True)):  # two cache folders, linked and copied
        root = tmp_path / machine
        for g in ("rock", "jazz"):
            for a in range(3):
                touch(root / "clips" / g / f"{g}man{a}-s0.wav", f"{g}{a}".encode())
        monkeypatch.setenv("GENRE_DATA_ROOT", str(root))
        split_dataset(root / "clips", root / "dest", seed=0, group_by="artist", probe_audio=False, copy=copy)
        made.append(root / "dest")
    rows = list(csv.DictReader(open(made[0] / "split.csv")))
    assert rows and all(r["source"].startswith("$GENRE_DATA_ROOT/clips/") for r in rows)
    assert (made[0] / "split.csv").read_bytes() == (made[1] / "split.csv").read_bytes()
    assert fingerprint(made[0]) == fingerprint(made[1])


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


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_artists_are_found_by_genre_and_stem_when_stems_repeat_across_genres(tmp_path):
    # emotify-like: 1.mp3 and 2.mp3 in every genre folder, each by a different artist
    man = write_csv(tmp_path / "meta" / "emotify.csv", ["path", "genre", "artist"], [
        ["data/classical/1.mp3", "classical", "Bach Ensemble"],
        ["data/pop/1.mp3", "pop", "Pop Star"],
        ["data/classical/2.mp3", "classical", "Other Ensemble"],
        ["data/pop/2.mp3", "pop", "Pop Star"],
        ["midi/blues/b_b_king-lucille.mid", "blues", "B.B. King"],  # a render's source row
        ["elsewhere/lonely.mid", "jazz", "Solo Act"],  # stem unique in the manifest
    ])
    root = tmp_path / "train"
    for rel in ("classical/1.mp3", "classical/2.mp3", "pop/1.mp3", "pop/2.mp3", "rock/1.mp3",
                "blues/b_b_king-lucille.wav", "ambient/lonely.wav"):
        touch(root / rel)
    got = {f"{g}/{p.name}": grp for p, g, grp in load_labelled_songs(root, manifest=man)}
    assert got == {
        "classical/1.mp3": "artist:bach ensemble",
        "classical/2.mp3": "artist:other ensemble",
        "pop/1.mp3": "artist:pop star",
        "pop/2.mp3": "artist:pop star",
        "rock/1.mp3": "song:rock/1.mp3",  # stem 1 is under two genres in the manifest: no guess
        "blues/b_b_king-lucille.wav": "artist:b.b. king",
        "ambient/lonely.wav": "artist:solo act",
    }


def test_split_csv_rows_match_their_own_file_first(tmp_path):
    # the same genre and stem on both sides of a split, by different artists
    dest = tmp_path / "d"
    write_csv(dest / "split.csv", ["path", "genre", "artist", "split"],
              [["train/pop/1.mp3", "pop", "First", "train"], ["test/pop/1.mp3", "pop", "Second", "test"]])
    touch(dest / "train" / "pop" / "1.mp3")
    touch(dest / "test" / "pop" / "1.mp3")
    assert [g for _, _, g in load_labelled_songs(dest / "train")] == ["artist:first"]
    assert [g for _, _, g in load_labelled_songs(dest / "test")] == ["artist:second"]


def test_manifest_split_column_decides_the_sides(tmp_path):
    src = tmp_path / "audio"
    rows = []
    for g in ("classical", "pop"):
        for k in range(1, 7):
            touch(src / "data" / g / f"{k}.mp3", f"{g}{k}".encode())
            rows.append([f"data/{g}/{k}.mp3", g, f"{g} artist {k // 3}", "test" if k >= 5 else "train"])
    man = write_csv(tmp_path / "meta" / "real.csv", ["path", "genre", "artist", "split"], rows)
    dest = tmp_path / "dest"
    report = split_dataset(src, dest, test_fraction=0.5, group_by="artist", manifest=man, probe_audio=False)
    assert report.split_from == "manifest"
    assert report.counts == {"classical": {"train": 4, "test": 2}, "pop": {"train": 4, "test": 2}}
    assert sorted(p.name for p in (dest / "test" / "pop").iterdir()) == ["5.mp3", "6.mp3"]
    assert report.warnings == ["the manifest's split puts 2 artist groups on both sides (e.g. 'classical artist 1')"]
    written = {r["path"]: (r["artist"], r["split"]) for r in csv.DictReader(open(dest / "split.csv"))}
    assert written["test/classical/6.mp3"] == ("classical artist 2", "test")
    assert written["train/pop/1.mp3"] == ("pop artist 0", "train")
    # the loader finds each side's artists in DEST/split.csv although every stem repeats across genres
    assert {g for _, _, g in load_labelled_songs(dest / "test")} == {
        "artist:classical artist 1", "artist:classical artist 2", "artist:pop artist 1", "artist:pop artist 2"}
    # without the column the seed decides, as before
    plain = write_csv(tmp_path / "meta" / "plain.csv", ["path", "genre", "artist"], [r[:3] for r in rows])
    assert split_dataset(src, tmp_path / "d2", manifest=plain, probe_audio=False).split_from == "seed"
    bad = write_csv(tmp_path / "meta" / "bad.csv", ["path", "genre", "split"], [["data/pop/1.mp3", "pop", "train"],
                                                                               ["data/pop/2.mp3", "pop", "holdout"]])
    with pytest.raises(DatasetError, match="line 3: split is 'holdout'; give train or test on every row"):
        split_dataset(src, tmp_path / "d3", manifest=bad, probe_audio=False)


def test_parse_sources_names_each_dataset(tmp_path):
    assert parse_sources(["/data/emotify"]) == [("emotify", Path("/data/emotify"))]
    assert parse_sources(["real=/data/emotify/test", "/render/long/test"]) == [
        ("real", Path("/data/emotify/test")), ("long", Path("/render/long/test"))]
    assert parse_sources(["/odd/a=b"]) == [("a=b", Path("/odd/a=b"))]  # not a NAME=: the whole is a path
    with pytest.raises(DatasetError, match="two sources are named 'emotify'; write them as NAME=PATH"):
        parse_sources(["old/emotify/test", "new/emotify"])
    with pytest.raises(DatasetError, match="write it as NAME=PATH"):
        parse_sources(["/my songs", "b"])
