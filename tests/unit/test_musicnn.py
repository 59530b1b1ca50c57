"""shared/musicnn.py: the Keras musicnn reproduces the original TF1 tagger, patch by patch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from shared import logmel, musicnn

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None, reason="musicnn weights not installed (pip install --no-deps musicnn==0.1.0)"
)
INSTALL = "pip install --no-deps musicnn==0.1.0"


def _signal() -> np.ndarray:
    """6.5 s at 16 kHz: a tone, a gated tone an octave and a fifth up, a little noise."""
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


@pytest.fixture(scope="module")
def networks():
    return {n: musicnn.build_patch_network(n, musicnn.read_checkpoint(n)) for n in ORIGINAL}


@needs_weights
@pytest.mark.parametrize("network", sorted(ORIGINAL))
def test_patch_network_reproduces_the_original(networks, network: str) -> None:
    mel = logmel.log_mel_16k(_signal())
    out = np.asarray(networks[network](np.stack([mel[:187], mel[187:374]]), training=False))
    assert out.shape == (2, musicnn.EMBEDDING) == (2, 250)
    pen, tags = out[:, : musicnn.PENULTIMATE], out[:, musicnn.PENULTIMATE :]
    ref = ORIGINAL[network]
    np.testing.assert_allclose(tags[:, :6], ref["tags"], atol=2e-5)
    np.testing.assert_allclose(pen[:, :4], ref["pen"], atol=2e-4)
    assert tags.argmax(1).tolist() == ref["top_tag"]
    assert ((tags >= 0) & (tags <= 1)).all()


@needs_weights
def test_patch_network_is_frozen_and_holds_the_checkpoint(networks) -> None:
    net = networks["MSD_musicnn"]
    assert not net.trainable and not net.trainable_weights
    ckpt = musicnn.read_checkpoint("MSD_musicnn")
    assert not any("Adam" in k or "_power" in k for k in ckpt)
    np.testing.assert_array_equal(net.get_layer("msd_musicnn_tags").get_weights()[0], ckpt["dense_1/kernel"])
    # the front end's filters whose batch norm has a negative gamma are stored negated
    sign = musicnn.front_signs(ckpt, 0)
    assert set(sign.tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(net.get_layer("msd_musicnn_front0").get_weights()[0], ckpt["conv2d/kernel"] * sign)


@needs_weights
@pytest.mark.parametrize("k", range(5))
def test_front_end_pooled_first_gives_the_tf1_order_bit_for_bit(networks, k: int) -> None:
    """The TF1 order (conv + ReLU, batch norm, then the max over frequency) against the
    network's (max over frequency first): the very same float32 numbers, on every filter,
    those with a negative gamma included."""
    import keras
    from keras import layers

    net = networks["MSD_musicnn"]
    ckpt = musicnn.read_checkpoint("MSD_musicnn")
    rng = np.random.default_rng(k)
    mel = logmel.log_mel_16k(_signal())
    batch = np.concatenate([np.stack([mel[:187], mel[187:374]]), rng.normal(2.0, 1.5, (3, 187, 96))]).astype(np.float32)
    source = net.get_layer("msd_musicnn_pad_front" if k < 2 else "msd_musicnn_input_bn").output
    conv_in = keras.Model(net.inputs, source)([batch])
    kernel, bias = musicnn._conv_weights(ckpt, k)
    conv = layers.Conv2D(kernel.shape[-1], kernel.shape[:2], padding="valid" if k < 2 else "same", activation="relu")
    conv.build(conv_in.shape)
    conv.set_weights([kernel, bias])
    z = conv(conv_in)
    norm = layers.BatchNormalization(epsilon=musicnn.BN_EPSILON)
    norm.build(z.shape)
    norm.set_weights(musicnn._bn_weights(ckpt, k + 1))
    b = norm(z, training=False)
    tf1_order = np.asarray(b).max(axis=2)  # (batch, 187, filters)
    pooled_first = np.asarray(keras.Model(net.inputs, net.get_layer(f"msd_musicnn_front{k}_bn").output)([batch]))
    assert pooled_first.shape == tf1_order.shape
    np.testing.assert_array_equal(pooled_first, tf1_order)


@needs_weights
def test_chunk_embedder_is_the_patch_network_on_each_3s_slice(networks) -> None:
    t = np.arange(30 * 16000) / 16000
    pcm = np.tile(_signal(), 5)[: len(t)]
    chunks = np.stack([logmel.log_mel_chunk(pcm, logmel.MEL_SAMPLE_RATE),
                       logmel.log_mel_chunk(0.2 * np.sin(2 * np.pi * 80 * t), logmel.MEL_SAMPLE_RATE)])
    assert chunks.shape[1] >= musicnn.CHUNK_FRAMES
    embedder = musicnn.build_chunk_embedder(("MSD_musicnn",))
    assert not embedder.trainable and not embedder.trainable_weights
    emb = musicnn.embed(embedder, chunks)
    assert emb.shape == (2, musicnn.PATCHES_PER_CHUNK, 250) and emb.dtype == np.float32
    net = networks["MSD_musicnn"]
    for c in range(len(chunks)):
        slices = chunks[c, : musicnn.CHUNK_FRAMES].reshape(musicnn.PATCHES_PER_CHUNK, musicnn.PATCH_FRAMES, -1)
        direct = np.asarray(net(slices, training=False))
        for i in range(musicnn.PATCHES_PER_CHUNK):
            np.testing.assert_allclose(emb[c, i], direct[i], atol=1e-5, err_msg=f"chunk {c} patch {i}")
            np.testing.assert_allclose(direct[i], np.asarray(net(chunks[c, None, 187 * i : 187 * (i + 1)]))[0], atol=1e-5)
    assert not np.allclose(emb[0], emb[1], atol=1e-3)  # different audio, different embedding
    assert musicnn.embed(embedder, chunks[:0]).shape == (0, musicnn.PATCHES_PER_CHUNK, 250)


@needs_weights
def test_chunk_embedder_of_both_networks_concatenates_them(networks) -> None:
    chunk = logmel.log_mel_chunk(np.tile(_signal(), 5)[: 30 * 16000], logmel.MEL_SAMPLE_RATE)[None]
    emb = musicnn.embed(musicnn.build_chunk_embedder(musicnn.NETWORKS), chunk)
    assert emb.shape == (1, musicnn.PATCHES_PER_CHUNK, 500)
    first = chunk[:, : musicnn.PATCH_FRAMES]
    for k, n in enumerate(musicnn.NETWORKS):
        np.testing.assert_allclose(emb[0, 0, 250 * k : 250 * (k + 1)], np.asarray(networks[n](first))[0], atol=1e-5)


def test_missing_checkpoint_is_a_weights_error_that_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(musicnn.WeightsError, match="no musicnn checkpoint") as err:
        musicnn.read_checkpoint("MSD_musicnn", tmp_path)
    assert INSTALL in str(err.value)
    with pytest.raises(musicnn.WeightsError, match="pip install --no-deps musicnn==0.1.0"):
        musicnn.build_chunk_embedder(("MSD_musicnn",), folder=tmp_path)


def test_damaged_checkpoint_is_a_weights_error(tmp_path: Path) -> None:
    (tmp_path / "MSD_musicnn").mkdir()
    (tmp_path / "MSD_musicnn" / ".index").write_bytes(b"not a checkpoint index")
    with pytest.raises(musicnn.WeightsError, match="cannot read the musicnn checkpoint"):
        musicnn.read_checkpoint("MSD_musicnn", tmp_path)


def test_wheel_not_installed_is_a_weights_error(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else find_spec(name, *a))
    with pytest.raises(musicnn.WeightsError, match="not installed") as err:
        musicnn.weights_dir()
    assert INSTALL in str(err.value)
