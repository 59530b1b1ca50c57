"""tools/pretrained_probe.py end to end on generated audio: embed, cache, score."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from shared.datapaths import portable_path
from tests.fixtures.audio import SYNTH_GENRES, make_song, write_audio

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import pretrained_probe as pp  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None, reason="musicnn weights not installed (pip install --no-deps musicnn==0.1.0)"
)


@pytest.fixture(scope="module")
def split_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-data")
    for g, genre in enumerate(SYNTH_GENRES):
        for k in range(6):
            side = "train" if k < 4 else "test"
            pcm = make_song(genre, 31.0, seed=900 + 41 * g + k, gain_db=-6.0 * (k % 2))
            write_audio(root / side / genre / f"{genre}man{k}-song{k}.wav", pcm)
    return root


def test_probe_scores_and_caches(split_dataset, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = [str(split_dataset), "--cv", "2", "--test-chunks", "1", "--cache", str(cache), "--json"]
    assert pp.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["train_songs"], report["test_songs"]) == (8, 4)
    assert report["features_per_chunk"] == 1000
    for name, accs in report["test"].items():
        assert len(accs) == 3 and min(accs) >= 0.75, (name, accs)
    assert set(report["cv"]) == set(report["test"])
    cached = sorted(cache.glob("*.npz"))
    assert len(cached) == 12
    stamp = [p.stat().st_mtime_ns for p in cached]
    assert pp.main(args[:-1]) == 0  # second run reads the cache, prints the table
    assert [p.stat().st_mtime_ns for p in cached] == stamp
    table = capsys.readouterr().out
    assert "logistic regression" in table and "CV by artist" in table


def test_probe_refuses_a_folder_without_sides(tmp_path, capsys):
    (tmp_path / "flat" / "drone").mkdir(parents=True)
    assert pp.main([str(tmp_path / "flat"), "--no-cache"]) == 2
    assert "train/<genre>/" in capsys.readouterr().err


def test_probe_reports_short_songs_and_undecodable_files(split_dataset, tmp_path, capsys):
    data = tmp_path / "data"
    (data).mkdir()
    (data / "train").symlink_to(split_dataset / "train", target_is_directory=True)
    for genre in SYNTH_GENRES:
        for k in (4, 5):
            src = split_dataset / "test" / genre / f"{genre}man{k}-song{k}.wav"
            dst = data / "test" / genre / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    short = write_audio(data / "test" / "drone" / "droneman9-short.wav", make_song("drone", 12.0, seed=5))
    assert pp.main([str(data), "--cache", str(tmp_path / "cache"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["too_short"] == [portable_path(short)] and report["test_songs"] == 5
    for name, accs in report["test"].items():
        assert min(accs) >= 0.75, (name, accs)  # scored over the four whole songs
    broken = data / "test" / "drone" / "droneman8-broken.wav"
    broken.write_bytes(b"RIFF not really audio")
    assert pp.main([str(data), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "cannot decode" in err and broken.name in err
    with pytest.raises(SystemExit):
        pp.main([str(data), "--cv", "1"])
