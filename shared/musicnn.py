"""musicnn, the pre-trained music tagger, as standard Keras layers (frozen, inference only).

The taggers of Pons & Serra (2019), trained on hundreds of thousands of real recordings
(Million Song Dataset and MagnaTagATune tags), bring what 400 clips and 243 MIDI renders
cannot teach: how real genres sound. The architecture (vertical timbral and horizontal
temporal filters over a 3-s log-mel patch, a dense mid end with residual connections,
max+mean temporal pooling, two dense layers) is rebuilt here from standard Keras layers so
that a model artifact holding it loads with `safe_mode=True` and no custom objects; the
weights are read once, at training time, straight from the TF1 checkpoints that the
`musicnn` wheel ships (`pip install --no-deps musicnn==0.1.0`; its TF1 code and its old
pins are never used). The trained artifact then carries the weights itself.

A chunk's log-mel (`shared/logmel.py`, 1876 frames) is cut to ten 3-s patches of 187
frames; each patch gives the penultimate layer (200) and the 50 tag probabilities.

musicnn's architecture and weights: Copyright (c) Music Technology Group, Universitat
Pompeu Fabra 2019, code by Jordi Pons, ISC licence (https://github.com/jordipons/musicnn).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shared.logmel import MEL_BANDS

PATCH_FRAMES = 187  # 3 s at hop 256 / 16 kHz
PATCHES_PER_CHUNK = 10
CHUNK_FRAMES = PATCH_FRAMES * PATCHES_PER_CHUNK  # of the 1876 a 30-s chunk has
PENULTIMATE = 200
TAGS = 50
EMBEDDING = PENULTIMATE + TAGS  # per patch and network
BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization's default
NETWORKS = ("MSD_musicnn", "MTT_musicnn")
WHEEL = "musicnn==0.1.0"


class WeightsError(RuntimeError):
    """The pre-trained weights are missing or unreadable; the message says how to install them."""


def weights_dir() -> Path:
    """The installed wheel's folder (found without importing its TF1 code)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the musicnn weights are not installed: pip install --no-deps {WHEEL}")
    return Path(list(spec.submodule_search_locations)[0])


def read_checkpoint(network: str, folder: Path | None = None) -> dict[str, np.ndarray]:
    """Inference variables of one TF1 checkpoint (optimizer slots left out)."""
    import tensorflow as tf

    ckpt = (folder or weights_dir()) / network
    if not (ckpt / ".index").is_file():
        raise WeightsError(f"no musicnn checkpoint in {ckpt}: pip install --no-deps {WHEEL}")
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(str(ckpt) + os.sep)
    except Exception as exc:  # TF raises several types for a damaged checkpoint
        raise WeightsError(f"cannot read the musicnn checkpoint {ckpt}: {exc}") from exc
    names = [n for n in reader.get_variable_to_shape_map() if "Adam" not in n and "_power" not in n]
    return {n: np.asarray(reader.get_tensor(n)) for n in names}


def _bn_weights(w: Mapping[str, np.ndarray], i: int) -> list[np.ndarray]:
    p = "batch_normalization" + (f"_{i}" if i else "")
    return [w[f"{p}/gamma"], w[f"{p}/beta"], w[f"{p}/moving_mean"], w[f"{p}/moving_variance"]]


def _conv_weights(w: Mapping[str, np.ndarray], i: int) -> list[np.ndarray]:
    p = "conv2d" + (f"_{i}" if i else "")
    return [w[f"{p}/kernel"], w[f"{p}/bias"]]


def front_signs(weights: Mapping[str, np.ndarray], i: int) -> np.ndarray:
    """+1 or -1 per filter of front conv i: the sign of the batch norm's gamma after it."""
    return np.where(_bn_weights(weights, i + 1)[0] < 0, -1.0, 1.0).astype(np.float32)


