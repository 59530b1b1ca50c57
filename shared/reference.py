"""Where the reference material beside the project lives (golden CSVs, dataset, sonic-annotator)."""

from __future__ import annotations

import os
from pathlib import Path

from shared.settings import REPO_ROOT


def reference_dir() -> Path:
    """GENRE_REFERENCE_DIR, default ../shared beside the repository."""
    return Path(os.environ.get("GENRE_REFERENCE_DIR", str(REPO_ROOT.parent / "shared")))


def golden_dir() -> Path:
    return reference_dir() / "golden"


def dataset_dir() -> Path:
    return reference_dir() / "data"
