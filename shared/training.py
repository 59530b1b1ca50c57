"""Train a genre network on extracted chunk features and wrap it in a ModelArtifact.

- Label indices come from the sorted genre names (never from listing order).
- The validation split is taken by group (song id, or artist): no group has chunks on
  both sides. It is stratified per genre and deterministic for a seed.
- Class weights balance unequal genres; early stopping on validation loss restores the
  best epoch's weights.
- Reproducible: `keras.utils.set_random_seed`, deterministic TF ops, and a numpy
  generator of our own for shuffling and augmentation.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from shared.featurespec import DEFAULT_SPEC, ChunkFeatures, FeatureSpec
from shared.model import (
    ARCH_INPUTS,
    ARCH_LOUDNESS,
    EMBEDDING_INPUT,
    METADATA_SCHEMA,
    PRETRAINED_INPUT,
    PRETRAINED_NETWORKS,
    VAMP_INPUTS,
    ModelArtifact,
    apply_normalisation,
    assemble_pretrained,
    build_network,
    build_pretrained_head,
    compute_normalisation,
    inference_copy,
    input_names,
    loudness_normalise,
    resolve_arch,
    stack_features,
)

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 80
DEFAULT_PATIENCE = 15
DEFAULT_BATCH_SIZE = 32
DEFAULT_VALIDATION_FRACTION = 0.15
DEFAULT_LEARNING_RATE = 1e-3
JITTER_FRACTION = 0.5  # training windows move by up to half a chunk within their song


@dataclass(frozen=True)
class TrainingSettings:
    arch: str = "default"
    epochs: int = DEFAULT_EPOCHS
    patience: int = DEFAULT_PATIENCE
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    seed: int = 0
    augment: bool = True


def label_indices(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(sorted genre names, index of each label in them)."""
    genres = sorted(set(str(x) for x in labels))
    index = {g: i for i, g in enumerate(genres)}
    return genres, np.array([index[str(x)] for x in labels], dtype=np.int64)


