"""Message schemas, defined once, versioned, validated on decode.

Every message is a msgpack map with `"v"` (schema version) and `"type"`. Decoding uses
strict msgpack limits (no ext types, bounded sizes) and then checks every field's type;
anything else raises `SchemaError` with a reason the dead-letter record carries.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Collection, Mapping, TypeVar

import msgpack
import numpy as np

from shared import pcm_codec

SCHEMA_VERSION = 1
"""The version every message type but the chunk and the features writes and reads."""
CHUNK_SCHEMA_VERSION = 2
"""Chunk v2: the PCM as 24-bit block floating point under FLAC (`shared/pcm_codec.py`,
median 1.65 MB a 30-s chunk of real music, 1.15 MB rounded to 18 bits); v1: raw float32
(2.65 MB). Chunkers write GENRE_CHUNK_SCHEMA; extractors read both, so a rolling upgrade
mixes them without a dead letter."""
CHUNK_READ_VERSIONS = frozenset({1, CHUNK_SCHEMA_VERSION})
FEATURES_SCHEMA_VERSION = 2
"""Features v2: the log-mel (85 % of a v1 record) in 16-bit fixed point over its own range
(`pack_fixed16`: at most half a step, range / 131,070, off: ~4e-5 of a 0-5 log-mel), the
Vamp arrays float32 as in v1 (their contract with sonic-annotator is 1e-4), so a spec-v2
record is 0.57 of v1's bytes. Extractors write GENRE_FEATURES_SCHEMA; classifiers read both."""
FEATURES_READ_VERSIONS = frozenset({1, FEATURES_SCHEMA_VERSION})
FIXED16_ARRAYS = frozenset({"logmel"})
"""The features arrays v2 writes in 16-bit fixed point: inputs of a network, not of the contract."""
MAX_MESSAGE_BYTES = 3 * 1024 * 1024
"""Upper bound of any message. The largest are the v1 float32 chunks (2.65 MB), still
read during an upgrade; a v2 chunk is at most ~2.0 MB (FLAC's verbatim fallback, 3 bytes
a sample), a spec-v2 features record ~0.85 MB."""
MAX_CHUNK_SAMPLES = MAX_MESSAGE_BYTES // 4
"""Most samples a chunk may declare: what a v1 float32 chunk under MAX_MESSAGE_BYTES could
hold, so a v2 payload (FLAC compresses silence ~1000:1) can never decode to more memory
than a v1 record of the same limit."""

# Used with `fullmatch` only: `$` also matches before a trailing newline, and `match`
# alone accepts any suffix (a digest followed by "/../../etc/passwd").
SONG_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
BLOB_KEY_RE = re.compile(r"[0-9a-f]{64}")
ALLOWED_DTYPES = {"float32", "int16"}


class SchemaError(ValueError):
    """A message that does not decode or does not match its schema."""


def now() -> float:
    return time.time()


# --- arrays ------------------------------------------------------------------------------


def pack_array(a: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    if str(a.dtype) not in ALLOWED_DTYPES:
        raise SchemaError(f"dtype {a.dtype} not allowed (use one of {sorted(ALLOWED_DTYPES)})")
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.tobytes()}


