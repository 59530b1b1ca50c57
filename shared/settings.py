"""All settings in one typed place, read from the environment.

Every field documents its environment variable and default. Services, the CLI and the
tests build a `Settings` with `Settings.from_env()`; nothing else reads `os.environ`
for configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "default"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genre"


@dataclass(frozen=True)
class Settings:
    """Runtime settings. `env` names are given in each field's metadata."""

    # --- Kafka connection -------------------------------------------------------------
    bootstrap_servers: str = field(default="127.0.0.1:9092", metadata={"env": "GENRE_KAFKA_BOOTSTRAP"})
    security_protocol: str = field(default="PLAINTEXT", metadata={"env": "GENRE_KAFKA_SECURITY_PROTOCOL"})
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str = field(default="", metadata={"env": "GENRE_KAFKA_SASL_MECHANISM"})
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)."""
    sasl_username: str = field(default="", metadata={"env": "GENRE_KAFKA_SASL_USERNAME"})
    sasl_password: str = field(default="", metadata={"env": "GENRE_KAFKA_SASL_PASSWORD"})
    ssl_cafile: str = field(default="", metadata={"env": "GENRE_KAFKA_SSL_CAFILE"})
    ssl_certfile: str = field(default="", metadata={"env": "GENRE_KAFKA_SSL_CERTFILE"})
    ssl_keyfile: str = field(default="", metadata={"env": "GENRE_KAFKA_SSL_KEYFILE"})
    ssl_check_hostname: bool = field(default=True, metadata={"env": "GENRE_KAFKA_SSL_CHECK_HOSTNAME"})

    # --- Topics and groups ------------------------------------------------------------
    topic_songs: str = field(default="genre.songs", metadata={"env": "GENRE_TOPIC_SONGS"})
    topic_audio: str = field(default="genre.audio", metadata={"env": "GENRE_TOPIC_AUDIO"})
    """Raw-audio ingest: a record's value is a whole audio file (any Kafka client can
    send one, `shared/audio_ingest.py`); the chunker reads it beside the songs topic."""
    topic_chunks: str = field(default="genre.chunks", metadata={"env": "GENRE_TOPIC_CHUNKS"})
    topic_features: str = field(default="genre.features", metadata={"env": "GENRE_TOPIC_FEATURES"})
    topic_predictions: str = field(default="genre.predictions", metadata={"env": "GENRE_TOPIC_PREDICTIONS"})
    topic_verdicts: str = field(default="genre.verdicts", metadata={"env": "GENRE_TOPIC_VERDICTS"})
    topic_deadletter: str = field(default="genre.deadletter", metadata={"env": "GENRE_TOPIC_DEADLETTER"})
    partitions: int = field(default=12, metadata={"env": "GENRE_TOPIC_PARTITIONS"})
    """Partitions of every work topic; the upper bound on useful replicas of a stage."""
    replication_factor: int = field(default=1, metadata={"env": "GENRE_TOPIC_REPLICATION"})
    group_chunker: str = field(default="genre-chunker", metadata={"env": "GENRE_GROUP_CHUNKER"})
    group_extractor: str = field(default="genre-extractor", metadata={"env": "GENRE_GROUP_EXTRACTOR"})
    group_classifier: str = field(default="genre-classifier", metadata={"env": "GENRE_GROUP_CLASSIFIER"})

    # --- Storage, model, audio --------------------------------------------------------
    blob_dir: str = field(default=str(_default_cache_dir() / "blobs"), metadata={"env": "GENRE_BLOB_DIR"})
    """Shared song store (claim check): `genre produce` writes here, the chunker reads."""
    model_path: str = field(default=str(DEFAULT_MODEL_DIR), metadata={"env": "GENRE_MODEL_PATH"})
    """A model artifact folder (model.keras + metadata.json)."""
    extractor_backend: str = field(default="builtin", metadata={"env": "EXTRACTOR_BACKEND"})
    """builtin (numpy) or sonic-annotator (the real CLI on PATH)."""
    feature_spec: int = field(default=2, metadata={"env": "GENRE_FEATURE_SPEC"})
    """Extractor: the feature spec it emits (shared/featurespec.py). 2: the Vamp arrays
    plus the 16-kHz log-mel a pre-trained network reads (v1 models read it too); 1: the
    Vamp arrays only (cheaper, but models trained on v2 refuse it)."""
    chunk_schema: int = field(default=1, metadata={"env": "GENRE_CHUNK_SCHEMA"})
    """Chunker: the chunk schema it writes. 1: float32 PCM, 2.65 MB a chunk, bit-exact, so
    verdicts equal `genre classify`'s; 2: 24-bit block floating point in FLAC (0.62 of the
    bytes on real MP3s, 0.31 on 16-bit sources; sources of up to 24 bits stay exact,
    decoded MP3s do not: probabilities move by up to a few thousandths). The extractor
    reads both."""
    chunk_bits: int = field(default=24, metadata={"env": "GENRE_CHUNK_BITS"})
    """Chunker, schema 2 only: significant bits kept per 4,096-sample block (16-24). Below
    24 the samples are rounded first (`pcm_codec.round_bits`) and FLAC stores the zero low
    bits for free: about 1/32 of a float32 chunk less per bit dropped (18 bits: 0.44 of
    float32 on real MP3s). From 17 up, 16-bit sources stay exact; bench/chunk_encoding.py
    measures what each setting does to the features and the model's probabilities. The
    extractor needs no setting."""
    features_schema: int = field(default=1, metadata={"env": "GENRE_FEATURES_SCHEMA"})
    """Extractor: the features schema it writes. 1: every array float32 (a spec-v2 record is
    0.84 MB), so verdicts equal `genre classify`'s; 2: the log-mel in 16-bit fixed point
    over its range (0.48 MB; the log-mel within ~4e-5, the Vamp arrays exact). Upgrade
    the classifiers (they read both) before an extractor writes 2."""
    min_chunk_seconds: float = field(default=10.0, metadata={"env": "GENRE_MIN_CHUNK_SECONDS"})
    """A final partial chunk shorter than this is dropped; a song shorter than this is an error."""
    decode_timeout_s: float = field(default=600.0, metadata={"env": "GENRE_DECODE_TIMEOUT_S"})
    max_decoded_seconds: float = field(default=4 * 3600.0, metadata={"env": "GENRE_MAX_DECODED_SECONDS"})
    """Songs are cut off (with an error verdict) beyond this decoded length."""
    audio_record_max_bytes: int = field(default=16 * 1024 * 1024, metadata={"env": "GENRE_AUDIO_MAX_BYTES"})
    """Largest audio file accepted as one record on the raw-audio topic (the topic's
    max.message.bytes is this plus 64 KiB of record overhead; the chunker fetches that
    much). A larger value is a dead letter; larger files go by claim check (`genre produce`)."""

    # --- Service behaviour ------------------------------------------------------------
    metrics_port: int = field(default=0, metadata={"env": "GENRE_METRICS_PORT"})
    """Prometheus port; 0 disables the HTTP endpoint."""
    batch_max_size: int = field(default=128, metadata={"env": "GENRE_BATCH_MAX_SIZE"})
    """Classifier: most chunks per predict call. 128 rather than 64 on CPU: half the calls
    and per-batch Python work, and a deeper queue (4 batches): bench/classifier.py sustained
    0.97 of the offline ceiling in 2 runs at 128 against 0.78-0.80 at 64, alternating."""
    batch_max_wait_ms: float = field(default=50.0, metadata={"env": "GENRE_BATCH_MAX_WAIT_MS"})
    batch_preferred_sizes: str = field(default="", metadata={"env": "GENRE_BATCH_PREFERRED_SIZES"})
    """Classifier: comma-separated batch sizes to take at once when that many chunks wait
    (Triton's preferred sizes, e.g. "32,64"); empty: fill to the maximum or the wait."""
    classifier_queue_max: int = field(default=0, metadata={"env": "GENRE_CLASSIFIER_QUEUE_MAX"})
    """Classifier: chunks queued for the inference thread before the consumer pauses
    (backpressure); 0 means 4 x GENRE_BATCH_MAX_SIZE."""
    mixed_precision: bool = field(default=False, metadata={"env": "GENRE_MIXED_PRECISION"})
    """Classifier: run the network in float16 (mixed_float16, output layer in float32) on a
    GPU. Ignored (with a warning) on CPU. All replicas of a group should agree on it."""
    model_check_interval_s: float = field(default=5.0, metadata={"env": "GENRE_MODEL_CHECK_INTERVAL_S"})
    """Classifier: how often the model folder is checked for a new artifact (hot reload)."""
    classifier_stale_song_s: float = field(default=900.0, metadata={"env": "GENRE_CLASSIFIER_STALE_SONG_S"})
    """Classifier: a song with no new chunk for this long gets an error verdict (a chunk was lost)."""
    classifier_io_nice: int = field(default=10, metadata={"env": "GENRE_CLASSIFIER_IO_NICE"})
    """Classifier: nice value added, after the model is loaded, to every thread but
    TensorFlow's compute threads, so that the Kafka and batching threads yield the CPU to
    inference when CPUs are contended (shared/thread_priority.py); 0 leaves it alone."""
    poll_timeout_ms: int = field(default=500, metadata={"env": "GENRE_POLL_TIMEOUT_MS"})
    session_timeout_ms: int = field(default=10_000, metadata={"env": "GENRE_SESSION_TIMEOUT_MS"})
    """How soon a dead consumer's partitions move to a live one (heartbeats every third of it)."""
    log_level: str = field(default="INFO", metadata={"env": "GENRE_LOG_LEVEL"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            if name and name in env:
                values[f.name] = _coerce(env[name], f.default, name)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def kafka_client_config(self) -> dict[str, object]:
        """Connection options shared by every kafka-python client."""
        cfg: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            cfg["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = self.sasl_password
        if self.security_protocol.endswith("SSL"):
            cfg["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                cfg["ssl_cafile"] = self.ssl_cafile
            if self.ssl_certfile:
                cfg["ssl_certfile"] = self.ssl_certfile
            if self.ssl_keyfile:
                cfg["ssl_keyfile"] = self.ssl_keyfile
        return cfg


def _coerce(raw: str, default: object, name: str) -> object:
    try:
        if isinstance(default, bool):
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


def documented_settings() -> list[tuple[str, str, object]]:
    """(env var, field, default) for the README's settings table."""
    return [(f.metadata["env"], f.name, f.default) for f in fields(Settings) if "env" in f.metadata]
