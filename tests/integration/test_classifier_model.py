"""The classifier's ModelHolder (hot reload between batches) and mixed precision, with the
real synthetic model (no broker)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from services.classifier.models import ModelHolder, to_mixed_precision
from shared.metrics import ServiceMetrics
from shared.model import ModelArtifact
from tests.fixtures.models import copy_model_as_version, swap_symlink, fake_chunk






def _poll_current(holder: ModelHolder, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while holder.current().version != version:
        assert time.monotonic() < deadline, f"still {holder.model.version}"
        holder.wait_loaded(1.0)
        time.sleep(0.05)


def test_symlink_swap_is_picked_up_between_batches(synthetic_model, tmp_path):
    v1 = ModelArtifact.load(synthetic_model).version
    m1 = copy_model_as_version(Path(synthetic_model), tmp_path / "m1")
    m2 = copy_model_as_version(Path(synthetic_model), tmp_path / "m2", "synthetic-v2")
    link = tmp_path / "current"
    os.symlink(m1, link)
    metrics = ServiceMetrics("classifier")
    holder = ModelHolder(str(link), metrics, check_interval_s=0.0)
    first = holder.current()
    assert first.version == v1
    swap_symlink(link, m2)
    _poll_current(holder, "synthetic-v2")
    # the old version stays available while an open song is pinned to it, then goes
    assert holder.get(v1) is first
    holder.retain({v1})
    assert holder.get(v1) is first
    holder.retain(set())
    assert holder.get(v1) is None and holder.versions() == ["synthetic-v2"]
    assert metrics.model_info.labels("classifier", "synthetic-v2")._value.get() == 1
    assert metrics.model_reloads.labels("classifier", "ok")._value.get() == 1


def test_in_place_save_is_picked_up_and_a_broken_folder_keeps_the_old_model(synthetic_model, tmp_path):
    folder = copy_model_as_version(Path(synthetic_model), tmp_path / "model")
    metrics = ServiceMetrics("classifier")
    holder = ModelHolder(str(folder), metrics, check_interval_s=0.0)
    old = holder.current().version
    art = ModelArtifact.load(folder)
    art.metadata["version"] = "synthetic-saved-again"
    art.save(folder)  # replaces model.keras, then metadata.json
    _poll_current(holder, "synthetic-saved-again")
    (folder / "metadata.json").write_text("{not json")
    holder.current()
    holder.wait_loaded(30)
    assert holder.current().version == "synthetic-saved-again"
    assert metrics.model_reloads.labels("classifier", "failed")._value.get() == 1
    assert old != "synthetic-saved-again"


def test_mixed_precision_matches_float32(synthetic_model):
    art = ModelArtifact.load(synthetic_model)
    mixed = to_mixed_precision(art)
    assert mixed.version == art.version
    assert any("float16" in str(getattr(layer, "compute_dtype", "")) for layer in mixed.model.layers)
    assert mixed.model.layers[-1].compute_dtype == "float32"  # the softmax stays in float32
    batch = [fake_chunk("ab"[i % 2], i) for i in range(16)]
    p32, p16 = art.predict(batch), mixed.predict(batch)
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16, p32, atol=2e-2)
    assert (p16.argmax(1) == p32.argmax(1)).mean() >= 0.9


def test_mixed_precision_is_not_applied_on_cpu(synthetic_model, caplog):
    holder = ModelHolder(str(synthetic_model), ServiceMetrics("classifier"), mixed_precision=True)
    if holder.device.startswith("GPU"):
        pytest.skip("this checks the CPU fallback")
    assert all(layer.compute_dtype == "float32" for layer in holder.model.model.layers)
    assert "staying in float32" in caplog.text
