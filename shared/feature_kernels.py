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
def window_frames(x, start, step, win, out):  # pragma: no cover - compiled
    """out[j, i] = double(x[start + j*step + i]) * win[i], zero outside x: the host's
    zero-padded, centred frames times the Hann window, in double."""
    n_frames, block = out.shape
    size = x.size
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
def mfcc_magnitudes(pairs, off, lo, hi, out):  # pragma: no cover - compiled
    """qm-mfcc's magnitudes sqrt(re^2 + im^2) in double of the float32 (re, im) the host
    passes, for bins lo .. hi-1; bin j's (re, im) are pairs[r, off + 2*(j-1) + (0, 1)]."""
    n = out.shape[0]
    for r in range(n):
        row = pairs[r, off + 2 * (lo - 1) :]
        o = out[r]
        for j in range(hi - lo):
            re = np.float64(np.float32(row[2 * j]))
            im = np.float64(np.float32(row[2 * j + 1]))
            o[j] = math.sqrt(re * re + im * im)


@njit(nogil=True, cache=True)
def contrast_frames(pairs, off, dc, band_start, band_end, band_k, mag, peaks, valleys):  # pragma: no cover - compiled
    """bbc-spectral-contrast per frame: float32 |X| of bins 0 .. B/2-1 (abs of the
    complex<float>: the double sqrt rounded once to float32), then per band the float32
    means of the k smallest (valleys) and k largest (peaks) magnitudes, each sum taken in
    ascending order as the plugin adds its sorted band. `mag` is a (B/2,) float32 scratch."""
    n = peaks.shape[0]
    n_bands = band_start.size
    half = band_end[n_bands - 1]
    kmax = 1
    for b in range(n_bands):
        kmax = max(kmax, band_k[b])
    small = np.empty(kmax, dtype=np.float32)  # the k smallest so far, ascending
    large = np.empty(kmax, dtype=np.float32)  # the k largest so far, ascending
    tail = mag[1:]
    for r in range(n):
        row = pairs[r, off:]
        mag[0] = abs(np.float32(dc[r]))  # DC: real
        for j in range(half - 1):
            re = np.float64(np.float32(row[2 * j]))
            im = np.float64(np.float32(row[2 * j + 1]))
            tail[j] = np.float32(math.sqrt(re * re + im * im))
        for b in range(n_bands):
            b0, b1, k = band_start[b], band_end[b], band_k[b]
            if k == 1:
                lo_v = mag[b0]
                hi_v = mag[b0]
                for i in range(b0 + 1, b1):
                    v = mag[i]
                    if v < lo_v:
                        lo_v = v
                    if v > hi_v:
                        hi_v = v
                valleys[r, b] = lo_v
                peaks[r, b] = hi_v
                continue
            for p in range(k):
                small[p] = mag[b0]
                large[p] = mag[b0]
            filled = 1
            for i in range(b0 + 1, b1):
                v = mag[i]
                if filled < k:  # the first k values, kept sorted
                    p = filled
                    while p > 0 and small[p - 1] > v:
                        small[p] = small[p - 1]
                        p -= 1
                    small[p] = v
                    p = filled
                    while p > 0 and large[p - 1] > v:
                        large[p] = large[p - 1]
                        p -= 1
                    large[p] = v
                    filled += 1
                    continue
                if v < small[k - 1]:
                    p = k - 1
                    while p > 0 and small[p - 1] > v:
                        small[p] = small[p - 1]
                        p -= 1
                    small[p] = v
                if v > large[0]:
                    p = 0
                    while p < k - 1 and large[p + 1] < v:
                        large[p] = large[p + 1]
                        p += 1
                    large[p] = v
            s_lo = small[0]
            s_hi = large[0]
            for p in range(1, k):
                s_lo += small[p]
                s_hi += large[p]
            valleys[r, b] = s_lo / np.float32(k)
            peaks[r, b] = s_hi / np.float32(k)


@njit(nogil=True, cache=True)
def all_finite(x):  # pragma: no cover - compiled
    """Whether no sample is NaN or infinite (without numpy's temporary boolean array)."""
    bad = 0
    for i in range(x.size):
        bad |= not math.isfinite(x[i])
    return bad == 0
