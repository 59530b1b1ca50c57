"""The built-in extractor's per-sample loops, compiled with numba.

numpy needs several passes (and temporaries) for what is one pass here: windowing is a
float32 -> double cast plus a multiply, the plugin's magnitude rounds (re, im) to float32
before squaring, and the contrast statistics need a sort. Each loop below is written
exactly as the plugins compute (see ../shared/golden/README.md), in the same order of
floating-point operations, and without fastmath: numba (LLVM) may vectorise a loop
across independent elements but never reorders one element's arithmetic, so the results
are the plugins' bit for bit (tests/unit/test_features_golden.py).

Compiled on first use and cached on disk (numba's cache: beside this file where it is
writable, else NUMBA_CACHE_DIR or the user's cache folder); the images warm the cache at
build time. All loops release the GIL.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def window_frames(x: np.ndarray, start: int, step: int, win: np.ndarray, out: np.ndarray) -> None:
    """out[j, i] = double(x[start + j*step + i]) * win[i], zero outside x: the host's
    zero-padded, centred frames times the Hann window, in double."""
    n_frames, block = out.shape
    size = x.size
    if win.size < block:
        raise ValueError("window_frames: window shorter than the frames")
    for j in range(n_frames):
        base = start + j * step
        row = out[j]
        if base >= 0 and base + block <= size:
            seg = x[base : base + block]
            for i in range(block):
                row[i] = np.float64(seg[i]) * win[i]
        else:
            for i in range(block):
                p = base + i
                row[i] = np.float64(x[p]) * win[i] if 0 <= p < size else 0.0


@njit(nogil=True, cache=True)
def _pair_magnitudes(pairs: np.ndarray, out: np.ndarray, count: int) -> None:
    """out[j] = sqrt(re^2 + im^2) in double of the float32-rounded (re, im) = pairs[2j],
    pairs[2j + 1], j < count: the plugins' magnitude. Stored into a float64 `out` it is
    qm-mfcc's; into a float32 `out` it is rounded once, as bbc-spectral-contrast's
    abs(complex<float>) (glibc's cabsf) gives it."""
    for j in range(count):
        re = np.float64(np.float32(pairs[2 * j]))
        im = np.float64(np.float32(pairs[2 * j + 1]))
        out[j] = math.sqrt(re * re + im * im)


@njit(nogil=True, cache=True)
def mfcc_magnitudes(pairs: np.ndarray, off: int, lo: int, hi: int, out: np.ndarray) -> None:
    """qm-mfcc's magnitudes, double, of bins lo .. hi-1; bin j's (re, im) are
    pairs[r, off + 2*(j-1) + (0, 1)]."""
    n = out.shape[0]
    if out.shape[1] < hi - lo or pairs.shape[1] < off + 2 * (hi - 1):
        raise ValueError("mfcc_magnitudes: arrays too small for these bins")
    for r in range(n):
        _pair_magnitudes(pairs[r, off + 2 * (lo - 1) :], out[r], hi - lo)


TILE = 16  # frames whose magnitudes are transposed together


def contrast_scratch_size(n_frames: int, half: int, kmax: int) -> int:
    """float32 elements of contrast_frames' scratch for up to n_frames frames."""
    return half * n_frames + (2 * kmax + 1) * n_frames + TILE * half


@njit(nogil=True, cache=True)
def contrast_frames(pairs: np.ndarray, off: int, dc: np.ndarray, band_start: np.ndarray, band_end: np.ndarray,
                    band_k: np.ndarray, scratch: np.ndarray, peaks: np.ndarray, valleys: np.ndarray) -> None:
    """bbc-spectral-contrast: float32 |X| of bins 0 .. B/2-1 (abs of the complex<float>:
    the double sqrt rounded once to float32), then per band the float32 means of the k
    smallest (valleys) and k largest (peaks) magnitudes, each sum taken in ascending order
    as the plugin adds its sorted band.

    The statistics run across frames: magnitudes are transposed to (bin, frame) so that
    every step below is one operation on all frames at once (SIMD); per frame they are
    the plugin's. The k smallest are kept sorted by a compare-exchange chain per bin (the
    k largest likewise), which yields exactly the sorted band's first (last) k values.
    `scratch`: contrast_scratch_size(frames, B/2, max k) float32 elements."""
    n = peaks.shape[0]
    n_bands = band_start.size
    half = band_end[n_bands - 1]
    kmax = 1
    for b in range(n_bands):
        kmax = max(kmax, band_k[b])
    cap = (scratch.size - TILE * half) // (half + 2 * kmax + 1)
    if n > cap:
        raise ValueError("contrast_frames: scratch too small for this many frames")
    if pairs.shape[0] < n or dc.size < n or pairs.shape[1] < off + 2 * (half - 1) or peaks.shape[1] < n_bands \
            or valleys.shape[0] < n or valleys.shape[1] < n_bands:
        raise ValueError("contrast_frames: arrays too small for these frames and bands")
    mag_t = scratch[: half * cap].reshape((half, cap))
    sel = scratch[half * cap : half * cap + (2 * kmax + 1) * cap].reshape((2 * kmax + 1, cap))
    tile = scratch[half * cap + (2 * kmax + 1) * cap :].reshape((TILE, half))
    carry = sel[2 * kmax]
    for r0 in range(0, n, TILE):
        nt = min(TILE, n - r0)
        for t in range(nt):
            r = r0 + t
            m = tile[t]
            m[0] = abs(np.float32(dc[r]))  # DC: real
            _pair_magnitudes(pairs[r, off:], m[1:], half - 1)
        for j in range(half):
            dst = mag_t[j, r0 : r0 + nt]
            for t in range(nt):
                dst[t] = tile[t, j]
    for b in range(n_bands):
        b0, b1, k = band_start[b], band_end[b], band_k[b]
        for p in range(k):
            lo_p = sel[p]
            hi_p = sel[kmax + p]
            for r in range(n):
                lo_p[r] = np.float32(np.inf)
                hi_p[r] = -np.float32(np.inf)
        for i in range(b0, b1):
            col = mag_t[i]
            for r in range(n):
                carry[r] = col[r]
            for p in range(k):  # small[0..k-1] ascending: the new value sinks to its place
                lo_p = sel[p]
                for r in range(n):
                    a = lo_p[r]
                    v = carry[r]
                    lo_p[r] = v if v < a else a
                    carry[r] = a if v < a else v
            for r in range(n):
                carry[r] = col[r]
            for q in range(k):  # large[0..k-1] ascending: the new value rises to its place
                hi_p = sel[kmax + k - 1 - q]
                for r in range(n):
                    a = hi_p[r]
                    v = carry[r]
                    hi_p[r] = v if v > a else a
                    carry[r] = a if v > a else v
        kf = np.float32(k)
        for r in range(n):
            s_lo = sel[0, r]
            s_hi = sel[kmax, r]
            for p in range(1, k):
                s_lo += sel[p, r]
                s_hi += sel[kmax + p, r]
            valleys[r, b] = s_lo / kf
            peaks[r, b] = s_hi / kf


@njit(nogil=True, cache=True)
def all_finite(x: np.ndarray) -> bool:
    """Whether no sample is NaN or infinite (without numpy's temporary boolean array)."""
    bad = 0
    for i in range(x.size):
        bad |= not math.isfinite(x[i])
    return bad == 0
