"""shared/logmel.py: the 16-kHz log-mel that musicnn reads, from a 22,050-Hz chunk."""

from __future__ import annotations

import numpy as np
import pytest

from shared import logmel
from shared.featurespec import MEL_SPEC

SR = 22050


def _chunk(seconds: float = 30.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) * (t % 0.5 < 0.25)
    return (x + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def test_a_30_s_chunk_gives_1876_frames_of_96_float32_bands_as_the_spec_says() -> None:
    mel = logmel.log_mel_chunk(_chunk(), SR)
    assert mel.shape == (1876, 96) == MEL_SPEC.feature_shapes()["logmel"]
    assert mel.dtype == np.float32 and np.isfinite(mel).all()
    assert logmel.resampled_length(30 * SR, SR) == 480000


def test_deterministic_bit_for_bit() -> None:
    pcm = _chunk()
    np.testing.assert_array_equal(logmel.log_mel_chunk(pcm, SR), logmel.log_mel_chunk(pcm.copy(), SR))


def test_gain_does_not_change_it() -> None:
    pcm = _chunk()
    ref = logmel.log_mel_chunk(pcm, SR)
    for db in (-12.0, 6.0):
        scaled = (pcm * np.float32(10 ** (db / 20))).astype(np.float32)
        np.testing.assert_allclose(logmel.log_mel_chunk(scaled, SR), ref, rtol=0, atol=1e-4)


def test_the_chunk_is_scaled_to_the_fixed_rms_before_the_spectrogram() -> None:
    pcm = _chunk(3.0).astype(np.float64)
    x = logmel.to_16k(pcm, SR)
    expected = logmel.log_mel_16k(x * (logmel.TARGET_RMS / np.sqrt(np.mean(x * x))))
    np.testing.assert_array_equal(logmel.log_mel_chunk(pcm, SR), expected)


def test_digital_silence_is_finite() -> None:
    mel = logmel.log_mel_chunk(np.zeros(30 * SR, np.float32), SR)
    assert mel.shape == (1876, 96) and np.isfinite(mel).all() and mel.max() == 0.0


@pytest.mark.parametrize("freq", [440.0, 1000.0, 4000.0])
def test_a_tone_at_22050_hz_lands_in_its_mel_band_after_resampling(freq: float) -> None:
    t = np.arange(5 * SR) / SR
    mel = logmel.log_mel_chunk(0.5 * np.sin(2 * np.pi * freq * t), SR)
    fb = logmel.mel_filterbank()
    band = int(np.argmax(mel[100]))
    assert fb[band, int(round(freq * logmel.MEL_FFT / logmel.MEL_SAMPLE_RATE))] > 0


def test_mel_filterbank_matches_librosa_slaney_filters() -> None:
    # librosa.filters.mel(sr=16000, n_fft=512, n_mels=96), librosa 0.11: nonzero entries of three rows
    fb = logmel.mel_filterbank()
    assert fb.shape == (96, 257)
    assert np.flatnonzero(fb[0]).tolist() == [1] and fb[0, 1] == pytest.approx(0.0319992, abs=1e-6)
    assert np.flatnonzero(fb[20]).tolist() == [20, 21]
    assert fb[20, 20:22] == pytest.approx([0.0031714, 0.0288278], abs=1e-6)
    assert np.flatnonzero(fb[95]).tolist() == list(range(241, 256))
    assert fb[95, 248] == pytest.approx(0.0039846, abs=1e-6)
    assert fb.sum() == pytest.approx(3.071914, abs=1e-5)