def unpack_array(d: Any, name: str, allowed: Collection[str] = ALLOWED_DTYPES) -> np.ndarray:
    if not isinstance(d, dict) or set(d) != {"dtype", "shape", "data"}:
        raise SchemaError(f"{name}: expected an array map with dtype, shape, data")
    dtype, shape, data = d["dtype"], d["shape"], d["data"]
    if dtype not in allowed:
        raise SchemaError(f"{name}: dtype {dtype!r} not allowed")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 3
        or not all(isinstance(s, int) and 0 <= s <= 10_000_000 for s in shape)
    ):
        raise SchemaError(f"{name}: bad shape {shape!r}")
    if not isinstance(data, bytes):
        raise SchemaError(f"{name}: data must be bytes")
    itemsize = np.dtype(dtype).itemsize
    if math.prod(shape) * itemsize != len(data):
        raise SchemaError(f"{name}: {len(data)} bytes do not fill shape {shape} of {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


FIXED16_CODEC = "u16-affine"
FIXED16_KEYS = frozenset({"codec", "shape", "lo", "step", "data"})
FIXED16_LEVELS = 65535


def pack_fixed16(a: np.ndarray) -> dict[str, Any]:
    """A float32 array as little-endian uint16 steps over [min, max]: lo + q * step, at
    most step / 2 off (plus float32 rounding). Not finite, or empty: the exact float32 map
    (a reader tells the two by their keys)."""
    if a.dtype != np.float32:
        raise SchemaError(f"dtype {a.dtype} not allowed (fixed point is written from float32)")
    if a.size == 0 or not np.isfinite(a).all():
        return pack_array(a)
    lo, hi = float(a.min()), float(a.max())
    step = (hi - lo) / FIXED16_LEVELS or 1.0
    q = np.rint((a - np.float32(lo)) * np.float32(1.0 / step))
    np.clip(q, 0, FIXED16_LEVELS, out=q)
    return {"codec": FIXED16_CODEC, "shape": list(a.shape), "lo": lo, "step": step,
            "data": q.astype("<u2").tobytes()}


def unpack_fixed16(d: Any, name: str) -> np.ndarray:
    """float32 values of a `pack_fixed16` map, or of a plain float32 array map."""
    if isinstance(d, dict) and "codec" not in d:
        return unpack_array(d, name)
    if not isinstance(d, dict) or set(d) != FIXED16_KEYS:
        raise SchemaError(f"{name}: expected a fixed-point map with {', '.join(sorted(FIXED16_KEYS))}")
    codec, shape, lo, step, data = d["codec"], d["shape"], d["lo"], d["step"], d["data"]
    if codec != FIXED16_CODEC:
        raise SchemaError(f"{name}: codec {codec!r} is not supported (expected {FIXED16_CODEC!r})")
    if not all(isinstance(v, float) and math.isfinite(v) for v in (lo, step)) or step <= 0:
        raise SchemaError(f"{name}: lo and step must be finite floats, step positive")
    q = unpack_array({"dtype": "uint16", "shape": shape, "data": data}, name, allowed=("uint16",))
    out = q.astype(np.float32)
    out *= np.float32(step)
    out += np.float32(lo)
    return out


# --- messages ----------------------------------------------------------------------------

M = TypeVar("M", bound="Message")


@dataclass
class Message:
    TYPE: ClassVar[str] = ""
    ARRAYS: ClassVar[tuple[str, ...]] = ()
    VERSION: ClassVar[int] = SCHEMA_VERSION
    """The schema version this type writes."""
    READS: ClassVar[frozenset[int]] = frozenset({SCHEMA_VERSION})
    """The schema versions this type decodes."""

    def to_dict(self, version: int | None = None) -> dict[str, Any]:
        """The wire map of schema `version` (default VERSION; any version this type reads,
        for readers not yet upgraded)."""
        version = self.VERSION if version is None else version
        if version not in self.READS:
            raise SchemaError(f"{self.TYPE} schema version {version} cannot be written")
        # Shallow: no field holds a dataclass, and msgpack copies what it packs
        # (dataclasses.asdict deep-copies, a hot spot in the classifier's send path).
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.ARRAYS}
        for k in self.ARRAYS:
            d[k] = self._pack_arrays(k, getattr(self, k), version)
        d["v"] = version
        d["type"] = self.TYPE
        return d

    def _pack_arrays(self, name: str, value: Any, version: int) -> Any:
        """One array field (an array, or a map of names to arrays) as schema `version` writes it."""
        return {k: pack_array(a) for k, a in value.items()} if isinstance(value, dict) else pack_array(value)

    def encode(self, version: int | None = None) -> bytes:
        return msgpack.packb(self.to_dict(version), use_bin_type=True)

    @classmethod
    def from_dict(cls: type[M], d: Mapping[str, Any]) -> M:
        version = d.get("v")
        if isinstance(version, bool) or version not in cls.READS:
            expected = " or ".join(str(v) for v in sorted(cls.READS))
            raise SchemaError(f"schema version {version!r} is not supported (expected {expected})")
        if d.get("type") != cls.TYPE:
            raise SchemaError(f"message type {d.get('type')!r} where {cls.TYPE!r} was expected")
        kwargs: dict[str, Any] = {}
        for name, f in cls.__dataclass_fields__.items():
            if name not in d:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise SchemaError(f"{cls.TYPE}: missing field {name!r}")
                continue
            value = d[name]
            if name in cls.ARRAYS:
                value = cls._unpack_arrays(name, value, version)
            else:
                _check_type(cls.TYPE, name, value, f.type)
            kwargs[name] = value
        msg = cls(**kwargs)
        msg.validate()
        return msg

    @classmethod
    def _unpack_arrays(cls, name: str, value: Any, version: int) -> Any:
        """One array field (an array map, or a map of names to array maps) of a message
        of schema `version`."""
        if isinstance(value, dict) and "dtype" not in value:
            return {k: unpack_array(a, f"{name}.{k}") for k, a in value.items() if isinstance(k, str)}
        return unpack_array(value, name)

    def validate(self) -> None:
        song_id = getattr(self, "song_id", None)
        if song_id is not None and not SONG_ID_RE.fullmatch(song_id):
            raise SchemaError(f"song_id {song_id!r} is not a valid id")


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list[float]": (list,),
    "list[str]": (list,),
    "dict[str, float]": (dict,),
    "dict[str, Any]": (dict,),
}


