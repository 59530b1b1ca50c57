"""The classifier's models: the one serving new songs, older ones still pinned, hot reload,
and optional mixed precision on a GPU.

Rollout without downtime: every GENRE_MODEL_CHECK_INTERVAL_S the model folder is looked
at (the real path it resolves to, and metadata.json's inode, size and mtime). When it
changed, a background thread loads the new artifact and warms it up (traces the predict
function) while the worker keeps predicting with the old one; the worker swaps at its next
batch. Songs already open stay on the version that predicted their chunk 0 (see
shared.song_tracker), so every verdict is made by, and names, exactly one version; the old
version is dropped once none of its songs is open. A folder that fails to load keeps the
old model (logged and counted).

Replace the folder atomically: point a symlink at a new artifact folder and rename it over
the old link (`ln -s new tmp && mv -T tmp current`), or `ModelArtifact.save` into it
(it writes metadata.json last).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from shared.metrics import ServiceMetrics
from shared.model import METADATA_FILE, ModelArtifact, ModelLoadError

logger = logging.getLogger("services.classifier")
SERVICE = "classifier"


def to_mixed_precision(art: ModelArtifact) -> ModelArtifact:
    """The same network and weights with every layer but the inputs and the output layer in
    mixed_float16 (float16 compute, float32 variables). The softmax output stays float32 so
    probabilities keep their precision. Works on CPU too (slowly): that is how it is tested."""
    import keras

    config = art.model.get_config()
    spec = config.get("output_layers", [])
    entries = [spec] if spec and isinstance(spec[0], str) else spec  # one output: ["name", 0, 0]
    outputs = {entry[0] for entry in entries}
    for layer in config["layers"]:
        if layer.get("class_name") == "InputLayer" or layer.get("name") in outputs:
            continue
        layer["config"]["dtype"] = "mixed_float16"
    model = keras.Model.from_config(config)
    model.set_weights(art.model.get_weights())
    return ModelArtifact(model, art.metadata, path=art.path)


WARM_UP_BATCH_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64)
"""The first call with a new batch size costs ~25 ms more (oneDNN builds its kernels per
shape): pay it at load time for the sizes light load produces, not on a live chunk."""


def warm_up(art: Any) -> None:
    """Trace the predict function (batch-agnostic signature: once) and run the common sizes."""
    arrays = getattr(art, "input_names", None)
    if not arrays or not hasattr(art, "predict_arrays"):
        return
    for size in WARM_UP_BATCH_SIZES:
        art.predict_arrays({n: np.zeros((size, art.frames[n], art.widths[n]), np.float32) for n in art.input_names})


class ModelHolder:
    """Owned by the inference worker: `current()` between batches, `get(version)` for pinned songs."""

    def __init__(self, path: str, metrics: ServiceMetrics, *, mixed_precision: bool = False,
                 check_interval_s: float = 5.0, loader: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.metrics = metrics
        self.mixed_precision = mixed_precision
        self.check_interval_s = check_interval_s
        self._loader = loader or ModelArtifact.load
        self._clock = clock
        self._lock = threading.Lock()
        self._ready: tuple[Any, tuple] | None = None
        self._loading: threading.Thread | None = None
        self._stamp = self._read_stamp()
        self.model = self._load()
        self._models: dict[str, Any] = {self.model.version: self.model}
        self._checked = clock()
        self._announce()

    # -- loading ----------------------------------------------------------------------
    def _read_stamp(self) -> tuple:
        meta = Path(self.path) / METADATA_FILE
        try:
            st = meta.stat()
            return (os.path.realpath(self.path), st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            return ("", 0, 0, 0)

    def _load(self) -> Any:
        art = self._loader(self.path)
        device = str(getattr(art, "device", "CPU"))
        if self.mixed_precision:
            if device.startswith("GPU"):
                art = to_mixed_precision(art)
            else:
                logger.warning("GENRE_MIXED_PRECISION is on but the model runs on %s: staying in float32", device)
        warm_up(art)
        return art

    @property
    def device(self) -> str:
        return str(getattr(self.model, "device", "CPU"))

    def _announce(self) -> None:
        self.metrics.device.clear()
        self.metrics.device.labels(SERVICE, self.device).set(1)
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(SERVICE, self.model.version).set(1)
        precision = "mixed_float16" if self.mixed_precision and self.device.startswith("GPU") else "float32"
        logger.info("model %s (%d genres: %s) on device %s, %s", self.model.version, len(self.model.genres),
                    ", ".join(self.model.genres), self.device, precision)

    def _load_in_background(self, stamp: tuple) -> None:
        try:
            new = self._load()
        except (ModelLoadError, OSError, ValueError) as exc:
            logger.error("model at %s changed but does not load (%s); keeping %s", self.path, exc, self.model.version)
            self.metrics.model_reloads.labels(SERVICE, "failed").inc()
            with self._lock:
                self._stamp = stamp  # do not retry the same broken folder until it changes again
            return
        except Exception:  # noqa: BLE001 - a bad artifact must never kill the service
            logger.exception("model at %s changed but loading it failed; keeping %s", self.path, self.model.version)
            self.metrics.model_reloads.labels(SERVICE, "failed").inc()
            with self._lock:
                self._stamp = stamp
            return
        with self._lock:
            self._ready = (new, stamp)

    def check(self) -> None:
        """Start a background load when the folder changed (at most every check_interval_s)."""
        now = self._clock()
        if now - self._checked < self.check_interval_s:
            return
        self._checked = now
        if self._loading is not None and self._loading.is_alive():
            return
        stamp = self._read_stamp()
        with self._lock:
            if stamp == self._stamp or not stamp[0]:
                return
            self._stamp = stamp
        self._loading = threading.Thread(target=self._load_in_background, args=(stamp,),
                                         name="model-loader", daemon=True)
        self._loading.start()

    def wait_loaded(self, timeout: float = 60.0) -> None:
        """For tests: wait for a background load in progress."""
        t = self._loading
        if t is not None:
            t.join(timeout)

    # -- the worker's view ------------------------------------------------------------
    def current(self) -> Any:
        """The model for new songs; a model loaded since the last call is swapped in here."""
        self.check()
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None:
            new, _stamp = ready
            if new.version == self.model.version:
                logger.info("model folder changed; version %s unchanged", new.version)
            else:
                logger.info("model changed: %s -> %s (songs already open finish on %s)",
                            self.model.version, new.version, self.model.version)
            self.model = new
            self._models[new.version] = new
            self.metrics.model_reloads.labels(SERVICE, "ok").inc()
            self._announce()
        return self.model

    def get(self, version: str) -> Any | None:
        return self._models.get(version)

    def retain(self, versions: set[str]) -> None:
        """Drop older versions no open song is pinned to."""
        for v in [v for v in self._models if v != self.model.version and v not in versions]:
            logger.info("model %s released (no open song uses it)", v)
            del self._models[v]

    def versions(self) -> list[str]:
        return list(self._models)
