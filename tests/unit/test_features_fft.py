"""The built-in extractor's two FFT paths (FFTW through pyFFTW, scipy's pocketfft) give
bit-identical features, from any number of threads at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import shared.features as features
from shared.features import _FrameFFT, extract_features, fft_backend

pytest.importorskip("pyfftw", reason="pyFFTW not installed: only the pocketfft path exists here")


def _signals() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(7)
    out = []
    for n, sr in ((1, 22050), (1023, 22050), (1025, 22050), (33_333, 22050), (661_500, 22050), (96_001, 44100)):
        level = np.exp(rng.uniform(-9, 0, n))  # 80 dB of dynamics: valleys far below the peaks
        out.append(((rng.standard_normal(n) * level).astype(np.float32), sr))
    return out


def _with(backend: str, x: np.ndarray, sr: int):  # noqa: ANN202
    saved = features._FFT
    features._FFT = _FrameFFT(backend)
    try:
        return extract_features(x, sr)
    finally:
        features._FFT = saved


def test_fftw_is_the_default_where_pyfftw_is_installed():
    assert fft_backend() == "fftw"


@pytest.mark.parametrize("index", range(6))
def test_both_backends_give_the_same_bits(index):
    x, sr = _signals()[index]
    a, b = _with("fftw", x, sr), _with("pocketfft", x, sr)
    for name in ("mfcc", "peaks", "valleys"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_threads_do_not_share_buffers():
    sigs = _signals()[2:]
    expected = [extract_features(x, sr) for x, sr in sigs]
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(3):
            x, sr = sigs[k % len(sigs)]
            got = extract_features(x, sr)
            if not np.array_equal(got.peaks, expected[k % len(sigs)].peaks):
                errors.append(f"thread {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_an_unknown_backend_name_is_refused(monkeypatch):
    monkeypatch.setenv("GENRE_FFT", "kissfft")
    with pytest.raises(ValueError, match="GENRE_FFT"):
        features._fft_backend()
    monkeypatch.setenv("GENRE_FFT", "pocketfft")
    assert features._fft_backend() == "pocketfft"