def _check_type(mtype: str, name: str, value: Any, annotation: Any) -> None:
    ann = str(annotation)
    allowed = _TYPES.get(ann)
    if allowed is None:
        return
    if isinstance(value, bool) and ann in ("int", "float"):
        raise SchemaError(f"{mtype}.{name}: expected {ann}, got bool")
    if not isinstance(value, allowed):
        raise SchemaError(f"{mtype}.{name}: expected {ann}, got {type(value).__name__}")
    if ann == "list[float]" and not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise SchemaError(f"{mtype}.{name}: expected a list of numbers")
    if ann == "list[str]" and not all(isinstance(x, str) for x in value):
        raise SchemaError(f"{mtype}.{name}: expected a list of strings")
    if ann == "dict[str, float]" and not all(
        isinstance(k, str) and isinstance(x, (int, float)) and not isinstance(x, bool) for k, x in value.items()
    ):
        raise SchemaError(f"{mtype}.{name}: expected a map of names to numbers")


@dataclass
class SongRef(Message):
    """Ingest: a claim check for a song in the shared blob store.

    Songs can be hundreds of MB; Kafka messages should stay around 1 MiB. The producer
    stores the file under its SHA-256 in the shared store and sends only this reference,
    so the broker never carries (or is tuned for) whole songs, and a re-sent song costs
    one small message. The key is a content hash, never a path: it cannot escape the store.
    """

    TYPE: ClassVar[str] = "song"
    song_id: str
    filename: str
    blob: str
    size: int
    produced_at: float = 0.0

    def validate(self) -> None:
        super().validate()
        if not BLOB_KEY_RE.fullmatch(self.blob):
            raise SchemaError(f"blob key {self.blob!r} is not a SHA-256 hex digest")
        if self.size < 0:
            raise SchemaError("size must not be negative")


PCM_MAP_KEYS = frozenset({"codec", "n", "block", "exponents", "data"})


def pack_pcm(pcm: np.ndarray, sample_rate: int) -> dict[str, Any]:
    """A chunk's PCM as v2 writes it: `shared/pcm_codec.py`'s 24-bit block floating
    point in FLAC (bit-exact for audio from <= 24-bit PCM; see that module's bound)."""
    if pcm.size == 0:
        return {"codec": pcm_codec.CODEC, "n": 0, "block": pcm_codec.BLOCK, "exponents": b"", "data": b""}
    try:
        enc = pcm_codec.encode(pcm, sample_rate)
    except pcm_codec.PcmCodecError as exc:
        raise SchemaError(f"pcm: {exc}") from None
    return {"codec": pcm_codec.CODEC, "n": enc.n, "block": enc.block, "exponents": enc.exponents, "data": enc.data}


