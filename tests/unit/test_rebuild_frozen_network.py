"""tools/rebuild_frozen_network.py: the shipped model's frozen network rebuilt from the
wheel gives the same probabilities bit for bit, keeps the version, and is saved only then."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.settings import REPO_ROOT

TOOL = REPO_ROOT / "tools" / "rebuild_frozen_network.py"
MODEL = REPO_ROOT / "models" / "default"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("musicnn") is None,
                                reason="musicnn weights not installed (pip install --no-deps musicnn==0.1.0)")


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_the_shipped_model_rebuilt_gives_the_same_probabilities_and_version(tmp_path: Path) -> None:
    from shared.model import ModelArtifact
    from tests.unit.test_model_golden import predict_golden

    out = tmp_path / "rebuilt"
    res = run_tool(str(MODEL), "--out", str(out), "--chunks", "2")
    assert res.returncode == 0, res.stderr
    assert "largest probability difference 0;" in res.stdout
    old, new = ModelArtifact.load(MODEL), ModelArtifact.load(out)
    assert new.version == old.version and new.genres == old.genres
    a, b = predict_golden(old), predict_golden(new)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_a_model_without_the_frozen_network_is_left_alone(tmp_path: Path, synthetic_model: Path) -> None:
    before = sorted(p.name for p in synthetic_model.iterdir())
    res = run_tool(str(synthetic_model), "--chunks", "1")
    assert res.returncode == 2
    assert "no frozen musicnn network" in res.stderr
    assert sorted(p.name for p in synthetic_model.iterdir()) == before
