"""The feature contract: what a features message and a model artifact promise.

A model trained on one spec must never be fed features of another; the classifier
compares `FeatureSpec.id` of every features message with its model's and refuses a
mismatch with a clear error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class FeatureSpec:
    """QM MFCC (20 coefficients) and BBC spectral contrast peaks/valleys (7 bands),
    exactly as sonic-annotator 1.6 computes them with default plugin parameters."""

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

    def feature_shapes(self, n_samples: int | None = None) -> dict[str, tuple[int, int]]:
        n = self.chunk_samples if n_samples is None else n_samples
        return {
            "mfcc": (self.mfcc_frames(n), self.n_mfcc),
            "peaks": (self.contrast_frames(n), self.n_bands),
            "valleys": (self.contrast_frames(n), self.n_bands),
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


DEFAULT_SPEC = FeatureSpec()


@dataclass(frozen=True)
class ChunkFeatures:
    """Features of one chunk: mfcc (T1, 20), peaks (T2, 7), valleys (T2, 7), float32."""

    mfcc: np.ndarray
    peaks: np.ndarray
    valleys: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mfcc": self.mfcc, "peaks": self.peaks, "valleys": self.valleys}


class SpecMismatch(ValueError):
    """Features computed under one spec offered to a model trained on another."""


def require_same_spec(got: str, expected: FeatureSpec) -> None:
    if got != expected.id:
        raise SpecMismatch(
            f"features were computed with spec {got!r} but the model expects {expected.id!r}; "
            "re-extract with the model's spec or load a model trained on these features"
        )


def require_feature_shapes(arrays: Mapping[str, np.ndarray], spec: FeatureSpec) -> None:
    """One chunk's arrays must have the spec's frame and coefficient counts, so that a
    malformed record fails alone instead of failing (or being padded into) a batch."""
    expected = spec.feature_shapes()
    got = {k: tuple(a.shape) for k, a in arrays.items()}
    if got != expected:
        raise SpecMismatch(f"features of shapes {got} where the model's spec {spec.id} needs {expected}")