def _pooled_front(layers: Any, source: Any, weights: Mapping[str, np.ndarray], i: int, filters: int,
                  kernel: tuple[int, int], padding: str, name: str) -> Any:
    """One front-end filter bank, max over frequency, as (frames, filters).

    The TF1 graph is conv, ReLU, batch norm, then the max over frequency: three passes over
    the largest tensor of the network (187 x 59 x 204 a patch); without two of them the
    network takes 0.88x the CPU at batch 64, 0.68x at batch 1 (`bench/model.py`). ReLU and
    a batch norm are monotone per filter, so the max is taken first and they run on the
    pooled values, bit for bit the same: max(BN(ReLU(z))) = BN(ReLU(max z)) where the batch
    norm's gamma is positive, = BN(ReLU(-max(-z))) where it is negative. Those filters get
    negated weights (exact), so one max pooling serves all, and the sign is put back after."""
    sign = front_signs(weights, i)
    conv = layers.Conv2D(filters, kernel, padding=padding, name=name)
    z = conv(source)
    kern, bias = _conv_weights(weights, i)
    conv.set_weights([kern * sign, bias * sign])
    h = layers.MaxPooling2D((1, int(z.shape[2])), name=f"{name}_fmax")(z)
    h = layers.Reshape((PATCH_FRAMES, filters), name=f"{name}_flat")(h)
    unsign = layers.DepthwiseConv1D(1, use_bias=False, name=f"{name}_sign")
    h = unsign(h)
    unsign.set_weights([sign.reshape(1, filters, 1)])
    h = layers.ReLU(name=f"{name}_relu")(h)
    norm = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")
    out = norm(h)
    norm.set_weights(_bn_weights(weights, i + 1))
    return out


def build_patch_network(network: str, weights: Mapping[str, np.ndarray]) -> Any:
    """keras.Model: (187, 96) log-mel patch -> (250,) penultimate layer and tag probabilities.

    The TF1 graph's arithmetic: conv+ReLU then batch norm; "max over frequency" is a max
    pooling over the whole frequency axis, taken before the ReLU and batch norm of the
    front end (`_pooled_front`: the same numbers, less CPU); the mid end's
    transpose is a reshape (its frequency axis has size 1)."""
    import keras
    from keras import layers

    p = network.lower()

    def bn(x, i: int, name: str):
        layer = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{p}_{name}")
        out = layer(x)
        layer.set_weights(_bn_weights(weights, i))
        return out

    def conv(x, i: int, filters: int, kernel: tuple[int, int], padding: str, name: str):
        layer = layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=f"{p}_{name}")
        out = layer(x)
        layer.set_weights(_conv_weights(weights, i))
        return out

    patch = keras.Input((PATCH_FRAMES, MEL_BANDS), name=f"{p}_patch")
    x = bn(layers.Reshape((PATCH_FRAMES, MEL_BANDS, 1), name=f"{p}_image")(patch), 0, "input_bn")
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name=f"{p}_pad_front")(x)
    front = []
    # timbral (7 x 38 and 7 x 67 over frequency) and temporal (128, 64, 32 frames) filters
    for k, (i, filters, kernel, source, padding) in enumerate((
        (0, 204, (7, int(0.4 * MEL_BANDS)), padded, "valid"),
        (1, 204, (7, int(0.7 * MEL_BANDS)), padded, "valid"),
        (2, 51, (128, 1), x, "same"),
        (3, 51, (64, 1), x, "same"),
        (4, 51, (32, 1), x, "same"),
    )):
        front.append(_pooled_front(layers, source, weights, i, filters, kernel, padding, f"{p}_front{k}"))
    width = sum(int(f.shape[-1]) for f in front)  # 561
    h = layers.Reshape((PATCH_FRAMES, width, 1), name=f"{p}_front")(layers.Concatenate(axis=2, name=f"{p}_front_cat")(front))
    stages = [h]
    for k, i in enumerate((5, 6, 7)):
        pad = layers.ZeroPadding2D(((3, 3), (0, 0)), name=f"{p}_pad_mid{k}")(h)
        m = bn(conv(pad, i, 64, (7, int(h.shape[2])), "valid", f"mid{k}"), i + 1, f"mid{k}_bn")
        m = layers.Reshape((PATCH_FRAMES, 64, 1), name=f"{p}_mid{k}_t")(m)
        h = m if k == 0 else layers.Add(name=f"{p}_mid{k}_res")([m, h])
        stages.append(h)
    fmap = layers.Concatenate(axis=2, name=f"{p}_fmap")(stages)  # (187, 753, 1)
    fmap = layers.Reshape((PATCH_FRAMES, int(fmap.shape[2])), name=f"{p}_fmap_flat")(fmap)
    n = int(fmap.shape[-1])
    tmax = layers.Reshape((n, 1), name=f"{p}_tmax_col")(layers.GlobalMaxPooling1D(name=f"{p}_tmax")(fmap))
    tmean = layers.Reshape((n, 1), name=f"{p}_tmean_col")(layers.GlobalAveragePooling1D(name=f"{p}_tmean")(fmap))
    pooled = layers.Flatten(name=f"{p}_pooled")(layers.Concatenate(axis=2, name=f"{p}_pool_cat")([tmax, tmean]))
    pooled = bn(pooled, 9, "pooled_bn")
    dense = layers.Dense(PENULTIMATE, activation="relu", name=f"{p}_dense")
    pen = dense(pooled)
    dense.set_weights([weights["dense/kernel"], weights["dense/bias"]])
    pen = bn(pen, 10, "penultimate")
    head = layers.Dense(TAGS, activation="sigmoid", name=f"{p}_tags")
    tags = head(pen)
    head.set_weights([weights["dense_1/kernel"], weights["dense_1/bias"]])
    out = layers.Concatenate(name=f"{p}_embedding")([pen, tags])
    model = keras.Model(patch, out, name=p)
    model.trainable = False
    return model


