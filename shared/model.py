"""The model artifact: a Keras 3 network plus everything needed to use it correctly.

An artifact is a folder holding

- ``model.keras``: the network (standard Keras layers only, no custom objects), and
- ``metadata.json``: the genres in index order (sorted names, never directory-listing
  order), the feature spec, frames per chunk, the input preprocessing and normalisation
  statistics, the architecture, the training settings, a fingerprint of the training
  data, metrics, and the version.

The version is ``<name>-<12 hex digits>``: a SHA-256 over the weights and the canonical
metadata (without the version itself and without the ``created`` time stamp), so the
same training run on the same data yields the same version.

Inference (`ModelArtifact.predict`) runs the network through one `tf.function` with a
batch-agnostic input signature: it is traced once per artifact, never retraced, and has
none of `keras.Model.predict`'s per-call set-up cost. Large batches are cut into slices of
at most `MAX_PREDICT_BATCH` rows (`PRETRAINED_PREDICT_BATCH` for a model with the
pre-trained network, whose activations are large).

Input preprocessing (applied by `input_arrays`, shared by training and serving) lives in
`shared/model_inputs.py`: stacking, loudness normalisation (``loudness = "chunk"``:
the network cannot use level), then per-channel standardisation with the training set's
mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shared.featurespec import DEFAULT_SPEC, MEL_SPEC, ChunkFeatures, FeatureSpec
from shared.model_inputs import (  # noqa: F401 - re-exported: the artifact's preprocessing
    CONTRAST_REL_EPS,
    VAMP_INPUTS,
    apply_normalisation,
    compute_normalisation,
    loudness_normalise,
    stack_features,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
METADATA_SCHEMA = 1
MAX_PREDICT_BATCH = 256
# A chunk through the pre-trained network is ten patches whose first convolutions hold about
# 25 MB of activations each: 256 chunks at once would need tens of GB. Four chunks (40
# patches) keep the peak near 1 GB and cost no throughput on a CPU.
PRETRAINED_PREDICT_BATCH = 4
PRETRAINED_INPUT = "logmel"  # read raw: the pre-trained network normalises it itself
INPUT_NAMES = (*VAMP_INPUTS, PRETRAINED_INPUT)
HASH_EXCLUDED_KEYS = ("version", "created")


class ModelLoadError(Exception):
    """The artifact folder is missing, incomplete or inconsistent; the message says how."""


# --------------------------------------------------------------------------------------
# Device
# --------------------------------------------------------------------------------------

_device_lock = threading.Lock()
_device: str | None = None


def device() -> str:
    """'GPU:0' when TensorFlow sees a GPU (memory growth switched on), else 'CPU'."""
    global _device
    with _device_lock:
        if _device is None:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except (RuntimeError, ValueError) as exc:  # already initialised
                    logger.debug("memory growth not set on %s: %s", gpu.name, exc)
            _device = "GPU:0" if gpus else "CPU"
        return _device


# --------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(model: Any, metadata: Mapping[str, Any]) -> str:
    """SHA-256 over the weights (in layer order) and the metadata minus version/created."""
    h = hashlib.sha256()
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    meta = {k: v for k, v in metadata.items() if k not in HASH_EXCLUDED_KEYS}
    h.update(canonical_json(meta).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# The artifact
# --------------------------------------------------------------------------------------


class ModelArtifact:
    """A trained network with its genres, feature spec, preprocessing and version.

    Attributes: ``genres`` (index order = sorted names), ``spec`` (FeatureSpec),
    ``version`` (str), ``metadata`` (dict, as in metadata.json), ``model`` (keras.Model),
    ``device`` ('GPU:0' or 'CPU'), ``input_names`` (the feature arrays the network reads),
    ``frames`` (frames per chunk of each input)."""

    def __init__(self, model: Any, metadata: Mapping[str, Any], path: str | Path | None = None) -> None:
        self.model = model
        self.metadata: dict[str, Any] = dict(metadata)
        self.path = Path(path) if path is not None else None
        try:
            self.genres: list[str] = [str(g) for g in self.metadata["genres"]]
            self.spec = FeatureSpec.from_dict(self.metadata["feature_spec"])
            self.frames: dict[str, int] = {k: int(v) for k, v in self.metadata["frames_per_chunk"].items()}
            self.widths: dict[str, int] = {k: v[1] for k, v in self.spec.feature_shapes().items()}
            pre = self.metadata["preprocessing"]
            self.loudness: str = str(pre["loudness"])
            self.normalisation: dict[str, Any] = dict(pre["normalisation"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"metadata is incomplete or malformed: {exc!r}") from exc
        if self.genres != sorted(self.genres) or len(set(self.genres)) != len(self.genres):
            raise ModelLoadError(f"metadata genres must be unique and sorted, got {self.genres}")
        self.input_names: list[str] = input_names(model)
        for name in self.input_names:
            if name not in INPUT_NAMES:
                raise ModelLoadError(f"the network has an unknown input {name!r}; expected some of {INPUT_NAMES}")
            if name not in self.frames or (name in VAMP_INPUTS and name not in self.normalisation):
                raise ModelLoadError(f"metadata lacks frames or normalisation for input {name!r}")
            if name not in self.widths:
                raise ModelLoadError(f"the network reads {name!r} but its feature spec {self.spec.id} has no such array")
        n_out = int(model.outputs[0].shape[-1])
        if n_out != len(self.genres):
            raise ModelLoadError(f"the network has {n_out} outputs but metadata lists {len(self.genres)} genres")
        if not self.metadata.get("version"):
            self.metadata["version"] = f"{self.metadata.get('name', 'model')}-{content_hash(model, self.metadata)[:12]}"
        self.version: str = str(self.metadata["version"])
        self.device = device()
        self._fn = None
        self._fn_lock = threading.Lock()

    # ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.version))

    def __repr__(self) -> str:
        return f"ModelArtifact(version={self.version!r}, genres={self.genres}, arch={self.metadata.get('arch')!r})"

    # ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, expected_spec: FeatureSpec | None = None) -> "ModelArtifact":
        """Load an artifact folder. Raises ModelLoadError with a clear reason."""
        folder = Path(path)
        if not folder.exists():
            raise ModelLoadError(f"model folder {folder} does not exist (train one with `genre train`)")
        if not folder.is_dir():
            raise ModelLoadError(f"{folder} is not a folder; a model artifact is a folder with {MODEL_FILE} and {METADATA_FILE}")
        meta_path = folder / METADATA_FILE
        model_path = folder / MODEL_FILE
        for p in (meta_path, model_path):
            if not p.is_file():
                raise ModelLoadError(f"model folder {folder} has no {p.name}")
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{meta_path} is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise ModelLoadError(f"{meta_path} must hold a JSON object")
        schema = metadata.get("schema")
        if schema != METADATA_SCHEMA:
            raise ModelLoadError(f"{meta_path}: unsupported metadata schema {schema!r} (expected {METADATA_SCHEMA})")
        spec_dict = metadata.get("feature_spec")
        if not isinstance(spec_dict, dict):
            raise ModelLoadError(f"{meta_path} has no feature_spec object")
        try:
            spec = FeatureSpec.from_dict(spec_dict)
        except TypeError as exc:
            raise ModelLoadError(f"{meta_path}: bad feature_spec: {exc}") from exc
        if spec_dict.get("id") not in (None, spec.id):
            raise ModelLoadError(
                f"{meta_path}: feature spec id {spec_dict.get('id')!r} does not match its fields ({spec.id!r}); "
                "this code computes features differently from the code that trained the model"
            )
        if expected_spec is not None and expected_spec.id != spec.id:
            raise ModelLoadError(
                f"model {folder} was trained on features {spec.id!r} but this service extracts {expected_spec.id!r}"
            )
        device()  # memory growth must be set before TensorFlow touches the GPU
        import keras

        try:
            model = keras.saving.load_model(str(model_path), compile=False, safe_mode=True)
        except Exception as exc:  # keras raises many types for a bad file
            raise ModelLoadError(f"{model_path} could not be loaded: {exc}") from exc
        art = cls(model, metadata, path=folder)
        expected = spec.feature_shapes()
        for name in art.input_names:
            shape = tuple(model.get_layer(name).output.shape[1:]) if _has_layer(model, name) else None
            if shape is not None and shape[-1] != expected[name][1]:
                raise ModelLoadError(f"input {name!r} has {shape[-1]} channels but the spec gives {expected[name][1]}")
        return art

    def save(self, path: str | Path) -> Path:
        """Write model.keras + metadata.json into `path` (created; files replaced atomically)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".saving-") as tmp:
            tmp_model = Path(tmp) / MODEL_FILE
            inference_copy(self.model).save(str(tmp_model))
            tmp_meta = Path(tmp) / METADATA_FILE
            tmp_meta.write_text(json.dumps(self.metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp_model, folder / MODEL_FILE)
            os.replace(tmp_meta, folder / METADATA_FILE)
        self.path = folder
        return folder

    # ----------------------------------------------------------------------------------
    def input_arrays(self, batch: Sequence[ChunkFeatures]) -> dict[str, np.ndarray]:
        """The network's inputs for a batch: stacked, loudness-normalised, standardised."""
        vamp = [n for n in self.input_names if n in VAMP_INPUTS]
        names = list(VAMP_INPUTS) if self.loudness == "chunk" and vamp else vamp
        raw = stack_features(batch, self.frames, names, self.widths)  # a fresh array: changed in place
        pre = loudness_normalise(raw, self.loudness, inplace=True)
        out = apply_normalisation({k: pre[k] for k in vamp}, self.normalisation, inplace=True)
        if PRETRAINED_INPUT in self.input_names:
            out.update(stack_features(batch, self.frames, (PRETRAINED_INPUT,), self.widths))
        return out

    def _function(self):
        with self._fn_lock:
            if self._fn is None:
                import tensorflow as tf

                signature = [
                    {
                        name: tf.TensorSpec((None, *tuple(int(d) for d in self.model.get_layer(name).output.shape[1:])),
                                            tf.float32, name=name)
                        for name in self.input_names
                    }
                ]
                model = self.model

                @tf.function(input_signature=signature, reduce_retracing=True)
                def infer(inputs):
                    return model(inputs, training=False)

                self._fn = infer
            return self._fn

    def predict_arrays(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities (n, len(genres)) for already prepared input arrays."""
        n = len(next(iter(arrays.values()))) if arrays else 0
        if n == 0:
            return np.zeros((0, len(self.genres)), dtype=np.float32)
        fn = self._function()
        step = PRETRAINED_PREDICT_BATCH if PRETRAINED_INPUT in self.input_names else MAX_PREDICT_BATCH
        outs = []
        for start in range(0, n, step):
            part = {k: v[start : start + step] for k, v in arrays.items()}
            outs.append(np.asarray(fn(part), dtype=np.float32))
        return np.concatenate(outs, axis=0)

    def predict(self, batch: Sequence[ChunkFeatures]) -> np.ndarray:
        """Probabilities (n, len(genres)), float32, in batch order."""
        if len(batch) == 0:
            return np.zeros((0, len(self.genres)), dtype=np.float32)
        return self.predict_arrays(self.input_arrays(batch))


def input_names(model: Any) -> list[str]:
    """A Keras model's input names, in order (a tensor's name without its ':0')."""
    return [str(t.name).split(":")[0] for t in model.inputs]


def inference_copy(model: Any) -> Any:
    """The network without optimizer state (a third of the file, and nothing to resume) or
    compile settings (a custom training loss could not be loaded back)."""
    if getattr(model, "optimizer", None) is None:
        return model
    import keras

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def _has_layer(model: Any, name: str) -> bool:
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------

ARCHES = ("default", "pretrained", "merged", "mfcc", "contrast", "seed", "tiny")
ARCH_ALIASES = {"default": "pretrained"}
ARCH_INPUTS = {
    "pretrained": (*VAMP_INPUTS, PRETRAINED_INPUT),
    "merged": ("mfcc", "peaks", "valleys"),
    "mfcc": ("mfcc",),
    "contrast": ("peaks", "valleys"),
    "seed": ("mfcc", "peaks"),
    "tiny": ("mfcc", "peaks", "valleys"),
}
ARCH_LOUDNESS = {"pretrained": "chunk", "merged": "chunk", "mfcc": "chunk", "contrast": "chunk", "seed": "none", "tiny": "chunk"}


EMBEDDING_INPUT = "embedding"  # the pre-trained network's patch outputs, as the head reads them
PRETRAINED_NETWORKS = ("MSD_musicnn",)  # the MagnaTagATune tagger beside it doubles the cost for no gain


def arch_inputs(arch: str) -> tuple[str, ...]:
    return ARCH_INPUTS[resolve_arch(arch)]


def arch_spec(arch: str) -> FeatureSpec:
    """The feature spec an architecture's inputs need (v2 when it reads the log-mel)."""
    return MEL_SPEC if PRETRAINED_INPUT in arch_inputs(arch) else DEFAULT_SPEC


def resolve_arch(arch: str) -> str:
    if arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHES)}")
    return ARCH_ALIASES.get(arch, arch)


