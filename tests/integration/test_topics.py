"""Topics are created by code, idempotently, with the configured settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from shared import kafka_io
from shared.schemas import MAX_MESSAGE_BYTES
from shared.settings import REPO_ROOT, Settings
from shared.topics import TOPIC_SPECS, describe_topic_configs, ensure_topics, list_topics, topic_specs
from tests.fixtures.broker import delete_test_topics, unique_settings

pytestmark = pytest.mark.kafka

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def fresh_settings(kafka_bootstrap: str, request: pytest.FixtureRequest):  # noqa: ANN201
    """Unique topic names that do NOT exist yet."""
    s = unique_settings(kafka_bootstrap, request.node.name, partitions=3)
    yield s
    delete_test_topics(s)


def test_specs_cover_every_topic() -> None:
    s = Settings()
    specs = {t.name: t for t in TOPIC_SPECS(s)}
    assert set(specs) == {s.topic_songs, s.topic_audio, s.topic_chunks, s.topic_features, s.topic_predictions,
                          s.topic_verdicts, s.topic_deadletter}
    assert s.topic_audio == "genre.audio"
    assert int(specs[s.topic_audio].configs["max.message.bytes"]) == 16 * 1024 * 1024 + 64 * 1024
    assert all(t.partitions == s.partitions and t.replication_factor == s.replication_factor for t in specs.values())
    assert int(specs[s.topic_chunks].configs["max.message.bytes"]) == MAX_MESSAGE_BYTES + 64 * 1024
    assert specs[s.topic_verdicts].configs["cleanup.policy"] == "compact"


def test_create_twice_is_idempotent_with_configs(fresh_settings: Settings) -> None:
    s = fresh_settings
    names = [t.name for t in topic_specs(s)]
    first = ensure_topics(s)
    assert sorted(first.created) == sorted(names) and not first.existing and not first.problems
    second = ensure_topics(s)
    assert not second.created and sorted(second.existing) == sorted(names)
    assert not second.partitions_increased and not second.config_drift and not second.problems

    listed = {t["name"]: t for t in list_topics(s)}
    for name in names:
        assert listed[name]["partitions"] == 3
    cfg = {n: listed[n]["configs"] for n in names}
    big = str(MAX_MESSAGE_BYTES + 64 * 1024)
    assert cfg[s.topic_chunks]["max.message.bytes"] == big
    assert cfg[s.topic_features]["max.message.bytes"] == big
    assert cfg[s.topic_audio]["max.message.bytes"] == str(s.audio_record_max_bytes + 64 * 1024)
    for small in (s.topic_songs, s.topic_predictions, s.topic_verdicts, s.topic_deadletter):
        assert cfg[small]["max.message.bytes"] == str(1024 * 1024)
    for work in (s.topic_songs, s.topic_audio, s.topic_chunks, s.topic_features, s.topic_predictions):
        assert cfg[work]["retention.ms"] == str(7 * DAY_MS)
        assert cfg[work]["cleanup.policy"] == "delete"
    assert cfg[s.topic_verdicts]["cleanup.policy"] == "compact"
    assert cfg[s.topic_deadletter]["retention.ms"] == str(30 * DAY_MS)


def test_concurrent_creators_do_not_fail(fresh_settings: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        reports = list(pool.map(lambda _: ensure_topics(fresh_settings), range(3)))
    created = [n for r in reports for n in r.created]
    assert sorted(created) == sorted(t.name for t in topic_specs(fresh_settings))  # each exactly once


def test_fewer_partitions_are_reported_or_increased(fresh_settings: Settings) -> None:
    from dataclasses import replace

    ensure_topics(fresh_settings)  # 3 partitions
    wider = replace(fresh_settings, partitions=5)
    report = ensure_topics(wider, increase_partitions=False)
    assert set(report.partitions_short) == {t.name for t in topic_specs(wider)}
    assert report.partitions_short[wider.topic_chunks] == (3, 5)
    assert any("3 partitions, 5 configured" in p for p in report.problems)

    report = ensure_topics(wider)
    assert report.partitions_increased[wider.topic_chunks] == (3, 5) and not report.problems
    assert {t["name"]: t["partitions"] for t in list_topics(wider)}[wider.topic_chunks] == 5
    # more partitions than configured is fine (never reduced)
    assert not ensure_topics(fresh_settings).problems


def test_config_drift_is_reported_and_fixed(fresh_settings: Settings) -> None:
    s = fresh_settings
    ensure_topics(s)
    admin = kafka_io.make_admin(s)
    try:
        res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, s.topic_verdicts, {"cleanup.policy": "delete"})])
        assert res == {"topic": {s.topic_verdicts: "OK"}}
        deadline = time.monotonic() + 15  # the change reaches the broker's metadata cache a moment later
        while describe_topic_configs(admin, [s.topic_verdicts])[s.topic_verdicts].get("cleanup.policy") != "delete":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        report = ensure_topics(s, admin=admin)
        assert report.config_drift == {s.topic_verdicts: {"cleanup.policy": ("delete", "compact")}}
        assert report.problems
        report = ensure_topics(s, admin=admin, fix_configs=True)
        assert report.configs_fixed == [s.topic_verdicts]
        got = describe_topic_configs(admin, [s.topic_verdicts], ["cleanup.policy"])
        assert got[s.topic_verdicts]["cleanup.policy"] == "compact"
    finally:
        admin.close()


def test_cli_topics_create_and_list(fresh_settings: Settings) -> None:
    s = fresh_settings
    env = dict(os.environ)
    env.update({
        "GENRE_KAFKA_BOOTSTRAP": s.bootstrap_servers,
        "GENRE_TOPIC_PARTITIONS": "2",
        "GENRE_TOPIC_SONGS": s.topic_songs, "GENRE_TOPIC_AUDIO": s.topic_audio, "GENRE_TOPIC_CHUNKS": s.topic_chunks,
        "GENRE_TOPIC_FEATURES": s.topic_features, "GENRE_TOPIC_PREDICTIONS": s.topic_predictions,
        "GENRE_TOPIC_VERDICTS": s.topic_verdicts, "GENRE_TOPIC_DEADLETTER": s.topic_deadletter,
    })

    def genre(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    res = genre("topics", "create")
    assert res.returncode == 0, res.stderr
    assert f"created {s.topic_chunks}" in res.stdout
    res = genre("topics", "create")
    assert res.returncode == 0 and f"exists  {s.topic_chunks}" in res.stdout
    res = genre("topics", "list")
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(s.topic_verdicts + " "))
    assert "2 partitions" in line and "cleanup.policy=compact" in line

    env["GENRE_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"
    res = genre("topics", "list", "--wait", "1")
    assert res.returncode == 3 and "cannot reach Kafka at 127.0.0.1:1" in res.stderr