def split_by_group(labels: Sequence[str], groups: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation chunks: whole groups, about `fraction` of each genre's
    groups (at least one where a genre has two or more), deterministic for `seed`."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    group_label: dict[str, str] = {}
    votes: dict[str, Counter] = defaultdict(Counter)
    for lab, grp in zip(labels, groups):
        votes[str(grp)][str(lab)] += 1
    for grp, c in votes.items():
        group_label[grp] = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    by_genre: dict[str, list[str]] = defaultdict(list)
    for grp, lab in group_label.items():
        by_genre[lab].append(grp)
    val_groups: set[str] = set()
    for genre in sorted(by_genre):
        members = sorted(by_genre[genre])
        if len(members) < 2:
            continue
        # Order by a keyed hash: stable, independent of listing order, varies with the seed.
        members.sort(key=lambda g: hashlib.sha256(f"{seed}\0{g}".encode()).hexdigest())
        n_val = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        val_groups.update(members[:n_val])
    for i, grp in enumerate(groups):
        mask[i] = str(grp) in val_groups
    return mask


def data_fingerprint(features: Sequence[ChunkFeatures], labels: Sequence[str], groups: Sequence[str]) -> str:
    """Order-independent SHA-256 over (label, group, feature bytes) of every chunk."""
    items = []
    for f, lab, grp in zip(features, labels, groups):
        h = hashlib.sha256(f"{lab}\0{grp}\0".encode())
        for a in f.arrays().values():
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        items.append(h.hexdigest())
    total = hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()
    return f"sha256:{total}"


def _network_inputs(arch: str) -> tuple[str, ...]:
    """What the trained network reads: a pre-trained arch's head reads the frozen network's
    patch outputs (computed once per chunk) instead of the log-mel."""
    names = ARCH_INPUTS[arch]
    return tuple(EMBEDDING_INPUT if n == PRETRAINED_INPUT else n for n in names)


def _prepare(arrays: Mapping[str, np.ndarray], arch: str) -> dict[str, np.ndarray]:
    pre = loudness_normalise(arrays, ARCH_LOUDNESS[arch])
    return {k: pre[k] for k in _network_inputs(arch)}


def pretrained_embeddings(features: Sequence[ChunkFeatures], networks: Sequence[str] = PRETRAINED_NETWORKS,
                          *, progress: bool = False, embedder: Any = None) -> tuple[Any, np.ndarray]:
    """(the frozen embedder, (n, patches, D) patch outputs) of chunks with a log-mel, cached per chunk."""
    from shared.feature_cache import cache_dir
    from shared.musicnn import build_chunk_embedder, embed_cached

    missing = sum(1 for f in features if f.logmel is None)
    if missing:
        raise ValueError(f"{missing} of {len(features)} chunks have no log-mel; extract them with the v2 feature spec")
    embedder = embedder if embedder is not None else build_chunk_embedder(networks)
    emb = embed_cached(embedder, [f.logmel for f in features], cache_dir() / "embeddings", progress=progress)
    return embedder, emb


class _Windows:
    """Training examples as windows into each song's concatenated chunk features.

    Example i starts at its chunk's own position in the song; with augmentation each
    epoch moves it by up to +-JITTER_FRACTION of a chunk (within the song's real audio),
    so the network sees windows that straddle chunk boundaries. Preprocessing
    (loudness, standardisation) runs on each window, exactly as at inference."""

    def __init__(self, raw: Mapping[str, np.ndarray], chunk_idx: np.ndarray, songs: Sequence[str],
                 n_samples: Sequence[int] | None, frames: Mapping[str, int], spec: FeatureSpec) -> None:
        self.frames = dict(frames)
        self.base = min(frames.values())  # frames of the coarsest input (mfcc)
        self.scale = {k: v // self.base for k, v in frames.items()}
        song_rows: dict[str, list[int]] = defaultdict(list)
        for i in chunk_idx:
            song_rows[str(songs[i])].append(int(i))
        self.song_arrays: list[dict[str, np.ndarray]] = []
        self.song_len: list[int] = []  # usable base frames of real audio
        self.example_song: list[int] = []
        self.example_start: list[int] = []
        self.example_row: list[int] = []
        hop = spec.mfcc_step
        for rows in song_rows.values():
            s_idx = len(self.song_arrays)
            self.song_arrays.append({k: np.concatenate([raw[k][r] for r in rows]) for k in frames})
            real = sum(int(n_samples[r]) if n_samples is not None else spec.chunk_samples for r in rows)
            self.song_len.append(max(self.base, min(self.base * len(rows), -(-real // hop))))
            for j, r in enumerate(rows):
                self.example_song.append(s_idx)
                self.example_start.append(j * self.base)
                self.example_row.append(r)

    def window(self, example: int, shift: int) -> dict[str, np.ndarray]:
        s = self.example_song[example]
        start = int(np.clip(self.example_start[example] + shift, 0, max(0, self.song_len[s] - self.base)))
        out = {}
        for k, arr in self.song_arrays[s].items():
            a = start * self.scale[k]
            win = arr[a : a + self.frames[k]]
            if len(win) < self.frames[k]:
                win = np.concatenate([win, np.zeros((self.frames[k] - len(win), win.shape[1]), win.dtype)])
            out[k] = win
        return out


def _batches_factory(windows: _Windows, examples: np.ndarray, y: np.ndarray, w: np.ndarray, batch_size: int,
                     seed: int, augment: bool, arch: str, stats: Mapping[str, Any], mixup: float = 0.0,
                     time_masks: int = 0):
    """A keras PyDataset of shuffled, jittered, preprocessed batches (own RNG, deterministic)."""
    import keras

    n = len(examples)
    max_shift = int(windows.base * JITTER_FRACTION)

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.on_epoch_end()

        def __len__(self) -> int:
            return math.ceil(n / batch_size)

        def on_epoch_end(self) -> None:
            rng = np.random.RandomState((seed * 1000003 + self.epoch) % (2**32))
            self._order = rng.permutation(n)
            self._shifts = rng.randint(-max_shift, max_shift + 1, size=n) if augment and max_shift else np.zeros(n, int)
            self.epoch += 1

        def __getitem__(self, idx: int):
            sel = self._order[idx * batch_size : (idx + 1) * batch_size]
            wins = [windows.window(int(examples[i]), int(self._shifts[i])) for i in sel]
            raw = {k: np.stack([wd[k] for wd in wins]) for k in windows.frames}
            xb = apply_normalisation(_prepare(raw, arch), stats)
            yb, wb = y[sel], w[sel]
            if mixup > 0 or time_masks > 0:
                rng = np.random.RandomState((seed * 7919 + self.epoch * 100003 + idx) % (2**32))
                if time_masks > 0:
                    base = windows.base
                    for r in range(len(sel)):
                        for _ in range(time_masks):
                            width = rng.randint(0, base // 10 + 1)
                            start = rng.randint(0, base - width + 1)
                            for k, v in xb.items():
                                sc = windows.scale[k]
                                v[r, start * sc : (start + width) * sc] = 0.0
                if mixup > 0:
                    lam = rng.beta(mixup, mixup, size=len(sel)).astype(np.float32)
                    lam = np.maximum(lam, 1 - lam)
                    partner = rng.permutation(len(sel))
                    xb = {k: lam[:, None, None] * v + (1 - lam[:, None, None]) * v[partner] for k, v in xb.items()}
                    yb = lam[:, None] * yb + (1 - lam[:, None]) * yb[partner]
                    wb = lam * wb + (1 - lam) * wb[partner]
            return xb, yb, wb

    return Batches()


# What a source's absent genres' probability counts for in its chunks' loss (source_masked_crossentropy):
# 0 leaves a render-only genre's score on real recordings to what the renders taught (the real
# clips' accuracy fell 20 points), 1 is plain cross-entropy (a real recording is never blues).
DEFAULT_ABSENT_WEIGHT = 0.1
DEFAULT_MEMBERS = 1  # networks per model (members of train_model)


def source_genre_mask(sources: Sequence[str], y: np.ndarray, n_classes: int) -> np.ndarray | None:
    """(chunks, genres) 0/1: the genres that each chunk's source has, or None when every
    source has them all.

    A model trained on real recordings of 4 genres and renders of 8 otherwise learns that
    "a real recording" means "one of the 4": every real clip pushes the render-only
    genres down. With the mask a source's chunks are scored only against its own genres,
    so what a genre sounds like comes from the sources that have it and nothing teaches
    the model that a source's absent genres cannot occur there."""
    names = np.asarray([str(s) for s in sources])
    if len(names) != len(y):
        raise ValueError(f"sources and labels differ in length: {len(names)}, {len(y)}")
    mask = np.zeros((len(y), n_classes), np.float32)
    for name in np.unique(names):
        rows = names == name
        mask[np.ix_(rows, np.unique(y[rows]))] = 1.0
    return None if mask.all() else mask


def source_masked_crossentropy(absent_weight: float = 0.0) -> Callable[[Any, Any], Any]:
    """Cross-entropy of the softmax renormalised over each chunk's allowed genres, with the
    probability of its source's absent genres counted at `absent_weight` (0: not at all,
    1: plain cross-entropy).

    y_true is one-hot plus the 0/1 mask of allowed genres (the label's entry is 2), so the
    target is y_true minus the mask and the loss is -log p_label + log sum(w p)."""
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        allowed = ops.cast(y_true > 0, y_pred.dtype)
        target = y_true - allowed
        weight = allowed + absent_weight * (1.0 - allowed)
        p = ops.clip(y_pred, 1e-7, 1.0)
        return -ops.sum(target * ops.log(p), axis=-1) + ops.log(ops.sum(weight * p, axis=-1))

    return loss


def average_members(networks: Sequence[Any], name: str) -> Any:
    """One network whose output is the mean of the members' softmax outputs (same inputs):
    an ensemble of heads trained from different seeds varies less than any one of them."""
    import keras
    from keras import layers

    first = networks[0]
    inputs = {n: keras.Input(tuple(t.shape[1:]), name=n) for n, t in zip(input_names(first), first.inputs)}
    outs = []
    for i, net in enumerate(networks):
        net.name = f"{name}_member{i}"
        outs.append(net({n: inputs[n] for n in input_names(net)}))
    return keras.Model(inputs, layers.Average(name="members_mean")(outs), name=name)


def train_model(
    features: Sequence[ChunkFeatures],
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    arch: str = "default",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    name: str | None = None,
    progress: bool = False,
    spec: FeatureSpec = DEFAULT_SPEC,
    patience: int = DEFAULT_PATIENCE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    augment: bool = True,
    mixup: float = 0.0,
    time_masks: int = 0,
    songs: Sequence[str] | None = None,
    n_samples: Sequence[int] | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    head_options: Mapping[str, Any] | None = None,
    sources: Sequence[str] | None = None,
    absent_weight: float = DEFAULT_ABSENT_WEIGHT,
    members: int = DEFAULT_MEMBERS,
) -> ModelArtifact:
    """Train `arch` on chunk features; `groups` (song ids or artists) keep the validation
    split clean. `songs` (song id per chunk, chunks of a song in order) and `n_samples`
    (real samples per chunk) let augmentation move training windows across a song's
    chunk boundaries; without them each chunk stands alone. `sources` (dataset name per
    chunk) makes each source teach only the genres it has (`source_genre_mask`), its absent
    genres' probability counted at `absent_weight`. `members` > 1 trains that many networks
    (seeds seed, seed+1, ...) on the same split and ships their mean probability.
    Returns an in-memory artifact (call `.save(path)`)."""
    import keras
    import tensorflow as tf

    if not (len(features) == len(labels) == len(groups)):
        raise ValueError(f"features, labels and groups differ in length: {len(features)}, {len(labels)}, {len(groups)}")
    if len(features) == 0:
        raise ValueError("no training chunks")
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    resolved = resolve_arch(arch)
    genres, y_all = label_indices(labels)
    if len(genres) < 2:
        raise ValueError(f"need at least two genres to train, got {genres}")
    t0 = time.perf_counter()

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception as exc:  # pragma: no cover - depends on TF build
        logger.debug("op determinism unavailable: %s", exc)

    shapes = spec.feature_shapes()
    pretrained = PRETRAINED_INPUT in ARCH_INPUTS[resolved]
    if pretrained and PRETRAINED_INPUT not in shapes:
        raise ValueError(f"arch {resolved!r} reads the log-mel: train it on features of a spec with one, not {spec.id}")
    frames = {k: shapes[k][0] for k in VAMP_INPUTS}
    widths = {k: shapes[k][1] for k in VAMP_INPUTS}
    raw = stack_features(features, frames, VAMP_INPUTS, widths)
    embedder = None
    if pretrained:
        embedder, raw[EMBEDDING_INPUT] = pretrained_embeddings(features, progress=progress)
        frames[EMBEDDING_INPUT], widths[EMBEDDING_INPUT] = raw[EMBEDDING_INPUT].shape[1:]
        songs = None  # windows cannot move across chunks: the embedding is per chunk
    val_mask = split_by_group(labels, groups, validation_fraction, seed)
    tr = ~val_mask
    x_all = _prepare(raw, resolved)
    stats = compute_normalisation({k: v[tr] for k, v in x_all.items() if k != EMBEDDING_INPUT})
    x_va = apply_normalisation({k: v[val_mask] for k, v in x_all.items()}, stats)
    del x_all
    song_ids = [str(x) for x in songs] if songs is not None else [f"chunk:{i}" for i in range(len(features))]
    train_idx = np.flatnonzero(tr)
    windows = _Windows(raw, train_idx, song_ids, n_samples, frames, spec)
    examples = np.arange(len(train_idx))
    n_classes = len(genres)
    y_tr = y_all[np.asarray(windows.example_row)]
    y_va = y_all[val_mask]
    counts = np.bincount(y_tr, minlength=n_classes).astype(np.float64)
    present = counts > 0
    class_weight = np.where(present, len(y_tr) / (present.sum() * np.maximum(counts, 1)), 0.0)
    w_tr = class_weight[y_tr].astype(np.float32)
    onehot = np.eye(n_classes, dtype=np.float32)
    allowed = source_genre_mask(sources, y_all, n_classes) if sources is not None and absent_weight < 1 else None
    if allowed is not None and mixup > 0:
        raise ValueError("mixup cannot mix the targets of sources with different genre sets; train without one of them")
    target_tr = onehot[y_tr] if allowed is None else onehot[y_tr] + allowed[np.asarray(windows.example_row)]
    target_va = onehot[y_va] if allowed is None else onehot[y_va] + allowed[val_mask]

    emb_stats = None
    if pretrained:
        emb_tr = raw[EMBEDDING_INPUT][tr].reshape(-1, widths[EMBEDDING_INPUT]).astype(np.float64)
        emb_stats = (emb_tr.mean(axis=0), emb_tr.var(axis=0) + 1e-6)
        del emb_tr
    has_val = bool(val_mask.any())
    trained, histories = [], []
    for member in range(members):
        keras.utils.set_random_seed(seed + member)
        if pretrained:
            net = build_pretrained_head(n_classes, frames, widths, *emb_stats, **dict(head_options or {}))
        else:
            net = build_network(resolved, n_classes, frames, widths)
        net.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
            loss="categorical_crossentropy" if allowed is None else source_masked_crossentropy(absent_weight),
            metrics=["accuracy"],
        )
        train_data = _batches_factory(windows, examples, target_tr, w_tr, batch_size, seed + member, augment, resolved,
                                      stats, mixup=mixup if augment else 0.0, time_masks=time_masks if augment else 0)
        callbacks: list[Any] = []
        if has_val:
            callbacks.append(
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0)
            )
        if on_epoch is not None:
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e, dict(logs or {}))))
        hist = net.fit(
            train_data,
            validation_data=(x_va, target_va) if has_val else None,
            epochs=epochs,
            callbacks=callbacks,
            verbose=1 if progress else 0,
            shuffle=False,
        )
        trained.append(inference_copy(net))  # nested in the shipped model: no loss or optimizer inside
        histories.append({k: [round(float(v), 6) for v in vals] for k, vals in hist.history.items()})
    model = trained[0] if members == 1 else average_members(trained, "head" if pretrained else resolved)
    elapsed = time.perf_counter() - t0
    history = histories[0]
    best_epochs = [int(np.argmin(h["val_loss"])) + 1 if has_val and h.get("val_loss") else len(h.get("loss", []))
                   for h in histories]
    best_epoch = best_epochs[0]

    head = model
    if pretrained:
        from shared.musicnn import CHUNK_FRAMES, WHEEL

        model = assemble_pretrained(head, embedder)
        del frames[EMBEDDING_INPUT]
        frames[PRETRAINED_INPUT] = CHUNK_FRAMES
    metadata: dict[str, Any] = {
        "schema": METADATA_SCHEMA,
        "name": name or resolved,
        "arch": resolved,
        "genres": genres,
        "feature_spec": spec.to_dict(),
        "frames_per_chunk": frames,
        "preprocessing": {"loudness": ARCH_LOUDNESS[resolved], "normalisation": stats},
        "training": {
            "epochs_max": int(epochs),
            "epochs_run": len(history.get("loss", [])),
            "best_epoch": best_epoch,
            "patience": int(patience),
            "batch_size": int(batch_size),
            "learning_rate": float(learning_rate),
            "optimizer": "adam",
            "loss": "categorical_crossentropy" if allowed is None else
                    f"categorical_crossentropy over the genres of each chunk's own source "
                    f"(others weighted {absent_weight:g})",
            "seed": int(seed),
            "augment": f"window jitter +-{JITTER_FRACTION:g} chunk within the song" if augment else "none",
            "mixup": float(mixup) if augment else 0.0,
            "time_masks": int(time_masks) if augment else 0,
            "validation_fraction": float(validation_fraction),
            "class_weights": {g: round(float(w), 6) for g, w in zip(genres, class_weight)},
            "chunks_train": int(tr.sum()),
            "chunks_validation": int(val_mask.sum()),
            "groups_train": len({str(g) for g, m in zip(groups, val_mask) if not m}),
            "groups_validation": len({str(g) for g, m in zip(groups, val_mask) if m}),
            "history": history,
            **({"members": {"count": members, "best_epochs": best_epochs,
                            "epochs_run": [len(h.get("loss", [])) for h in histories]}} if members > 1 else {}),
        },
        "data_fingerprint": data_fingerprint(features, labels, groups),
        "metrics": {},
    }
    if pretrained:
        metadata["training"]["head"] = dict(head_options or {})
        metadata["pretrained"] = {
            "networks": list(PRETRAINED_NETWORKS),
            "weights": f"{WHEEL} (pip install --no-deps), frozen",
            "licence": "ISC, Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019 (Jordi Pons)",
            "input": f"{PRETRAINED_INPUT}: shared/logmel.py, ten 3-s patches per chunk",
        }
    if extra_metadata:
        for k, v in extra_metadata.items():
            if k in ("training", "metrics") and isinstance(v, Mapping):
                metadata[k].update(v)
            else:
                metadata[k] = v
    artifact = ModelArtifact(model, metadata)
    if has_val:
        probs = predict_prepared(head, x_va)
        pred = probs.argmax(axis=1)
        artifact.metadata["metrics"]["validation_chunk_accuracy"] = round(float((pred == y_va).mean()), 6)
        artifact.metadata["metrics"]["validation_song_accuracy"] = round(
            _song_accuracy(probs, y_va, [g for g, m in zip(groups, val_mask) if m]), 6
        )
    artifact.metadata["version"] = None
    artifact.metadata["version"] = f"{artifact.metadata['name']}-{_hash(artifact)}"
    artifact.version = artifact.metadata["version"]
    # Wall time is kept out of the hashed metadata: it would change the version.
    artifact.metadata["created"] = {"train_seconds": round(elapsed, 1)}
    logger.info("trained %s in %.1f s (%d epochs)", artifact.version, elapsed, len(history.get("loss", [])))
    return artifact


def predict_prepared(network: Any, arrays: Mapping[str, np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Probabilities of a network for already prepared inputs, in slices."""
    n = len(next(iter(arrays.values())))
    outs = [np.asarray(network({k: v[i : i + batch_size] for k, v in arrays.items()}, training=False))
            for i in range(0, n, batch_size)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, int(network.outputs[0].shape[-1])), np.float32)


def _hash(artifact: ModelArtifact) -> str:
    from shared.model import content_hash

    return content_hash(artifact.model, artifact.metadata)[:12]


def _song_accuracy(probs: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> float:
    """Song-level accuracy with the project's vote (mode, ties by summed probability)."""
    from shared.evaluation import vote

    by_song: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_song[str(g)].append(i)
    correct = 0
    for g, idx in by_song.items():
        correct += int(vote(probs[idx]) == y[idx[0]])
    return correct / max(1, len(by_song))


def predict_chunks(artifact: ModelArtifact, features: Sequence[ChunkFeatures], *, progress: bool = False,
                   slice_size: int = 512) -> np.ndarray:
    """Probabilities (n, genres) of `artifact` for chunk features, as `artifact.predict`,
    but a pre-trained model's frozen embedding comes from the per-chunk cache: evaluation
    and cross-validation pay for each chunk's embedding once. The very same layers."""
    if PRETRAINED_INPUT not in getattr(artifact, "input_names", ()):
        return artifact.predict(features)
    from shared.feature_cache import cache_dir
    from shared.musicnn import embed_cached

    head = artifact.model.get_layer("head")
    embedder = artifact.model.get_layer("musicnn")
    outs = []
    for start in range(0, len(features), slice_size):
        part = features[start : start + slice_size]
        arrays = artifact.input_arrays(part)
        del arrays[PRETRAINED_INPUT]
        arrays[EMBEDDING_INPUT] = embed_cached(embedder, [f.logmel for f in part], cache_dir() / "embeddings",
                                               progress=progress)
        outs.append(predict_prepared(head, arrays))
    return np.concatenate(outs) if outs else np.zeros((0, len(artifact.genres)), np.float32)
