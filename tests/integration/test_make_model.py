"""scripts/make-model.sh end to end on a tiny generated data set: artifact, reports, plots,
the comparison with the committed model, and a second run that resumes from its marks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from shared.cli import main
from shared.settings import REPO_ROOT
from tests.fixtures.audio import SYNTH_GENRES, make_song, write_audio
from tests.unit.test_docs_paths import machine_paths

SCRIPT = REPO_ROOT / "scripts" / "make-model.sh"


def split_source(root, dest, seed: int, songs: int = 6) -> None:
    """A flat <genre>/<artist>-<title>.wav collection of 30-s songs, split by artist into dest."""
    for g, genre in enumerate(SYNTH_GENRES):
        for k in range(songs):
            write_audio(root / genre / f"{genre}man{k % 3}-song{k}.wav", make_song(genre, 30.0, seed=seed + 31 * g + k))
    assert main(["dataset", "split", str(root), str(dest), "--test-fraction", "0.34", "--group-by", "artist",
                 "--no-probe"]) == 0


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_help_names_every_switch():
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    for switch in ("--cache", "--out", "--jobs", "--real-audio", "--real-dir", "--midi-dir", "--reference",
                   "--epochs", "--skip-crossval", "--crossval-out", "--allmusic-audio", "--allmusic-dir",
                   "--no-allmusic"):
        assert switch in out
    bad = subprocess.run(["bash", str(SCRIPT), "--no-such-switch"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--help" in bad.stderr


@pytest.mark.slow
def test_make_model_rebuilds_artifact_reports_and_plots(tmp_path):
    cache = tmp_path / "cache"
    real, midi, allmusic = (cache / "datasets" / name for name in ("real", "midi", "allmusic"))
    split_source(tmp_path / "collections" / "real", real, seed=300)
    split_source(tmp_path / "collections" / "midi", midi, seed=600)
    split_source(tmp_path / "collections" / "allmusic", allmusic, seed=900)
    env = {**os.environ, "PYTHON": sys.executable, "GENRE_CACHE_DIR": str(tmp_path / "features"),
           "GENRE_TRAIN_FLAGS": "--arch tiny --threads 1", "GENRE_CROSSVAL_FLAGS": "--arch tiny --folds 2 --threads 1",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "models" / "default"
    args = ("--cache", str(cache), "--out", str(out), "--jobs", "1", "--epochs", "20",
            "--real-dir", str(real), "--midi-dir", str(midi), "--allmusic-dir", str(allmusic))
    t0 = time.monotonic()
    first = run_script(*args, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(f"first run {time.monotonic() - t0:.0f} s")

    for name in ("model.keras", "metadata.json", "curves.png", "report.json", "confusion.png",
                 "confusion-real.png", "confusion-midi.png", "confusion-allmusic.png"):
        assert (out / name).stat().st_size > 0, name
    crossval = tmp_path / "models" / "crossval"
    assert (crossval / "crossval.json").is_file() and (crossval / "confusion.png").stat().st_size > 1000
    report = json.loads((out / "report.json").read_text())
    assert list(report["sources"]) == ["real", "midi", "allmusic"] and report["song_accuracy"] >= 0.75
    # data named from the cache root and by fingerprint, never by a path of this machine
    assert report["test"]["real"]["path"] == "$GENRE_DATA_ROOT/datasets/real/test"
    assert report["test"]["midi"]["fingerprint"].startswith("sha256:")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["sources"]["midi"]["path"] == "$GENRE_DATA_ROOT/datasets/midi"
    for f in (out / "report.json", out / "metadata.json", crossval / "crossval.json"):
        assert machine_paths(f.read_text()) == [], f
    # progress with elapsed time, then the comparison with the committed model, source by source
    log = first.stdout
    for step in ("train", "evaluate", "crossval"):
        assert f"{step}: done in" in log
    assert "[make-model 00:" in log
    compared = [ln for ln in log.splitlines() if ln.startswith("comparison: ")]
    assert any(ln.split()[1] == "real" for ln in compared) and any(ln.split()[1] == "midi" for ln in compared), log

    # a second run finds every step done and only compares again
    second = run_script(*args, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    for step in ("train", "evaluate", "crossval"):
        assert f"{step}: done before, skipped" in second.stdout
    assert "comparison: real" in second.stdout

    # a failing step stops the script with its status and says which step failed
    broken = run_script(*args[:-6], "--real-dir", str(tmp_path / "nowhere"), "--midi-dir", str(midi), "--no-allmusic",
                        "--skip-crossval", env=env)
    assert broken.returncode != 0 and "train: FAILED" in broken.stdout
