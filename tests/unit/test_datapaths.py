"""Reports name data by a portable location and a content fingerprint, never by a machine path."""

from __future__ import annotations

import os

import pytest

from shared.datapaths import ROOT_ENV, data_location, fingerprint, portable_path, portable_song


@pytest.fixture
def roots(tmp_path):
    """A data root and a home beside each other, both in tmp."""
    data, home = tmp_path / "cache" / "make-model", tmp_path / "home" / "ann"
    data.mkdir(parents=True)
    home.mkdir(parents=True)
    return {"data_root": str(data), "home": str(home)}


def test_paths_under_the_data_root_are_written_from_it(roots):
    p = os.path.join(roots["data_root"], "render", "long")
    assert portable_path(p, **roots) == f"${ROOT_ENV}/render/long"
    assert portable_path(roots["data_root"], **roots) == f"${ROOT_ENV}"


def test_the_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    assert portable_path(tmp_path / "datasets" / "emotify") == "$GENRE_DATA_ROOT/datasets/emotify"


def test_the_data_root_wins_over_home_and_home_is_a_tilde(roots):
    inside_home = {"data_root": os.path.join(roots["home"], ".cache", "genre"), "home": roots["home"]}
    assert portable_path(os.path.join(roots["home"], ".cache", "genre", "r90"), **inside_home) == "$GENRE_DATA_ROOT/r90"
    assert portable_path(os.path.join(roots["home"], "music", "a.mp3"), **roots) == "~/music/a.mp3"


def test_other_absolute_paths_keep_only_their_last_two_components(roots):
    assert portable_path("/mnt/disk7/corpora/emotify/test", **roots) == ".../emotify/test"
    assert portable_path("/data", **roots) == ".../data"
    # a sibling whose name starts like the root is not under it
    assert portable_path(roots["data_root"] + "-old/x", **roots) == ".../make-model-old/x"


def test_relative_paths_stay_as_given(roots, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path("models/default", **roots) == "models/default"
    assert portable_path("../shared/data", **roots) == "../shared/data"
    # ... unless they lie under the data root
    assert portable_path("cache/make-model/render", **roots) == "$GENRE_DATA_ROOT/render"


def test_symlinked_locations_resolve_to_the_root(roots, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(roots["data_root"], target_is_directory=True)
    assert portable_path(link / "render", **roots) == "$GENRE_DATA_ROOT/render"


def test_song_ids_keep_their_source_prefix(roots):
    song = os.path.join(roots["data_root"], "datasets", "emotify", "test", "pop", "3.mp3")
    assert portable_song(f"real:{song}", **roots) == "real:$GENRE_DATA_ROOT/datasets/emotify/test/pop/3.mp3"
    assert portable_song(song, **roots) == "$GENRE_DATA_ROOT/datasets/emotify/test/pop/3.mp3"
    assert portable_song("synth:rock/a.wav", **roots) == "synth:rock/a.wav"


def test_fingerprint_follows_names_sizes_and_manifest_bytes(tmp_path):
    d = tmp_path / "d"
    (d / "rock").mkdir(parents=True)
    (d / "rock" / "a.wav").write_bytes(b"x" * 10)
    (d / "split.csv").write_text("path,genre,artist\nrock/a.wav,rock,ann\n")
    (d / ".hidden").write_text("ignored")
    first, n = fingerprint(d)
    assert first.startswith("sha256:") and len(first) == 7 + 64 and n == 2
    # the same content elsewhere has the same fingerprint
    e = tmp_path / "elsewhere" / "d"
    e.parent.mkdir()
    os.rename(d, e)
    assert fingerprint(e) == (first, 2)
    (e / "rock" / "a.wav").write_bytes(b"y" * 10)  # same size: same fingerprint (audio is not read)
    assert fingerprint(e)[0] == first
    (e / "split.csv").write_text("path,genre,artist\nrock/a.wav,rock,bob\n")  # same size, other artist
    assert fingerprint(e)[0] != first
    changed = fingerprint(e)[0]
    (e / "rock" / "a.wav").write_bytes(b"y" * 11)
    assert fingerprint(e)[0] != changed
    (e / "rock" / "b.wav").symlink_to(e / "rock" / "a.wav")  # links are followed
    assert fingerprint(e)[1] == 3
    assert fingerprint(tmp_path / "missing") == (None, 0)


def test_data_location_records_path_fingerprint_and_count(roots):
    d = os.path.join(roots["data_root"], "render", "r90", "test")
    os.makedirs(os.path.join(d, "jazz"))
    with open(os.path.join(d, "jazz", "x.wav"), "wb") as f:
        f.write(b"\0" * 44)
    loc = data_location(d, **roots)
    assert loc == {"path": "$GENRE_DATA_ROOT/render/r90/test", "fingerprint": fingerprint(d)[0], "files": 1}
