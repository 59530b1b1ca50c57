"""The extractor's compiled loops (shared.feature_kernels) against plain numpy statements
of the same arithmetic: windowing with the host's zero padding, the plugins' magnitudes,
and the contrast band statistics (k smallest / largest, ties included)."""

from __future__ import annotations

import numpy as np
import pytest

from shared import feature_kernels as kernels
from shared.features import CONTRAST_BLOCK, _plan, extract_features, periodic_hann


def _pairs(rng: np.random.Generator, n: int, block: int, quantise: bool = False) -> np.ndarray:
    """(n, block + 2) doubles: what FFTW writes, (re, im) of bins 0 .. B/2, with 80 dB of range."""
    p = rng.standard_normal((n, block + 2)) * np.exp(rng.uniform(-9, 3, (n, block + 2)))
    if quantise:  # many exact ties among the magnitudes
        p = np.round(p * 4) / 4
    return p


def _plugin_float32_magnitudes(pairs: np.ndarray, off: int, dc: np.ndarray, half: int) -> np.ndarray:
    re = pairs[:, off : off + 2 * (half - 1) : 2].astype(np.float32).astype(np.float64)
    im = pairs[:, off + 1 : off + 2 * (half - 1) : 2].astype(np.float32).astype(np.float64)
    mags = np.sqrt(re * re + im * im).astype(np.float32)
    return np.concatenate([np.abs(dc.astype(np.float32))[:, None], mags], axis=1)


@pytest.mark.parametrize("start", [-1024, -512, 0, 700, 9000])
def test_window_frames_pads_with_zeros_like_the_host(start: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(10_000).astype(np.float32)
    win = periodic_hann(2048)
    out = np.empty((5, 2048))
    kernels.window_frames(x, start, 1024, win, out)
    padded = np.concatenate([np.zeros(4096, np.float32), x, np.zeros(8192, np.float32)])
    for j in range(5):
        seg = padded[4096 + start + j * 1024 : 4096 + start + j * 1024 + 2048]
        np.testing.assert_array_equal(out[j], seg.astype(np.float64) * win)


def test_mfcc_magnitudes_are_sqrt_of_squares_of_float32_pairs() -> None:
    rng = np.random.default_rng(2)
    pairs = _pairs(rng, 7, 2048)
    lo, hi = 3, 590
    out = np.empty((7, hi - lo))
    kernels.mfcc_magnitudes(pairs, 2, lo, hi, out)
    re = pairs[:, 2 * lo : 2 * hi : 2].astype(np.float32).astype(np.float64)
    im = pairs[:, 2 * lo + 1 : 2 * hi : 2].astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(out, np.sqrt(re * re + im * im))


@pytest.mark.parametrize("sample_rate", [22050, 44100, 8000])
@pytest.mark.parametrize("quantise", [False, True])
def test_contrast_statistics_match_a_sort(sample_rate: int, quantise: bool) -> None:
    """Valleys/peaks: float32 mean of the k smallest/largest magnitudes, summed in
    ascending order, exactly as sorting the band and adding its ends."""
    plan = _plan(float(sample_rate))
    rng = np.random.default_rng(3 + quantise)
    n, half = 50, CONTRAST_BLOCK // 2
    pairs = _pairs(rng, n, CONTRAST_BLOCK, quantise)
    dc = pairs[:, 0]
    peaks = np.empty((n, len(plan.bands)), np.float32)
    valleys = np.empty_like(peaks)
    scratch = np.empty(kernels.contrast_scratch_size(n, half, int(plan.band_k.max())), np.float32)
    kernels.contrast_frames(pairs, 2, dc, plan.band_start, plan.band_end, plan.band_k, scratch, peaks, valleys)
    mags = _plugin_float32_magnitudes(pairs, 2, dc, half)
    for b, (b0, b1, k) in enumerate(plan.bands):
        band = np.sort(mags[:, b0:b1], axis=1)
        lo, hi = band[:, 0].copy(), band[:, b1 - b0 - k].copy()
        for i in range(1, k):
            lo += band[:, i]
            hi += band[:, b1 - b0 - k + i]
        np.testing.assert_array_equal(valleys[:, b], lo / np.float32(k), err_msg=f"band {b} valleys")
        np.testing.assert_array_equal(peaks[:, b], hi / np.float32(k), err_msg=f"band {b} peaks")
    assert any(k > 1 for _, _, k in plan.bands)  # the selection path is exercised


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad: float) -> None:
    x = np.zeros(5000, np.float32)
    x[4321] = bad
    assert not kernels.all_finite(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        extract_features(x, 22050)
    assert kernels.all_finite(np.zeros(5000, np.float32))
