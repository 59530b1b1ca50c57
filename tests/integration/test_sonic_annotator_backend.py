"""The sonic-annotator backend against the built-in one, and `genre extract` end to end.

The subprocess tests need the real `sonic-annotator` (1.6, with qm-vamp-plugins and
bbc-vamp-plugins) on PATH and are skipped, with the reason, where it is not; CI runs them
with PATH=../shared/sonic-annotator:$PATH.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shared import sonic_annotator
from shared.cli import main as genre_main
from shared.features import extract_features, get_extractor
from shared.reference import golden_dir
from shared.sonic_annotator import SonicAnnotatorNotFound, csv_names
from tests.fixtures.audio import make_song
from tests.unit.test_features_golden import read_wav_like_libsndfile

needs_sonic = pytest.mark.skipif(
    shutil.which("sonic-annotator") is None,
    reason="sonic-annotator is not on PATH (e.g. PATH=../shared/sonic-annotator:$PATH)",
)
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def _golden() -> Path:
    g = golden_dir()
    if not (g / "csv").is_dir():
        pytest.skip(f"golden reference folder not found at {g} (set GENRE_REFERENCE_DIR)")
    return g


def assert_equivalent(a, b) -> None:
    for key in ("mfcc", "peaks", "valleys"):
        x, y = a.arrays()[key], b.arrays()[key]
        assert x.dtype == y.dtype == np.float32
        assert x.shape == y.shape, key
        rel = np.abs(x.astype(np.float64) - y) / np.maximum(np.abs(y.astype(np.float64)), 1e-7)
        # the contract is 1e-4; the backends agree to ~1e-7, mostly bit for bit (the double
        # FFTs differ only in rounding: KissFFT in the host, pocketfft here)
        assert rel.max() <= 1e-6, f"{key}: worst relative difference {rel.max():.3g}"
        assert np.mean(x == y) >= 0.99, f"{key}: only {np.mean(x == y):.4%} bit-identical"


@needs_sonic
def test_backends_agree_on_golden_music() -> None:
    pcm, rate = read_wav_like_libsndfile(_golden() / "music_22050.wav")
    sonic = get_extractor("sonic-annotator")(pcm, rate)
    assert_equivalent(extract_features(pcm, rate), sonic)


@needs_sonic
@pytest.mark.parametrize(("genre", "seconds", "rate"), [("clicks", 30.0, 22050), ("drone", 7.3, 44100)])
def test_backends_agree_on_generated_chunks(genre: str, seconds: float, rate: int) -> None:
    pcm = make_song(genre, seconds, seed=3, sr=rate)
    assert_equivalent(extract_features(pcm, rate), sonic_annotator.extract_features(pcm, rate))


@needs_sonic
def test_backend_reports_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAMP_PATH", str(tmp_path))  # no plugins there
    with pytest.raises(sonic_annotator.SonicAnnotatorError, match="VAMP_PATH"):
        sonic_annotator.extract_features(np.zeros(4096, dtype=np.float32), 22050)


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SonicAnnotatorNotFound, match="not on PATH"):
        get_extractor("sonic-annotator")


def _compare_folder(out: Path, golden: Path, names: list[str]) -> list[str]:
    differing = []
    for name in names:
        for fname in csv_names(name).values():
            if (out / fname).read_bytes() != (golden / fname).read_bytes():
                differing.append(fname)
    return differing


@needs_ffmpeg
def test_genre_extract_reproduces_golden_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    g = _golden()
    names = ["short_odd_22050", "stereo_44100", "silence_22050"]
    rc = genre_main(["extract", *[str(g / f"{n}.wav") for n in names], "--out", str(tmp_path / "out")])
    assert rc == 0
    assert _compare_folder(tmp_path / "out", g / "csv", names) == []
    assert len(list((tmp_path / "out").glob("*.csv"))) == 9


@needs_ffmpeg
def test_genre_extract_digits9_and_failures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    g = _golden()
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    rc = genre_main(["extract", str(g / "music_22050.wav"), str(bad), "--out", str(tmp_path), "--csv-digits", "9", "--json"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.wav: error:" in err
    assert _compare_folder(tmp_path, g / "csv_digits9", ["music_22050"]) == []


@needs_ffmpeg
@needs_sonic
def test_genre_extract_with_the_sonic_annotator_backend(tmp_path: Path) -> None:
    g = _golden()
    rc = genre_main(["extract", str(g / "noise_22050.wav"), "--out", str(tmp_path), "--backend", "sonic-annotator"])
    assert rc == 0
    assert _compare_folder(tmp_path, g / "csv", ["noise_22050"]) == []