def unpack_pcm(d: Any, name: str = "pcm") -> np.ndarray:
    """float32 samples of a v2 PCM map; a payload that does not decode is a SchemaError
    with the reason (a dead letter, like any malformed v1 array)."""
    if not isinstance(d, dict) or set(d) != PCM_MAP_KEYS:
        raise SchemaError(f"{name}: expected an encoded pcm map with {', '.join(sorted(PCM_MAP_KEYS))}")
    codec, n, block, exponents, data = d["codec"], d["n"], d["block"], d["exponents"], d["data"]
    if codec != pcm_codec.CODEC:
        raise SchemaError(f"{name}: codec {codec!r} is not supported (expected {pcm_codec.CODEC!r})")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, block)):
        raise SchemaError(f"{name}: n and block must be integers")
    if not isinstance(exponents, bytes) or not isinstance(data, bytes):
        raise SchemaError(f"{name}: exponents and data must be bytes")
    if not 0 <= n <= MAX_CHUNK_SAMPLES:
        raise SchemaError(f"{name}: {n} samples exceed the {MAX_CHUNK_SAMPLES} a chunk may hold")
    if n == 0:
        if exponents or data:
            raise SchemaError(f"{name}: an empty chunk carries {len(exponents) + len(data)} payload bytes")
        return np.zeros(0, np.float32)
    try:
        return pcm_codec.decode(pcm_codec.EncodedPcm(n=n, block=block, exponents=exponents, data=data))
    except pcm_codec.PcmCodecError as exc:
        raise SchemaError(f"{name}: {exc}") from None


@dataclass
class Chunk(Message):
    """One 30-second chunk of mono PCM at the spec's rate: float32 in memory; on the wire
    v2 (written) is 24-bit block floating point in FLAC (`pack_pcm`, median 1.65 MB of real
    music, 1.15 MB at 18 bits, 0.5-1.1 MB of 16-bit sources), v1 (still read) raw float32 (2.65 MB).

    `last` marks the song's final message; `error` (non-empty) means the song failed at
    this point and carries the reason to the verdict."""

    TYPE: ClassVar[str] = "chunk"
    ARRAYS: ClassVar[tuple[str, ...]] = ("pcm",)
    VERSION: ClassVar[int] = CHUNK_SCHEMA_VERSION
    READS: ClassVar[frozenset[int]] = CHUNK_READ_VERSIONS
    song_id: str
    filename: str
    index: int
    last: bool
    sample_rate: int
    n_samples: int
    pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    error: str = ""
    produced_at: float = 0.0
    chunked_at: float = 0.0

    def _pack_arrays(self, name: str, value: Any, version: int) -> Any:
        return pack_array(value) if version == 1 else pack_pcm(np.asarray(value), self.sample_rate)

    @classmethod
    def _unpack_arrays(cls, name: str, value: Any, version: int) -> Any:
        if version == 1:
            return unpack_array(value, name)
        return unpack_pcm(value, name)

    def validate(self) -> None:
        super().validate()
        if self.index < 0:
            raise SchemaError("chunk index must not be negative")
        if not self.error and self.pcm.ndim != 1:
            raise SchemaError(f"pcm must be 1-D, got shape {self.pcm.shape}")
        if self.pcm.size > MAX_CHUNK_SAMPLES:
            raise SchemaError(f"pcm: {self.pcm.size} samples exceed the {MAX_CHUNK_SAMPLES} a chunk may hold")


FEATURE_ARRAYS = frozenset({"mfcc", "peaks", "valleys"})
OPTIONAL_FEATURE_ARRAYS = frozenset({"logmel"})  # feature spec v2


