"""The classifier's worker with a real (tiny, trained) v1 model: the log-mel of v2 features
does not change its predictions. Apart from tests/unit/test_classifier_worker.py because
training takes seconds: scripts/mutation.sh runs the worker's mutants against that file's
fast tests, and every mutant of prepare/predict/finish would otherwise train a model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from services.classifier.batching import Item, WorkQueue
from services.classifier.worker import InferenceWorker
from shared.featurespec import DEFAULT_SPEC, MEL_SPEC
from shared.metrics import ServiceMetrics
from shared.schemas import Features
from tests.unit.test_classifier_worker import SETTINGS, FakeHolder, predictions


def test_a_real_v1_model_predicts_the_same_with_or_without_the_log_mel():
    from shared.training import train_model
    from tests.fixtures.models import fake_set

    feats, labels, groups = fake_set()
    model = train_model(feats, labels, groups, arch="tiny", epochs=1, seed=1, name="unit", batch_size=8)
    w = InferenceWorker(WorkQueue(64), FakeHolder(model), SETTINGS, ServiceMetrics("classifier"))
    logmel = np.ones(MEL_SPEC.feature_shapes()["logmel"], np.float32)
    batch = []
    for k, f in enumerate(feats[:4]):
        v1 = Features(song_id=f"s{k}", filename="x.wav", index=0, last=True, spec_id=DEFAULT_SPEC.id, arrays=f.arrays())
        v2 = replace(v1, song_id=f"m{k}", spec_id=MEL_SPEC.id, arrays={**f.arrays(), "logmel": logmel})
        batch += [Item("p0", 2 * k, v1), Item("p0", 2 * k + 1, v2)]
    ps = predictions(w.process(batch))
    assert all(not p.error for p in ps) and len(ps) == 8
    for a, b in zip(ps[::2], ps[1::2]):
        assert a.probabilities == b.probabilities
