"""The shipped model (models/default, with its frozen pre-trained network) through the real
broker and the three services: the verdicts equal `genre classify`'s, and features without
the log-mel it reads get an error verdict that says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from tests.e2e.test_pipeline import assert_one_verdict_each
from tests.fixtures.audio import make_song, write_audio
from tests.fixtures.services import Pipeline

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SHIPPED = REPO_ROOT / "models" / "default"


@pytest.fixture
def shipped(kafka_settings, tmp_path: Path):
    p = Pipeline(kafka_settings, str(SHIPPED), tmp_path)
    try:
        yield p
    finally:
        p.stop()


def _songs(root: Path) -> list[Path]:
    return [
        write_audio(root / "drone long.flac", make_song("drone", 65, 11)),  # 2 chunks, 5 s tail dropped
        write_audio(root / "clicks.mp3", make_song("clicks", 40, 12), codec_args=("-b:a", "192k")),  # 2nd chunk padded
    ]


@pytest.mark.parametrize("chunks", ["float32", "compact"])
def test_shipped_model_through_the_pipeline_agrees_with_classify(shipped, tmp_path, chunks):
    """Float32 records (chunk and features schema 1, the defaults) give classify's
    probabilities to 1e-4; compact ones (chunk schema 2 rounded to 18 bits, features schema
    2 with the log-mel in 16 bits, as compose and k8s deploy them) the same verdicts, with
    probabilities within 5e-2: this synthetic MP3 of clicks in near silence is the worst case
    for rounding (measured 0.015; real MP3s: bench/chunk_encoding.py)."""
    meta = json.loads((SHIPPED / "metadata.json").read_text())
    songs = _songs(tmp_path)
    tolerance = 1e-4
    if chunks == "compact":
        chunker, extractor = shipped.services["chunker"], shipped.services["extractor"]
        chunker.env = {**chunker.env, "GENRE_CHUNK_SCHEMA": "2", "GENRE_CHUNK_BITS": "18"}
        extractor.env = {**extractor.env, "GENRE_FEATURES_SCHEMA": "2"}
        tolerance = 5e-2
    shipped.start()
    ids = shipped.produce(*songs)
    verdicts = assert_one_verdict_each(shipped.verdicts(len(songs), timeout=420), ids)
    emb = subprocess.run([sys.executable, "-m", "shared.cli", "classify", "--json", "--model", str(SHIPPED),
                          *map(str, songs)], cwd=REPO_ROOT, env=shipped.env, capture_output=True, text=True, timeout=600)
    assert emb.returncode == 0, emb.stderr
    embedded = {json.loads(line)["filename"]: json.loads(line) for line in emb.stdout.splitlines()}
    for path in songs:
        k, e = verdicts[ids[str(path)]], embedded[path.name]
        assert k["status"] == e["status"] == "ok", (k, e)
        assert k["model_version"] == e["model_version"] == meta["version"]
        assert set(k["probabilities"]) == set(meta["genres"])
        assert (k["genre"], k["votes"], k["chunk_count"]) == (e["genre"], e["votes"], e["chunk_count"]) and k["chunk_count"] == 2
        moved = max(abs(p - e["probabilities"][g]) for g, p in k["probabilities"].items())
        print(f"{chunks} chunks, {path.name}: largest probability change against classify {moved:.2g}")
        assert moved < tolerance, (k["probabilities"], e["probabilities"])


def test_features_without_the_log_mel_get_an_error_verdict(shipped, tmp_path):
    extractor = shipped.services["extractor"]
    extractor.env = {**extractor.env, "GENRE_FEATURE_SPEC": "1"}  # an extractor left on the Vamp-only spec
    song = write_audio(tmp_path / "drone.flac", make_song("drone", 31, 13))
    shipped.start()
    ids = shipped.produce(song)
    v = assert_one_verdict_each(shipped.verdicts(1, timeout=300), ids)[ids[str(song)]]
    assert v["status"] == "error", v
    assert "logmel" in v["error"] and "GENRE_FEATURE_SPEC=2" in v["error"], v["error"]
