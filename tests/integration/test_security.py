"""The pipeline through an authenticated, encrypted Kafka listener (no mocks).

The `sasl_ssl_broker` fixture (tests/fixtures/broker.py) starts a second real broker
with a SASL_SSL listener: a throw-away CA and broker certificate made with openssl
(argument lists, no shell), SCRAM-SHA-512 users written by Kafka's own StorageTool
(`format --add-scram`), PLAIN users in its JAAS configuration. Here:

- the three services, `genre produce` and the verdict reader all talk to it over
  SASL_SSL only, configured through the environment (GENRE_KAFKA_SECURITY_PROTOCOL,
  GENRE_KAFKA_SASL_*, GENRE_KAFKA_SSL_CAFILE), SCRAM-SHA-512 for the services and
  PLAIN for the producer, and every song gets its verdict;
- a client with a wrong password, an unknown user, or no TLS is refused, and each
  service given wrong credentials exits with status 3 and says "authentication".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared import kafka_io
from shared.settings import REPO_ROOT
from shared.topics import ensure_topics
from tests.fixtures.audio import make_song, write_audio
from tests.fixtures.broker import unique_settings
from tests.fixtures.services import SERVICES, Pipeline, ServiceProcess, settings_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

AUTH_EXIT = 3


def sasl_settings(sb, label: str, user: str = "genre-svc", password: str | None = None,  # noqa: ANN001
                  mechanism: str = "SCRAM-SHA-512", **overrides):
    """SASL_SSL settings for `user` with topics/groups of their own (named after `label`)."""
    names = unique_settings(sb.bootstrap, label)
    keep = {k: getattr(names, k) for k in (
        "topic_songs", "topic_audio", "topic_chunks", "topic_features", "topic_predictions", "topic_verdicts",
        "topic_deadletter", "group_chunker", "group_extractor", "group_classifier", "partitions")}
    keep.update(overrides)
    return sb.settings(user, password, mechanism=mechanism, **keep)


def produce(env: dict[str, str], *paths: Path) -> dict[str, str]:
    res = subprocess.run([sys.executable, "-m", "shared.cli", "produce", "--json", *map(str, paths)],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return {json.loads(line)["filename"]: json.loads(line)["song_id"] for line in res.stdout.splitlines()}


def test_the_pipeline_runs_through_sasl_ssl(sasl_ssl_broker, synthetic_model, tmp_path) -> None:  # noqa: ANN001
    sb = sasl_ssl_broker
    settings = sasl_settings(sb, "sasl-pipeline")
    assert settings.bootstrap_servers == sb.bootstrap != sb.broker.bootstrap  # the TLS port, not PLAINTEXT
    ensure_topics(settings)  # over SASL_SSL as well
    pipeline = Pipeline(settings, str(synthetic_model), tmp_path)
    env = pipeline.env
    assert env["GENRE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["GENRE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["GENRE_KAFKA_SSL_CAFILE"] and env["GENRE_KAFKA_SASL_PASSWORD"]
    songs = {
        write_audio(tmp_path / "clicks tls.flac", make_song("clicks", 35, seed=61)): "clicks",
        write_audio(tmp_path / "drone tls.flac", make_song("drone", 62, seed=62)): "drone",
    }
    corrupt = tmp_path / "corrupt tls.mp3"
    corrupt.write_bytes(b"\xff\xfb\x90\x64" + bytes(range(256)) * 40)
    try:
        pipeline.start()
        # the producer authenticates with SASL/PLAIN (another user), the services with SCRAM-SHA-512
        user, password = next(iter(sb.plain_users.items()))
        plain_env = {**env, "GENRE_KAFKA_SASL_MECHANISM": "PLAIN", "GENRE_KAFKA_SASL_USERNAME": user,
                     "GENRE_KAFKA_SASL_PASSWORD": password}
        ids = produce(plain_env, *songs, corrupt)
        records = pipeline.verdicts(len(ids), timeout=240)
    finally:
        pipeline.stop()
    latest = {r["song_id"]: r for r in records}
    for path, genre in songs.items():
        v = latest[ids[str(path)]]
        assert (v["status"], v["genre"]) == ("ok", genre), v
    assert latest[ids[str(corrupt)]]["status"] == "error"
    for name, svc in pipeline.services.items():  # stopped by SIGTERM: a clean exit
        assert svc.proc is not None and svc.proc.returncode == 0, f"{name}:\n{svc.log_tail()}"


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "plain-wrong-password"])
def test_clients_with_wrong_credentials_are_refused(sasl_ssl_broker, case: str) -> None:  # noqa: ANN001
    sb = sasl_ssl_broker
    bad = {
        "wrong-password": lambda: sb.settings("genre-svc", "not-the-password"),
        "unknown-user": lambda: sb.settings("nobody", "whatever"),
        "plain-wrong-password": lambda: sb.settings("genre-plain", "not-the-password", mechanism="PLAIN"),
    }[case]()
    t0 = time.monotonic()
    with pytest.raises(kafka_io.AuthenticationFailed, match=r"refused user"):
        kafka_io.wait_for_broker(bad, timeout=20)
    assert time.monotonic() - t0 < 15
    # the CLI says so and fails, without a traceback
    env = {**os.environ, **settings_env(bad)}
    res = subprocess.run([sys.executable, "-m", "shared.cli", "results", "--json"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "refused user" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_client_without_tls_gets_nothing(sasl_ssl_broker) -> None:  # noqa: ANN001
    sb = sasl_ssl_broker
    no_tls = sb.settings("genre-svc", security_protocol="SASL_PLAINTEXT")
    with pytest.raises(kafka_io.KafkaIOError):
        kafka_io.wait_for_broker(no_tls, timeout=8)


def test_each_service_exits_3_with_a_clear_message_on_wrong_credentials(sasl_ssl_broker, synthetic_model,  # noqa: ANN001
                                                                        tmp_path) -> None:
    sb = sasl_ssl_broker
    good = sasl_settings(sb, "sasl-refused")
    ensure_topics(good)
    bad = sasl_settings(sb, "sasl-refused", password="wrong-" + "x" * 8)
    env = {**Pipeline(bad, str(synthetic_model), tmp_path).env}
    procs = {name: ServiceProcess(name, env, tmp_path).start() for name in SERVICES}
    deadline = time.monotonic() + 120
    try:
        for name, svc in procs.items():
            assert svc.proc is not None
            try:
                svc.proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} kept running with wrong credentials:\n{svc.log_tail()}")
    finally:
        for svc in procs.values():
            svc.kill()
    for name, svc in procs.items():
        log = svc.log_path.read_text(errors="replace")
        assert svc.proc.returncode == AUTH_EXIT, f"{name} exited {svc.proc.returncode}:\n{svc.log_tail()}"
        assert re.search(r"authentication", log, re.I), f"{name} did not say why:\n{svc.log_tail()}"
        assert "wrong-xxxxxxxx" not in log, f"{name} logged the password"
        assert "Traceback" not in log, f"{name} crashed instead of exiting cleanly:\n{svc.log_tail()}"


def test_settings_env_carries_the_security_options(sasl_ssl_broker) -> None:  # noqa: ANN001
    env = settings_env(sasl_ssl_broker.settings("genre-svc"))
    assert env["GENRE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["GENRE_KAFKA_SSL_CHECK_HOSTNAME"] == "true"
    assert Path(env["GENRE_KAFKA_SSL_CAFILE"]).is_file()
