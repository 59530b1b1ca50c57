"""The feature contract: what a features message and a model artifact promise.

A model must only be fed features computed the way its training features were. Spec v1
carries the Vamp arrays (MFCC, spectral contrast); v2 carries the very same arrays plus the
16-kHz log-mel that a pre-trained network reads (`shared/logmel.py`). The classifier checks
every features message against its model's spec with `require_compatible_spec`: a v1 model
reads v2 features (it ignores the extra array), a v2 model refuses v1 features with an
error that says how to get the log-mel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from shared import logmel


@dataclass(frozen=True)
class FeatureSpec:
    """QM MFCC (20 coefficients) and BBC spectral contrast peaks/valleys (7 bands),
    exactly as sonic-annotator 1.6 computes them with default plugin parameters, and,
    when `mel_bands` > 0, `shared.logmel.log_mel_chunk` of the chunk (0: no log-mel)."""

    name: str = "qm-mfcc20+bbc-contrast7"
    version: int = 1
    sample_rate: int = 22050
    chunk_seconds: float = 30.0
    mfcc_block: int = 2048
    mfcc_step: int = 1024
    n_mfcc: int = 20
    contrast_block: int = 1024
    contrast_step: int = 512
    n_bands: int = 7
    dtype: str = "float32"
    frame_convention: str = "sonic-annotator-1.6: centred frames at k*step, ceil(N/1024) host blocks"
    mel_bands: int = 0
    mel_sample_rate: int = logmel.MEL_SAMPLE_RATE
    mel_fft: int = logmel.MEL_FFT
    mel_hop: int = logmel.MEL_HOP

    @property
    def id(self) -> str:
        return f"{self.name}/v{self.version}@{self.sample_rate}Hz/{self.chunk_seconds:g}s"

    @property
    def chunk_samples(self) -> int:
        return int(round(self.sample_rate * self.chunk_seconds))

    @staticmethod
    def host_blocks(n_samples: int) -> int:
        """sonic-annotator reads 1024-sample blocks, zero-padding the last one."""
        return max(1, math.ceil(n_samples / 1024))

    def mfcc_frames(self, n_samples: int) -> int:
        return self.host_blocks(n_samples) * 1024 // self.mfcc_step

    def contrast_frames(self, n_samples: int) -> int:
        return self.host_blocks(n_samples) * 1024 // self.contrast_step

    def mel_frames(self, n_samples: int) -> int:
        return logmel.mel_frames(logmel.resampled_length(n_samples, self.sample_rate))

    def feature_shapes(self, n_samples: int | None = None) -> dict[str, tuple[int, int]]:
        n = self.chunk_samples if n_samples is None else n_samples
        shapes = {
            "mfcc": (self.mfcc_frames(n), self.n_mfcc),
            "peaks": (self.contrast_frames(n), self.n_bands),
            "valleys": (self.contrast_frames(n), self.n_bands),
        }
        if self.mel_bands > 0:
            shapes["logmel"] = (self.mel_frames(n), self.mel_bands)
        return shapes

    def provides(self, needed: "FeatureSpec") -> bool:
        """Whether features of this spec hold every array a model trained on `needed`
        reads, computed the same way (extra arrays are ignored by that model)."""
        if self.id == needed.id:
            return True
        skip = {"name", "version", *(MEL_FIELDS if needed.mel_bands == 0 else ())}
        return all(getattr(self, f) == getattr(needed, f) for f in self.__dataclass_fields__ if f not in skip)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.mel_bands == 0:  # v1 metadata stays as it was, so model versions do not change
            for f in MEL_FIELDS:
                del d[f]
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


MEL_FIELDS = ("mel_bands", "mel_sample_rate", "mel_fft", "mel_hop")

DEFAULT_SPEC = FeatureSpec()
"""v1, the Vamp arrays: what the shipped model reads and training uses unless told otherwise."""
MEL_SPEC = FeatureSpec(name="qm-mfcc20+bbc-contrast7+logmel96", version=2, mel_bands=logmel.MEL_BANDS)
"""v2: v1's arrays plus the 16-kHz log-mel (`logmel`) that musicnn reads."""
KNOWN_SPECS: dict[str, FeatureSpec] = {s.id: s for s in (DEFAULT_SPEC, MEL_SPEC)}


def spec_by_id(spec_id: str) -> FeatureSpec | None:
    """The known spec of this id, None for any other."""
    return KNOWN_SPECS.get(spec_id)


def spec_by_version(version: int) -> FeatureSpec:
    """The known spec of this version (GENRE_FEATURE_SPEC); ValueError for any other."""
    for spec in KNOWN_SPECS.values():
        if spec.version == version:
            return spec
    valid = ", ".join(f"{s.version} ({s.id})" for s in KNOWN_SPECS.values())
    raise ValueError(f"unknown feature spec version {version!r}; valid: {valid}")


@dataclass(frozen=True)
class ChunkFeatures:
    """Features of one chunk: mfcc (T1, 20), peaks (T2, 7), valleys (T2, 7) and, under a
    spec with log-mel, logmel (T3, 96), float32."""

    mfcc: np.ndarray
    peaks: np.ndarray
    valleys: np.ndarray
    logmel: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {"mfcc": self.mfcc, "peaks": self.peaks, "valleys": self.valleys}
        if self.logmel is not None:
            arrays["logmel"] = self.logmel
        return arrays


class SpecMismatch(ValueError):
    """Features computed under one spec offered to a model trained on another."""


def _lacks_logmel(expected: FeatureSpec) -> str:
    return (f"these features lack the log-mel input ('logmel', {expected.mel_bands} bands) that the model's "
            f"spec {expected.id!r} needs; run the extractor with the v{expected.version} feature spec "
            f"(GENRE_FEATURE_SPEC={expected.version}, the default)")


def require_compatible_spec(got: str, expected: FeatureSpec) -> None:
    """Features of spec id `got` must hold what a model trained on `expected` reads."""
    if got == expected.id:
        return
    spec = spec_by_id(got)
    if spec is not None and spec.provides(expected):
        return
    if spec is not None and expected.mel_bands > 0 and spec.mel_bands == 0:
        raise SpecMismatch(f"features were computed with spec {got!r}: {_lacks_logmel(expected)}")
    raise SpecMismatch(
        f"features were computed with spec {got!r} but the model expects {expected.id!r}; "
        "re-extract with the model's spec or load a model trained on these features"
    )


def require_feature_shapes(arrays: Mapping[str, np.ndarray], spec: FeatureSpec) -> None:
    """One chunk must hold every array the spec needs, with its frame and coefficient
    counts (extra arrays are allowed), so that a malformed record fails alone instead of
    failing (or being padded into) a batch."""
    expected = spec.feature_shapes()
    if "logmel" in expected and "logmel" not in arrays:
        raise SpecMismatch(_lacks_logmel(spec))
    got = {k: tuple(arrays[k].shape) for k in expected if k in arrays}
    if got != expected:
        raise SpecMismatch(f"features of shapes {got} where the model's spec {spec.id} needs {expected}")
