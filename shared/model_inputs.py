"""The model's input preprocessing, shared by training and serving (`ModelArtifact.input_arrays`):
plain numpy over (n, T, F) float32 arrays, in a module of its own so its tests (and its
mutation testing) need no TensorFlow.

- ``stack_features``: a batch of chunk features as (n, T, F) arrays, padded or cut to the
  model's frame count.
- ``loudness_normalise``, ``loudness = "chunk"``: MFCC c0 minus its mean over the chunk;
  spectral-contrast peaks and valleys (linear magnitudes) divided by the mean of the
  chunk's peaks, as log10(ratio + CONTRAST_REL_EPS). A gain change scales every magnitude
  by the same factor and shifts c0 by a constant, so both vanish. ``"none"``: unchanged.
- ``compute_normalisation`` / ``apply_normalisation``: per-channel standardisation with
  the training set's mean and standard deviation.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from shared.featurespec import ChunkFeatures

CONTRAST_REL_EPS = 1e-5  # floor of contrast magnitudes relative to the chunk's mean peak
VAMP_INPUTS = ("mfcc", "peaks", "valleys")


def stack_features(
    batch: Sequence[ChunkFeatures],
    frames: Mapping[str, int],
    names: Sequence[str] = VAMP_INPUTS,
    widths: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Stack a batch into (n, T, F) float32 arrays, padding (zeros at the end) or cutting
    each chunk's time axis to the model's frame count. `widths` (default: the first
    chunk's) is the required channel count of each array."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        t = int(frames[name])
        if widths is not None:
            width = int(widths[name])
        else:
            first = np.asarray(getattr(batch[0], name)) if batch else None
            width = first.shape[1] if first is not None and first.ndim == 2 else 0
        arr = np.zeros((len(batch), t, width), dtype=np.float32)
        for i, feat in enumerate(batch):
            a = np.asarray(getattr(feat, name), dtype=np.float32)
            if a.ndim != 2 or a.shape[1] != width:
                raise ValueError(f"chunk {i}: {name} has shape {a.shape}, expected (frames, {width})")
            n = min(t, a.shape[0])
            arr[i, :n] = a[:n]
        out[name] = arr
    return out


def _float32(a: np.ndarray, inplace: bool) -> np.ndarray:
    """`a` itself when in place and already float32 (else a float32 copy)."""
    return np.asarray(a, dtype=np.float32) if inplace else np.array(a, dtype=np.float32)


def loudness_normalise(arrays: Mapping[str, np.ndarray], mode: str, *, inplace: bool = False) -> dict[str, np.ndarray]:
    """Remove the chunk's level from (n, T, F) feature arrays (see the module docstring).

    float32 throughout (the level is accumulated in double); `inplace` reuses float32
    inputs as the outputs, which the classifier does with the batch it has just stacked:
    fewer passes over memory that is cold in cache."""
    if mode not in ("chunk", "none"):
        raise ValueError(f"unknown loudness mode {mode!r}; expected 'chunk' or 'none'")
    out = {k: _float32(v, inplace) for k, v in arrays.items()}
    if mode == "none":
        return out
    if "mfcc" in out:
        m = out["mfcc"]
        m[:, :, 0] -= m[:, :, 0].mean(axis=1, keepdims=True)
    level = None
    for name in ("peaks", "valleys"):
        if name in out and level is None:
            level = out[name].mean(axis=(1, 2), keepdims=True, dtype=np.float64) + 1e-12
    for name in ("peaks", "valleys"):
        if name in out:
            a = out[name]
            np.maximum(a, 0.0, out=a)
            a *= (1.0 / level).astype(np.float32)
            a += np.float32(CONTRAST_REL_EPS)
            np.log10(a, out=a)
    return out


def compute_normalisation(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """Per-channel mean and std over all chunks and frames of (n, T, F) arrays."""
    stats: dict[str, dict[str, list[float]]] = {}
    for name, a in arrays.items():
        a64 = np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1])
        mean = a64.mean(axis=0)
        std = a64.std(axis=0)
        std = np.where(std < 1e-6, 1.0, std)
        stats[name] = {"mean": [float(x) for x in mean], "std": [float(x) for x in std]}
    return stats


def apply_normalisation(arrays: Mapping[str, np.ndarray], stats: Mapping[str, Mapping[str, Sequence[float]]],
                        *, inplace: bool = False) -> dict[str, np.ndarray]:
    """(x - mean) / std per channel of (n, T, F) arrays, float32.

    The per-channel statistics are tiled along the frames first: broadcast over the last
    axis alone, numpy runs its inner loop once per frame (7 or 20 values), which made this
    the classifier's most expensive preprocessing step; tiled, each chunk is one loop.
    The same float32 operations on each element: the results are bit-identical."""
    out = {}
    for name, a in arrays.items():
        x = _float32(a, inplace)
        if name not in stats:  # standardised inside the network (the pre-trained embedding)
            out[name] = x
            continue
        mean, std = _tiled_stats(stats, name, x.shape[1:])
        flat = x.reshape(x.shape[0], math.prod(x.shape[1:])) if x.ndim >= 2 and x.flags.c_contiguous else None
        if flat is None:  # not one block of memory: broadcast per channel
            x -= mean.reshape(x.shape[1:])
            x /= std.reshape(x.shape[1:])
        else:
            flat -= mean
            flat /= std
        out[name] = x
    return out


def _tiled_stats(stats: Mapping[str, Mapping[str, Sequence[float]]], name: str,
                 shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """float32 mean and std of channel `name` repeated over the frames of `shape` (T, F), flat."""
    s = stats[name]
    mean = np.asarray(s["mean"], dtype=np.float32)
    std = np.asarray(s["std"], dtype=np.float32)
    reps = math.prod(shape[:-1])  # 1 for a (F,) shape
    return np.tile(mean, reps), np.tile(std, reps)
