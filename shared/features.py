"""The built-in feature extractor: sonic-annotator 1.6 + qm-mfcc + bbc-spectral-contrast, in numpy and numba.

Reproduces, frame for frame, what the real host and plugins compute with default
parameters (see ../shared/golden/README.md, "How the numbers are computed"):

- host: the chain is fed ceil(N/1024)*1024 samples (zero-padded 1024-sample reads), so
  qm-mfcc (block 2048, step 1024) gives K = ceil(N/1024) frames and bbc-spectral-contrast
  (block 1024, step 512) gives 2*K frames; frame k is *centred* on sample k*step (it covers
  [k*step - B/2, k*step + B/2), zeros outside the signal) and is stamped k*step/sr;
  periodic Hann window (0.5 - 0.5*cos(2*pi*i/B)) in double; unscaled double FFT whose
  bins 0..B/2 reach the plugin as float32 (re, im) pairs;
- qm-mfcc: double magnitudes sqrt(re^2 + im^2) of bins 0..B/2-1 (Nyquist dropped), 40 triangular filters
  (13 linear edges from 66.6666666 Hz spaced 66.66666666 Hz, then x1.0711703), heights
  2/(upper-lower), log10(e) if e > 0 else 0, orthonormal DCT-II, c0..c19 as float32;
- bbc-spectral-contrast: float32 |X| of bins 0..B/2-1, bin i in the first band whose upper
  edge sr/2^(7-k) is >= (i+1)*sr/B (sizes 8/8/16/32/64/128/256), per band the float32
  mean of the k smallest (valleys) / k largest (peaks) magnitudes, k = round(0.02*n) for
  n >= 50 else 1.

The spectra are computed in double precision like the host's KissFFT (FFTW through
pyFFTW when it is installed, else scipy's pocketfft: bit-identical outputs either way): a
float32 FFT is 2-3x cheaper but its rounding noise, relative to the loudest bins, swamps
the quietest bins that the valleys and the quiet MFCC filters are made of (relative errors
up to 7e-3 against the golden files instead of ~3e-7). Windowing, magnitudes and the
contrast statistics are compiled loops (shared.feature_kernels, numba) that follow the
plugins' arithmetic step by step; the MFCC filterbank, log and DCT are numpy over blocks of
frames. Frames are processed in blocks that stay in cache (about 7 ms per 30-s chunk at
22 050 Hz on one core, under half a plain scipy.fft double rfft of the same frames); there
is no Python loop over frames. The outputs are bit-identical to the golden csv_digits9 files.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable

import numpy as np
import scipy.fftpack

from shared import logmel
from shared.featurespec import ChunkFeatures, FeatureSpec

Extractor = Callable[[np.ndarray, int], ChunkFeatures]

BACKENDS = ("builtin", "sonic-annotator")

HOST_BLOCK = 1024
MFCC_BLOCK, MFCC_STEP, N_MFCC, N_FILTERS = 2048, 1024, 20, 40
CONTRAST_BLOCK, CONTRAST_STEP, N_BANDS = 1024, 512, 7
CONTRAST_ALPHA = np.float32(0.02)

# MFCC frames per FFT block (twice as many contrast frames): small enough for the double
# spectra of a block to stay in cache. Magnitudes of _POST_FRAMES frames are then reduced
# together (filterbank, log, DCT, band statistics), to amortise the numpy calls.
_FFT_FRAMES = 32
_POST_FRAMES = 128
_FILTER_GROUP = 10


def periodic_hann(n: int) -> np.ndarray:
    """The Vamp host's Hann window: 0.5 - 0.5*cos(2*pi*i/n), i = 0..n-1 (periodic), double."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def mfcc_filterbank(sample_rate: float, block: int = MFCC_BLOCK) -> np.ndarray:
    """qm-dsp MFCC's filter weights, shape (40, block // 2), double, as MFCC.cpp builds them."""
    fs = float(int(np.rint(np.float32(sample_rate))))  # lrintf(inputSampleRate)
    freqs = np.empty(N_FILTERS + 2)
    for i in range(13):
        freqs[i] = 66.6666666 + float(i) * 66.66666666
    for i in range(13, N_FILTERS + 2):
        freqs[i] = freqs[12] * math.pow(1.0711703, float(i - 12))
    lower = freqs[:N_FILTERS, None]
    centre = freqs[1 : N_FILTERS + 1, None]
    upper = freqs[2:, None]
    height = 2.0 / (upper - lower)
    fb = (np.arange(block, dtype=np.float64) / float(block) * fs)[None, : block // 2]
    rising = np.where((fb > lower) & (fb <= centre), height * (fb - lower) / (centre - lower), 0.0)
    falling = np.where((fb > centre) & (fb < upper), height * (upper - fb) / (upper - centre), 0.0)
    return rising + falling


def mfcc_dct(n_ceps: int = N_MFCC, n_filters: int = N_FILTERS) -> np.ndarray:
    """qm-dsp's DCT matrix (n_ceps, n_filters): the orthonormal DCT-II, c0 included."""
    i = np.arange(n_ceps, dtype=np.float64)[:, None]
    j = np.arange(n_filters, dtype=np.float64)[None, :]
    d = (1.0 / math.sqrt(n_filters / 2.0)) * np.cos(i * (j + 0.5) / float(n_filters) * math.pi)
    d[0] *= math.sqrt(2.0) / 2.0
    return d


def contrast_bands(sample_rate: float, block: int = CONTRAST_BLOCK, n_bands: int = N_BANDS) -> list[tuple[int, int, int]]:
    """(first bin, end bin, k) per band, with the plugin's float32 band assignment and k rule."""
    sr = np.float32(sample_rate)
    high = [np.float32(sr / np.float32(2.0) ** np.float32(n_bands - k)) for k in range(n_bands)]
    band_of = np.empty(block // 2, dtype=np.int64)
    band = 0
    for i in range(block // 2):
        freq = np.float32(np.float32(i + 1) * sr / np.float32(block))
        while band < n_bands - 1 and freq > high[band]:
            band += 1
        band_of[i] = band
    out = []
    inv_alpha = np.float32(1.0) / CONTRAST_ALPHA
    for b in range(n_bands):
        idx = np.flatnonzero(band_of == b)
        if len(idx) == 0:
            raise ValueError(f"spectral contrast band {b} is empty at {sample_rate} Hz")
        n = len(idx)
        k = int(np.rint(np.float32(n) * CONTRAST_ALPHA)) if np.float32(n) >= inv_alpha else 1
        out.append((int(idx[0]), int(idx[-1]) + 1, max(1, min(k, n))))
    return out


@dataclass(frozen=True)
class _Plan:
    """Everything that depends only on the sample rate, computed once."""

    win_mfcc: np.ndarray  # (2048,) double
    win_contrast: np.ndarray  # (1024,) double
    mfcc_lo: int  # first bin with a non-zero filter weight
    mfcc_hi: int  # one past the last
    weights_t: np.ndarray  # (mfcc_hi - mfcc_lo, 40) double, C-contiguous
    filter_groups: tuple[tuple[int, int, int, int, np.ndarray], ...]  # (f0, f1, b0, b1, weights_t[b0:b1, f0:f1])
    dct_t: np.ndarray  # (40, 20) double
    band_start: np.ndarray  # contrast bands: first bin, end bin and k, int64 each
    band_end: np.ndarray
    band_k: np.ndarray
    bands: tuple[tuple[int, int, int], ...]


@lru_cache(maxsize=16)
def _plan(sample_rate: float) -> _Plan:
    weights = mfcc_filterbank(sample_rate)
    used = np.flatnonzero(weights.any(axis=0))
    lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (1, 2)
    lo = max(lo, 1)  # bin 0 (DC) has weight 0 in every filter: fb = 0 is never > lower
    weights_t = np.ascontiguousarray(weights[:, lo:hi].T)
    # The filterbank is banded: groups of filters touch only a range of bins each.
    groups = []
    for f0 in range(0, N_FILTERS, _FILTER_GROUP):
        f1 = min(f0 + _FILTER_GROUP, N_FILTERS)
        nz = np.flatnonzero(weights_t[:, f0:f1].any(axis=1))
        b0, b1 = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 1)
        groups.append((f0, f1, b0, b1, np.ascontiguousarray(weights_t[b0:b1, f0:f1])))
    bands = contrast_bands(sample_rate)
    start, end, k = (np.array(col, dtype=np.int64) for col in zip(*bands))
    return _Plan(
        win_mfcc=periodic_hann(MFCC_BLOCK),
        win_contrast=periodic_hann(CONTRAST_BLOCK),
        mfcc_lo=lo,
        mfcc_hi=hi,
        weights_t=weights_t,
        filter_groups=tuple(groups),
        dct_t=np.ascontiguousarray(mfcc_dct().T),
        band_start=start,
        band_end=end,
        band_k=k,
        bands=tuple(bands),
    )


def n_host_blocks(n_samples: int) -> int:
    return max(1, -(-int(n_samples) // HOST_BLOCK))


def frame_times(n_frames: int, step: int, sample_rate: float) -> np.ndarray:
    """Timestamps (s, float64) of the frames: frame k is stamped k*step/sample_rate."""
    return np.arange(n_frames, dtype=np.float64) * float(step) / float(sample_rate)


def frame_times_ns(n_frames: int, step: int, sample_rate: int) -> np.ndarray:
    """Exact timestamps in integer nanoseconds, as Vamp's RealTime::frame2RealTime rounds
    them (to the nearest ns); what the CSV writer prints."""
    sr = int(sample_rate)
    last = max(int(n_frames) - 1, 0) * int(step)
    if 2 * last * 1_000_000_000 + sr >= 2**63:
        raise ValueError("timestamps beyond 2**62 ns are not supported")
    frames = np.arange(n_frames, dtype=np.int64) * int(step)
    return (2 * frames * 1_000_000_000 + sr) // (2 * sr)


def _rfft_packed(frames: np.ndarray) -> None:
    """Unscaled double FFT of each row, in place, in fftpack's packed real layout
    [r0, r1, i1, r2, i2, ..., r(B/2)]: (re, im) of bins 1 .. B/2-1 already interleaved, as
    in a complex array (same pocketfft code and values as scipy.fft.rfft, no copy)."""
    out = scipy.fftpack.rfft(frames, axis=1, overwrite_x=True)
    if not np.shares_memory(out, frames):  # overwrite_x is a hint; keep the contract
        frames[...] = out


class _FrameFFT:
    """Double real FFTs of blocks of windowed frames, per thread.

    With pyFFTW (FFTW 3, plans made with FFTW_ESTIMATE: deterministic, no timing runs) a
    block of 32 frames of 2048 or 64 of 1024 takes half of pocketfft's time here; without
    it (or with GENRE_FFT=pocketfft), scipy.fftpack in place. `frames(n, block)` is the
    buffer to write the windowed frames into; `run(n, block)` transforms it.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._local = threading.local()

    def _plans(self) -> dict:
        plans = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = {}
        return plans

    def frames(self, n: int, block: int) -> np.ndarray:
        key = (n, block)
        plans = self._plans()
        if key not in plans:
            if self.backend == "fftw":
                import pyfftw

                inp = pyfftw.empty_aligned((n, block), dtype="float64")
                out = pyfftw.empty_aligned((n, block // 2 + 1), dtype="complex128")
                plan = pyfftw.FFTW(inp, out, axes=(1,), direction="FFTW_FORWARD", flags=("FFTW_ESTIMATE",), threads=1)
                plans[key] = (inp, out, plan)
            else:
                plans[key] = (np.empty((n, block), dtype=np.float64), None, None)
            if len(plans) > 64:  # odd block lengths at the ends of many signal lengths
                plans.pop(next(iter(plans)))
        return plans[key][0]

    def run(self, n: int, block: int) -> tuple[np.ndarray, int, np.ndarray]:
        """FFT of the frames buffer: (pairs, off, dc), where bin j's (re, im) for j = 1 ..
        B/2-1 are pairs[r, off + 2*(j-1)] and [.. + 1] (a C-contiguous double array, so
        the compiled loops read it at full speed) and dc[r] is the (real) DC bin."""
        inp, out, plan = self._plans()[(n, block)]
        if plan is None:
            _rfft_packed(inp)
            return inp, 1, inp[:, 0]
        plan()
        return out.view(np.float64), 2, out[:, 0].real


def _fft_backend() -> str:
    wanted = os.environ.get("GENRE_FFT", "auto").strip().lower()
    if wanted not in ("auto", "fftw", "pocketfft"):
        raise ValueError(f"GENRE_FFT={wanted!r}: expected auto, fftw or pocketfft")
    if wanted == "pocketfft":
        return "pocketfft"
    try:
        importlib.import_module("pyfftw")
    except (ImportError, OSError) as exc:  # not installed, or its FFTW library does not load
        if wanted == "fftw":
            raise ImportError(f"GENRE_FFT=fftw but pyFFTW cannot be used ({exc}); pip install pyfftw") from None
        return "pocketfft"
    return "fftw"


_FFT = _FrameFFT(_fft_backend())


def fft_backend() -> str:
    """Which FFT the built-in extractor uses: "fftw" (pyFFTW) or "pocketfft" (scipy)."""
    return _FFT.backend


class _Scratch:
    """One thread's work arrays for one sample rate, reused from chunk to chunk.

    Allocating them per call costs ~500 page faults per 30-s chunk (1.5-2 ms, a fifth
    of the extractor) whenever the process also handles large buffers (Kafka messages,
    other work) and glibc hands the freed pages back to the kernel in between."""

    def __init__(self, n_mfcc_bins: int, contrast_scratch: int) -> None:
        self.mag1 = np.empty((_POST_FRAMES, n_mfcc_bins), dtype=np.float64)
        self.contrast = np.empty(contrast_scratch, dtype=np.float32)
        self.energy = np.empty((_POST_FRAMES, N_FILTERS), dtype=np.float64)
        self.logs = np.empty((_POST_FRAMES, N_FILTERS), dtype=np.float64)


_SCRATCH = threading.local()


def _scratch(plan: _Plan, sample_rate: float) -> _Scratch:
    per_thread = getattr(_SCRATCH, "by_rate", None)
    if per_thread is None:
        per_thread = _SCRATCH.by_rate = {}
    ws = per_thread.get(sample_rate)
    if ws is None:
        if len(per_thread) >= 4:  # a few sample rates per thread at most
            per_thread.clear()
        contrast = _kernels().contrast_scratch_size(2 * _FFT_FRAMES, CONTRAST_BLOCK // 2, int(plan.band_k.max()))
        ws = per_thread[sample_rate] = _Scratch(plan.mfcc_hi - plan.mfcc_lo, contrast)
    return ws


def _kernels():
    """The compiled loops (shared.feature_kernels), imported on first use: importing numba
    takes ~0.3 s that commands which never extract should not pay."""
    from shared import feature_kernels

    return feature_kernels


def extract_features(pcm: np.ndarray, sample_rate: int = 22050) -> ChunkFeatures:
    """MFCC (K, 20), spectral-contrast peaks and valleys (2K, 7), float32, K = ceil(N/1024).

    `pcm` is mono audio (any length >= 1; float32 as sonic-annotator reads it: int16/32768).
    """
    x = np.ascontiguousarray(pcm, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"pcm must be mono (1-D), got shape {x.shape}")
    if x.size < 1:
        raise ValueError("pcm is empty")
    if not np.isfinite(sample_rate) or sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate!r}")
    kernels = _kernels()
    if not kernels.all_finite(x):
        raise ValueError("pcm has NaN or infinite samples")
    rate = float(sample_rate)
    plan = _plan(rate)
    k1 = n_host_blocks(x.size)
    k2 = 2 * k1
    mfcc = np.empty((k1, N_MFCC), dtype=np.float32)
    peaks = np.empty((k2, N_BANDS), dtype=np.float32)
    valleys = np.empty((k2, N_BANDS), dtype=np.float32)
    lo, hi = plan.mfcc_lo, plan.mfcc_hi
    half = CONTRAST_BLOCK // 2
    fb, sb = _FFT_FRAMES, _POST_FRAMES
    fft = _FFT
    ws = _scratch(plan, rate)
    mag1 = ws.mag1
    for S in range(0, k1, sb):
        E = min(S + sb, k1)
        # Spectra of blocks of fb frames (kept in cache), magnitudes gathered for sb frames.
        for s in range(S, E, fb):
            e = min(s + fb, E)
            n = e - s
            kernels.window_frames(x, s * HOST_BLOCK - HOST_BLOCK, MFCC_STEP, plan.win_mfcc, fft.frames(n, MFCC_BLOCK))
            pairs, off, _ = fft.run(n, MFCC_BLOCK)
            kernels.mfcc_magnitudes(pairs, off, lo, hi, mag1[s - S : e - S])
            kernels.window_frames(x, s * HOST_BLOCK - half, CONTRAST_STEP, plan.win_contrast,
                                  fft.frames(2 * n, CONTRAST_BLOCK))
            pairs, off, dc = fft.run(2 * n, CONTRAST_BLOCK)
            kernels.contrast_frames(pairs, off, dc, plan.band_start, plan.band_end, plan.band_k, ws.contrast,
                                    peaks[2 * s : 2 * e], valleys[2 * s : 2 * e])
        # --- qm-mfcc: filterbank (banded), log10 (0 for an empty filter), DCT ------------
        m1 = mag1[: E - S]
        energy, logs = ws.energy[: E - S], ws.logs[: E - S]
        for f0, f1, b0, b1, wt in plan.filter_groups:
            np.matmul(m1[:, b0:b1], wt, out=energy[:, f0:f1])
        logs.fill(0.0)
        np.log10(energy, out=logs, where=energy > 0)
        np.matmul(logs, plan.dct_t, out=mfcc[S:E], casting="same_kind")
    np.nan_to_num(mfcc, copy=False, nan=0.0)
    return ChunkFeatures(mfcc=mfcc, peaks=peaks, valleys=valleys)


def extract_chunk(pcm: np.ndarray, spec: FeatureSpec, extract: Extractor) -> ChunkFeatures:
    """Every array of `spec` for one chunk: the Vamp backend's, plus the log-mel when the
    spec has one. The extractor service, `genre classify` and training all call this, so
    a spec means the same arrays everywhere."""
    feats = extract(pcm, spec.sample_rate)
    if spec.mel_bands == 0:
        return feats
    computed = (logmel.MEL_BANDS, logmel.MEL_SAMPLE_RATE, logmel.MEL_FFT, logmel.MEL_HOP)
    if (spec.mel_bands, spec.mel_sample_rate, spec.mel_fft, spec.mel_hop) != computed:
        raise ValueError(f"spec {spec.id} asks for a log-mel this code does not compute "
                         f"(bands, rate, FFT, hop = {computed})")
    return replace(feats, logmel=logmel.log_mel_chunk(pcm, spec.sample_rate))


def get_extractor(backend: str) -> Extractor:
    """The feature extractor for a backend name: "builtin" or "sonic-annotator"."""
    name = (backend or "").strip().lower()
    if name == "builtin":
        return extract_features
    if name == "sonic-annotator":
        from shared.sonic_annotator import extract_features as sonic_extract
        from shared.sonic_annotator import find_binary

        find_binary()  # fail now, with a clear message, if it is not on PATH
        return sonic_extract
    raise ValueError(f"unknown feature extractor backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
