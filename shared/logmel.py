"""The pre-trained network's input: a 96-band log-mel spectrogram at 16 kHz.

musicnn (`shared/musicnn.py`) was trained on 16-kHz audio, a 512-point STFT with hop 256,
96 Slaney mel bands (librosa's defaults for those sizes) and log10(10000 x + 1). A chunk
arrives as 30 s at the feature spec's 22,050 Hz, so it is resampled here (polyphase,
exact ratio 320/441), then scaled to a fixed RMS: a gain change of the song leaves this
input unchanged, so no model can learn loudness from it. The extractor, `genre classify`
and training all call `log_mel_chunk`, so they see the very same numbers.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

MEL_SAMPLE_RATE = 16000
MEL_FFT = 512
MEL_HOP = 256
MEL_BANDS = 96
TARGET_RMS = 0.1
SILENCE_RMS = 1e-8  # below this a chunk is digital silence: left unscaled


def mel_frames(n_samples_16k: int) -> int:
    """Frames of a centred STFT over n samples at 16 kHz."""
    return 1 + n_samples_16k // MEL_HOP


def resampled_length(n_samples: int, sample_rate: int) -> int:
    g = gcd(MEL_SAMPLE_RATE, sample_rate)
    up, down = MEL_SAMPLE_RATE // g, sample_rate // g
    return -(-n_samples * up // down)


@lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int = MEL_SAMPLE_RATE, n_fft: int = MEL_FFT, n_mels: int = MEL_BANDS) -> np.ndarray:
    """Slaney-style mel filters with Slaney area normalisation (librosa's default), (n_mels, n_fft//2+1)."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        lin = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, lin)

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


def log_mel_16k(pcm: np.ndarray) -> np.ndarray:
    """(frames, 96) float32 of 16-kHz audio: centred zero-padded frames, periodic Hann
    window, power spectrum, mel, log10(10000 x + 1) (musicnn's own input)."""
    x = np.pad(np.asarray(pcm, dtype=np.float64), MEL_FFT // 2)
    n = 1 + (len(x) - MEL_FFT) // MEL_HOP
    frames = np.lib.stride_tricks.as_strided(x, (n, MEL_FFT), (x.strides[0] * MEL_HOP, x.strides[0]))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_FFT) / MEL_FFT)
    spec = np.fft.rfft(frames * window, axis=1)
    power = spec.real**2 + spec.imag**2
    return np.log10(10000.0 * (power @ mel_filterbank().T) + 1.0).astype(np.float32)


def to_16k(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (float64)."""
    x = np.asarray(pcm, dtype=np.float64)
    if sample_rate == MEL_SAMPLE_RATE:
        return x
    from scipy.signal import resample_poly

    g = gcd(MEL_SAMPLE_RATE, sample_rate)
    return resample_poly(x, MEL_SAMPLE_RATE // g, sample_rate // g)


def log_mel_chunk(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 96) float32 log-mel of one chunk, resampled to 16 kHz and scaled to a fixed RMS."""
    x = to_16k(pcm, sample_rate)
    rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
    if rms > SILENCE_RMS:
        x = x * (TARGET_RMS / rms)
    return log_mel_16k(x)