def _conv_block(x, filters: int, kernel: int, pool: int, name: str, strides: int = 1):
    from keras import layers

    x = layers.Conv1D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    if pool > 1:
        x = layers.MaxPooling1D(pool, name=f"{name}_pool")(x)
    return x


def _pool_both(x, name: str):
    from keras import layers

    return layers.Concatenate(name=f"{name}_stats")(
        [layers.GlobalAveragePooling1D(name=f"{name}_avg")(x), layers.GlobalMaxPooling1D(name=f"{name}_max")(x)]
    )


def build_network(arch: str, n_genres: int, frames: Mapping[str, int], widths: Mapping[str, int]):
    """A compiled-free keras.Model for `arch` with named inputs mfcc/peaks/valleys."""
    import keras
    from keras import layers

    arch = resolve_arch(arch)
    if PRETRAINED_INPUT in ARCH_INPUTS[arch]:
        raise ValueError(f"{arch!r} is built from its trained head and the frozen network (build_pretrained_head, "
                         "assemble_pretrained): train it with train_model")
    inputs = {name: keras.Input((int(frames[name]), int(widths[name])), name=name) for name in ARCH_INPUTS[arch]}
    if arch == "seed":
        # The ancestor's merged model, adapted to our frame counts.
        m = layers.Conv1D(100, 4, activation="relu", name="mfcc_conv1")(inputs["mfcc"])
        m = layers.MaxPooling1D(4, name="mfcc_pool1")(m)
        m = layers.Conv1D(20, 4, activation="relu", name="mfcc_conv2")(m)
        m = layers.MaxPooling1D(4, name="mfcc_pool2")(m)
        m = layers.LSTM(300, name="mfcc_lstm")(m)
        p = layers.Conv1D(100, 3, strides=4, activation="relu", name="peaks_conv")(inputs["peaks"])
        p = layers.LSTM(100, name="peaks_lstm")(p)
        x = layers.Concatenate(name="merge")([m, p])
        x = layers.Dense(1000, activation="relu", name="dense")(x)
        out = layers.Dense(n_genres, activation="softmax", name="genre")(x)
        return keras.Model(inputs, out, name="seed")
    if arch == "tiny":
        branches = []
        m = _conv_block(inputs["mfcc"], 16, 5, 4, "mfcc1", strides=2)
        branches.append(_pool_both(m, "mfcc"))
        c = layers.Concatenate(name="contrast")([inputs["peaks"], inputs["valleys"]])
        c = _conv_block(c, 16, 5, 4, "con1", strides=4)
        branches.append(_pool_both(c, "con"))
        x = layers.Concatenate(name="merge")(branches)
        out = layers.Dense(n_genres, activation="softmax", name="genre")(x)
        return keras.Model(inputs, out, name="tiny")

    x = _vamp_trunk(inputs)
    x = layers.Dropout(0.3, name="drop1")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(0.3, name="drop2")(x)
    out = layers.Dense(n_genres, activation="softmax", name="genre")(x)
    return keras.Model(inputs, out, name=arch)