@dataclass
class Features(Message):
    """One chunk's feature arrays under the spec `spec_id` (spec v2 adds logmel: 0.84 MB
    in all as schema v1 writes it, float32; 0.48 MB as v2 does, the log-mel in 16 bits)."""

    TYPE: ClassVar[str] = "features"
    ARRAYS: ClassVar[tuple[str, ...]] = ("arrays",)
    VERSION: ClassVar[int] = FEATURES_SCHEMA_VERSION
    READS: ClassVar[frozenset[int]] = FEATURES_READ_VERSIONS
    song_id: str
    filename: str
    index: int
    last: bool
    spec_id: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: str = ""
    produced_at: float = 0.0
    extract_seconds: float = 0.0

    def _pack_arrays(self, name: str, value: Any, version: int) -> Any:
        if version == 1:
            return super()._pack_arrays(name, value, version)
        return {k: pack_fixed16(a) if k in FIXED16_ARRAYS else pack_array(a) for k, a in value.items()}

    @classmethod
    def _unpack_arrays(cls, name: str, value: Any, version: int) -> Any:
        if version == 1 or not isinstance(value, dict):
            return super()._unpack_arrays(name, value, version)
        return {k: (unpack_fixed16 if k in FIXED16_ARRAYS else unpack_array)(a, f"{name}.{k}")
                for k, a in value.items() if isinstance(k, str)}

    def validate(self) -> None:
        super().validate()
        if self.index < 0:
            raise SchemaError("chunk index must not be negative")
        if not self.error:
            names = set(self.arrays)
            if not FEATURE_ARRAYS <= names or names - FEATURE_ARRAYS - OPTIONAL_FEATURE_ARRAYS:
                raise SchemaError(f"features need mfcc, peaks, valleys and may hold logmel; got {sorted(self.arrays)}")
            for k, a in self.arrays.items():
                if a.ndim != 2 or a.dtype != np.float32:
                    raise SchemaError(f"{k}: expected a 2-D float32 array, got {a.dtype} {a.shape}")


@dataclass
class Prediction(Message):
    TYPE: ClassVar[str] = "prediction"
    song_id: str
    filename: str
    index: int
    last: bool
    probabilities: list[float] = field(default_factory=list)
    genres: list[str] = field(default_factory=list)
    model_version: str = ""
    error: str = ""
    produced_at: float = 0.0


@dataclass
class Verdict(Message):
    """One per song id; identical on replay (no wall-clock fields enter equality)."""

    TYPE: ClassVar[str] = "verdict"
    song_id: str
    filename: str
    status: str  # "ok" or "error"
    genre: str = ""
    confidence: float = 0.0
    probabilities: dict[str, float] = field(default_factory=dict)
    votes: list[str] = field(default_factory=list)
    chunk_count: int = 0
    model_version: str = ""
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    produced_at: float = 0.0
    verdict_at: float = 0.0

    def identity(self) -> tuple[Any, ...]:
        """The fields that must agree between a verdict and its replay."""
        return (
            self.song_id,
            self.status,
            self.genre,
            round(self.confidence, 6),
            tuple(sorted((k, round(v, 5)) for k, v in self.probabilities.items())),
            tuple(self.votes),
            self.chunk_count,
            self.model_version,
            self.error,
        )

    def validate(self) -> None:
        super().validate()
        if self.status not in ("ok", "error"):
            raise SchemaError(f"verdict status {self.status!r} must be 'ok' or 'error'")


@dataclass
class DeadLetter(Message):
    TYPE: ClassVar[str] = "deadletter"
    service: str
    topic: str
    partition: int
    offset: int
    reason: str
    key: str = ""
    payload_head: bytes = b""
    at: float = 0.0


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (SongRef, Chunk, Features, Prediction, Verdict, DeadLetter)
}


def decode(raw: bytes | None, expected: type[M]) -> M:
    """Decode and validate one message; every failure is a SchemaError with a reason."""
    if raw is None:
        raise SchemaError("empty message (tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SchemaError(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        d = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_MESSAGE_BYTES,
            max_str_len=1 << 20,
            max_array_len=1 << 16,
            max_map_len=1 << 10,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        raise SchemaError(f"not a msgpack message: {type(exc).__name__}: {exc}") from None
    if not isinstance(d, dict):
        raise SchemaError(f"expected a msgpack map, got {type(d).__name__}")
    return expected.from_dict(d)