def build_chunk_embedder(networks: Sequence[str] = NETWORKS, folder: Path | None = None) -> Any:
    """keras.Model: a chunk's log-mel (1870, 96) -> (10, 250 x networks), one row per 3-s patch."""
    import keras
    from keras import layers

    logmel = keras.Input((CHUNK_FRAMES, MEL_BANDS), name="logmel")
    patches = layers.Reshape((PATCHES_PER_CHUNK, PATCH_FRAMES, MEL_BANDS), name="patches")(logmel)
    outs = [
        layers.TimeDistributed(build_patch_network(n, read_checkpoint(n, folder)), name=f"{n.lower()}_patches")(patches)
        for n in networks
    ]
    emb = outs[0] if len(outs) == 1 else layers.Concatenate(name="pretrained_embedding")(outs)
    model = keras.Model(logmel, emb, name="musicnn")
    model.trainable = False
    return model


def traced(embedder: Any) -> Any:
    """The embedder as one traced function: trace it once, then call it for every batch."""
    import tensorflow as tf

    return tf.function(lambda x: embedder(x, training=False), reduce_retracing=True)


def embed(embedder: Any, logmels: np.ndarray, batch_size: int = 16, fn: Any = None) -> np.ndarray:
    """(n, 10, D) float32 patch embeddings of (n, >=1870, 96) log-mels, in batches
    (`fn`: `traced(embedder)` made once by a caller that calls this many times)."""
    import tensorflow as tf

    n = len(logmels)
    if n == 0:
        return np.zeros((0, PATCHES_PER_CHUNK, int(embedder.outputs[0].shape[-1])), np.float32)
    fn = fn or traced(embedder)
    outs = []
    for start in range(0, n, batch_size):
        part = np.ascontiguousarray(logmels[start : start + batch_size, :CHUNK_FRAMES], dtype=np.float32)
        outs.append(np.asarray(fn(tf.constant(part))))
    return np.concatenate(outs).astype(np.float32)


def embed_cached(embedder: Any, logmels: Sequence[np.ndarray], cache: Path | None, *, progress: bool = False,
                 batch_size: int = 16) -> np.ndarray:
    """`embed` with a per-chunk cache (npy, keyed by the log-mel's bytes and the networks),
    so that training again, cross-validation folds and evaluation pay for each chunk once."""
    import hashlib

    n = len(logmels)
    dim = int(embedder.outputs[0].shape[-1])
    out = np.zeros((n, PATCHES_PER_CHUNK, dim), np.float32)
    tag = f"{embedder.name}-{'+'.join(layer.name for layer in embedder.layers if layer.name.endswith('_patches'))}-{WHEEL}"
    paths: list[Path | None] = []
    todo = []
    for i, m in enumerate(logmels):
        part = np.ascontiguousarray(m[:CHUNK_FRAMES], dtype=np.float32)
        key = hashlib.sha256(tag.encode() + str(part.shape).encode() + part.tobytes()).hexdigest()[:40]
        p = cache / key[:2] / f"{key}.npy" if cache is not None else None
        paths.append(p)
        if p is not None and p.is_file():
            try:
                out[i] = np.load(p, allow_pickle=False)
                continue
            except (OSError, ValueError):
                pass  # a damaged entry is recomputed
        todo.append(i)
    fn = traced(embedder) if todo else None
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="pre-trained embedding", unit="chunk")
    for start in range(0, len(todo), batch_size):
        idx = todo[start : start + batch_size]
        emb = embed(embedder, np.stack([logmels[i][:CHUNK_FRAMES] for i in idx]), batch_size, fn)
        for i, e in zip(idx, emb):
            out[i] = e
            p = paths[i]
            if p is not None:
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, e, allow_pickle=False)
                os.replace(tmp, p)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out