def _vamp_trunk(inputs: Mapping[str, Any]):
    """Pooled statistics of the Vamp inputs present in `inputs`.

    Two stems bring both inputs to a common 4-frame step (~93 ms): MFCC (step 1024) by
    stride 2, contrast (step 512) by stride 4. Then a shared trunk of three conv blocks
    and global average + max pooling: cheap at inference (no recurrence, few early
    channels), and the pooled statistics do not depend on where in the chunk things happen."""
    from keras import layers

    stems = []
    if "mfcc" in inputs:
        stems.append(_conv_block(inputs["mfcc"], 32, 4, 1, "mfcc_stem", strides=2))
    if "peaks" in inputs:
        c = layers.Concatenate(name="contrast")([inputs["peaks"], inputs["valleys"]])
        stems.append(_conv_block(c, 32, 8, 1, "contrast_stem", strides=4))
    x = stems[0] if len(stems) == 1 else layers.Concatenate(name="merge")(stems)
    x = _conv_block(x, 64, 3, 2, "trunk1")
    x = _conv_block(x, 96, 3, 2, "trunk2")
    x = _conv_block(x, 128, 3, 1, "trunk3")
    return _pool_both(x, "trunk")


def build_pretrained_head(n_genres: int, frames: Mapping[str, int], widths: Mapping[str, int],
                          embedding_mean: np.ndarray, embedding_var: np.ndarray, *, dropout: float = 0.5,
                          units: int = 128, vamp: bool = True, pool: str = "meanmax", l2: float = 0.0):
    """The trainable part of `pretrained`: the frozen network's patch outputs (`embedding`,
    (patches, D)) beside the Vamp trunk (mfcc/peaks/valleys; `vamp=False` leaves it out).

    The patch outputs are standardised inside the network (statistics of the training
    set), then pooled over the chunk's patches (mean and max), so the assembled model
    reads the raw log-mel like any other input."""
    import keras
    from keras import layers

    inputs = {name: keras.Input((int(frames[name]), int(widths[name])), name=name) for name in VAMP_INPUTS} if vamp else {}
    inputs[EMBEDDING_INPUT] = keras.Input((int(frames[EMBEDDING_INPUT]), int(widths[EMBEDDING_INPUT])), name=EMBEDDING_INPUT)
    e = layers.Normalization(axis=-1, mean=np.asarray(embedding_mean, np.float32),
                             variance=np.asarray(embedding_var, np.float32), name="embedding_norm")(inputs[EMBEDDING_INPUT])
    e = layers.Dropout(dropout / 2, name="embedding_drop_in")(e)
    if pool == "moments":  # mean and mean square over the patches: what a linear model on mean/std sees
        square = layers.Multiply(name="patches_square")([e, e])
        e = layers.Concatenate(name="patches_stats")([layers.GlobalAveragePooling1D(name="patches_mean")(e),
                                                      layers.GlobalAveragePooling1D(name="patches_meansq")(square)])
    else:
        e = _pool_both(e, "patches")
    e = layers.Dropout(dropout, name="embedding_drop")(e)
    x = layers.Dense(units, activation="relu", name="embedding_dense")(e) if units > 0 else e
    if vamp:
        v = layers.Dropout(dropout, name="vamp_drop")(_vamp_trunk(inputs))
        v = layers.Dense(max(units // 2, 32), activation="relu", name="vamp_dense")(v)
        x = layers.Concatenate(name="both")([x, v])
    x = layers.Dropout(0.3, name="drop")(x)
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    out = layers.Dense(n_genres, activation="softmax", kernel_regularizer=reg, name="genre")(x)
    return keras.Model(inputs, out, name="head")


def assemble_pretrained(head: Any, embedder: Any):
    """One network from raw inputs: log-mel -> frozen embedder -> head, beside the Vamp inputs."""
    import keras

    names = input_names(head)
    inputs = {n: keras.Input(tuple(head.get_layer(n).output.shape[1:]), name=n) for n in names if n != EMBEDDING_INPUT}
    inputs[PRETRAINED_INPUT] = keras.Input(tuple(embedder.inputs[0].shape[1:]), name=PRETRAINED_INPUT)
    feed = {n: inputs[n] for n in names if n != EMBEDDING_INPUT}
    feed[EMBEDDING_INPUT] = embedder(inputs[PRETRAINED_INPUT])
    return keras.Model(inputs, head(feed), name="pretrained")
