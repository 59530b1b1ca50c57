"""tools/pretrained_probe.py: the re-implemented musicnn and its input match the originals."""

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


# What the original TF1 code (musicnn 0.1.0, models.define_model + Saver.restore) computed
# for the two patches of _signal(): the first tag probabilities and penultimate units.
ORIGINAL = {
    "MSD_musicnn": {
        "tags": [[0.02816, 0.01094, 0.02806, 0.05994, 0.51121, 0.01998], [0.02905, 0.01097, 0.02877, 0.06567, 0.53471, 0.01950]],
        "pen": [[-0.1772, 0.3132, -0.2848, -0.2751], [-0.1772, 0.4224, -0.2848, -0.2751]],
        "top_tag": [4, 4],  # "electronic"
    },
    "MTT_musicnn": {
        "tags": [[0.00144, 0.00002, 0.01380, 0.50565, 0.00001, 0.03688], [0.00116, 0.00001, 0.00817, 0.59712, 0.0, 0.02561]],
        "pen": [[-0.0800, 1.0097, 1.3997, 0.4011], [-0.0800, 0.9693, 1.5145, 0.1512]],
        "top_tag": [3, 3],  # "techno"
    },
}


@needs_weights
@pytest.mark.parametrize("model", sorted(ORIGINAL))
def test_reimplemented_musicnn_reproduces_the_original(model: str) -> None:
    mel = pp.log_mel(_signal())
    out = pp.Musicnn.load(model)(np.stack([mel[:187], mel[187:374]]))
    ref = ORIGINAL[model]
    assert out["tags"].shape == (2, 50) and out["pen"].shape == (2, 200)
    np.testing.assert_allclose(out["tags"][:, :6], ref["tags"], atol=2e-5)
    np.testing.assert_allclose(out["pen"][:, :4], ref["pen"], atol=2e-4)
    assert out["tags"].argmax(1).tolist() == ref["top_tag"]


@needs_weights
def test_describe_chunks_is_mean_and_std_over_patches() -> None:
    net = pp.Musicnn.load("MSD_musicnn")
    patches = pp.chunk_patches(np.tile(_signal(), 5)[: 30 * 16000])
    x = pp.describe_chunks(patches, [net])
    direct = net(patches[0])
    assert x.shape == (1, 500)
    np.testing.assert_allclose(x[0, :200], direct["pen"].mean(0), atol=1e-5)
    np.testing.assert_allclose(x[0, 200:400], direct["pen"].std(0), atol=1e-5)
    np.testing.assert_allclose(x[0, 400:450], direct["tags"].mean(0), atol=1e-6)


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(pp.ProbeError, match="no musicnn checkpoint"):
        pp.Musicnn.load("MSD_musicnn", weights_dir=tmp_path)
