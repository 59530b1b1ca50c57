"""Golden outputs of the shipped model (`models/default`) on fixed generated chunks.

Two 30-s chunks from fixed seeds (a drone, and a drone whose first half is digital
silence) go through the real feature extraction, the artifact's preprocessing
(`ModelArtifact.input_arrays`: stacking, loudness normalisation, contrast floor,
standardisation) and its network; the probabilities must equal the committed reference
to 1e-4. Any change to the extractor, the preprocessing or the weights then shows here
and is made deliberately: e.g. CONTRAST_REL_EPS 1e-2 instead of 1e-5 moves them by 0.23,
the contrast level taken from the valleys instead of the peaks by 0.17.

Regenerate after a deliberate change (and say why in the commit):
    PYTHONPATH=. python -m tests.unit.test_model_golden --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.features import extract_chunk, get_extractor
from shared.featurespec import MEL_SPEC
from shared.model import ModelArtifact
from shared.settings import REPO_ROOT
from tests.fixtures.audio import make_song

MODEL = REPO_ROOT / "models" / "default"
REFERENCE = Path(__file__).parent / "data" / "shipped_model_golden.json"
ATOL = 1e-4


def golden_chunks() -> dict[str, np.ndarray]:
    """The fixed inputs: 30 s at the spec's rate, from fixed seeds."""
    n = MEL_SPEC.chunk_samples
    drone = make_song("drone", MEL_SPEC.chunk_seconds, seed=11)[:n]
    half_silent = make_song("drone", MEL_SPEC.chunk_seconds, seed=13)[:n].copy()
    half_silent[: n // 2] = 0.0  # silence: contrast magnitudes at the floor
    return {"drone-seed11": drone, "half-silent-drone-seed13": half_silent}


def predict_golden(model: ModelArtifact) -> dict[str, list[float]]:
    extract = get_extractor("builtin")
    chunks = golden_chunks()
    probs = model.predict([extract_chunk(pcm, MEL_SPEC, extract) for pcm in chunks.values()])
    return {name: [float(x) for x in row] for name, row in zip(chunks, probs)}


@pytest.fixture(scope="module")
def shipped():
    return ModelArtifact.load(MODEL)


def test_shipped_model_gives_the_committed_probabilities_on_fixed_chunks(shipped):
    ref = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert shipped.version == ref["model_version"], "models/default changed: regenerate the reference (see docstring)"
    assert shipped.genres == ref["genres"]
    got = predict_golden(shipped)
    assert set(got) == set(ref["probabilities"])
    for name, expected in ref["probabilities"].items():
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=ATOL, err_msg=name)
        assert abs(sum(got[name]) - 1.0) < 1e-4


def write_reference() -> None:
    model = ModelArtifact.load(MODEL)
    ref = {
        "model_version": model.version,
        "genres": model.genres,
        "inputs": "tests/unit/test_model_golden.py::golden_chunks",
        "probabilities": {k: [round(x, 7) for x in v] for k, v in predict_golden(model).items()},
    }
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(ref, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.unit.test_model_golden --write")
    write_reference()
