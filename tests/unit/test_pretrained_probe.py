"""tools/pretrained_probe.py: its input, its chunk description and its errors.

The network itself (shared/musicnn.py) is checked against the original TF1 tagger in
tests/unit/test_musicnn.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from shared import logmel

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import pretrained_probe as pp  # noqa: E402

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None, reason="musicnn weights not installed (pip install --no-deps musicnn==0.1.0)"
)


def test_log_mel_frames_and_a_tone_lands_in_its_band() -> None:
    t = np.arange(16000) / 16000
    mel = pp.log_mel(0.5 * np.sin(2 * np.pi * 1000 * t))
    assert mel.shape == (1 + 16000 // logmel.MEL_HOP, pp.N_MELS) and mel.dtype == np.float32
    centres = np.argmax(logmel.mel_filterbank(), axis=1) * 16000 / logmel.MEL_FFT
    assert abs(centres[int(np.argmax(mel[30]))] - 1000) < 100
    assert pp.log_mel(np.zeros(16000)).max() == 0.0


def test_chunk_patches_drop_the_tail_and_ignore_gain() -> None:
    rng = np.random.default_rng(1)
    pcm = rng.standard_normal(int(65 * pp.SAMPLE_RATE)) * 0.05
    patches = pp.chunk_patches(pcm)
    assert patches.shape == (2, pp.PATCHES_PER_CHUNK, pp.PATCH_FRAMES, pp.N_MELS)
    louder = pp.chunk_patches(pcm * 4.0)
    np.testing.assert_allclose(louder, patches, atol=1e-4)
    assert pp.chunk_patches(pcm, max_chunks=1).shape[0] == 1


def _signal() -> np.ndarray:
    t = np.arange(int(6.5 * 16000)) / 16000
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t) * (t % 0.5 < 0.25)
            + 0.05 * rng.standard_normal(len(t)))


@pytest.fixture(scope="module")
def msd():
    return pp.load_networks(["MSD_musicnn"])[0]


@needs_weights
def test_describe_chunks_is_mean_and_std_over_patches(msd) -> None:
    patches = pp.chunk_patches(np.tile(_signal(), 5)[: 30 * 16000])
    x = pp.describe_chunks(patches, [msd])
    direct = np.asarray(msd(patches[0], training=False))  # penultimate (200) then tags (50)
    pen, tags = direct[:, :200], direct[:, 200:]
    assert x.shape == (1, 500) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :200], pen.mean(0), atol=1e-5)
    np.testing.assert_allclose(x[0, 200:400], pen.std(0), atol=1e-5)
    np.testing.assert_allclose(x[0, 400:450], tags.mean(0), atol=1e-6)
    np.testing.assert_allclose(x[0, 450:500], tags.std(0), atol=1e-6)
    assert pp.describe_chunks(patches[:0], [msd, msd]).shape == (0, 1000)


@needs_weights
def test_patch_outputs_in_batches_equal_one_call(msd) -> None:
    patches = pp.chunk_patches(np.tile(_signal(), 5)[: 30 * 16000])[0]
    whole = pp.patch_outputs(msd, patches)
    assert whole.shape == (pp.PATCHES_PER_CHUNK, 250)
    np.testing.assert_allclose(pp.patch_outputs(msd, patches, batch_size=3), whole, atol=1e-5)


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(pp.ProbeError, match="no musicnn checkpoint") as err:
        pp.load_networks(["MSD_musicnn"], folder=tmp_path)
    assert "pip install --no-deps musicnn==0.1.0" in str(err.value)
    assert isinstance(err.value.__cause__, pp.WeightsError)
