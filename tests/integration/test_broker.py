"""The local Kafka broker and the kafka_io helpers against it (a real KRaft node)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from kafka import TopicPartition

from shared import kafka_io
from shared.broker import LocalBroker, SaslSslListener, ScramUser, ensure_jars, free_port, kafka_version
from shared.schemas import MAX_MESSAGE_BYTES
from shared.settings import REPO_ROOT, Settings
from shared.topics import ensure_topics
from tests.fixtures.broker import unique_settings

pytestmark = pytest.mark.kafka


def _consume(consumer, want: int, timeout: float = 30.0) -> list:  # noqa: ANN001
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    return got


# --- configuration (no broker needed) ---------------------------------------------------


def test_server_properties_single_node(tmp_path) -> None:  # noqa: ANN001
    b = LocalBroker(tmp_path, port=19092, controller_port=19093)
    props = b.server_properties()
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr"):
        assert props[key] == "1", key


def test_server_properties_sasl_ssl_listener(tmp_path) -> None:  # noqa: ANN001
    listener = SaslSslListener(
        keystore_location="/certs/broker.p12", keystore_password="ks-pw",
        mechanisms=("SCRAM-SHA-512", "PLAIN"), plain_users=(("svc", "pw"),),
        scram_users=(ScramUser("alice", "alice-pw"),), port=19094,
    )
    b = LocalBroker(tmp_path, port=19092, controller_port=19093, sasl_ssl=listener)
    b._choose_ports()
    props = b.server_properties()
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:19094")
    assert "SASL_SSL:SASL_SSL" in props["listener.security.protocol.map"]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512,PLAIN"
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == "/certs/broker.p12"
    assert props["listener.name.sasl_ssl.ssl.keystore.password"] == "ks-pw"
    assert "ScramLoginModule required" in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert 'user_svc="pw"' in props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    with pytest.raises(ValueError):
        ScramUser("bad,name", "x")


def test_jars_are_cached() -> None:
    ensure_jars()  # resolves once if this cache is new
    t0 = time.monotonic()
    libs = ensure_jars()
    assert time.monotonic() - t0 < 1.0, "a second ensure_jars must not run Maven"
    assert (libs / f"kafka_2.13-{kafka_version()}.jar").is_file()
    assert any(libs.glob("log4j-slf4j2-impl-*.jar")) and any(libs.glob("slf4j-api-2.*.jar"))


def test_unreachable_broker_message() -> None:
    s = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(kafka_io.BrokerUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+.*genre broker start"):
        kafka_io.wait_for_broker(s, timeout=1)


# --- the running broker -------------------------------------------------------------------


def test_broker_answers(kafka_bootstrap: str) -> None:
    kafka_io.wait_for_broker(Settings(bootstrap_servers=kafka_bootstrap), timeout=10)


def test_large_message_through_chunk_topic(kafka_settings: Settings) -> None:
    s = kafka_settings
    value = os.urandom(3 * 1024 * 1024)
    producer = kafka_io.make_producer(s)
    try:
        md = kafka_io.send_and_wait(producer, s.topic_chunks, "song-3mib", value, headers={"schema": "1"})
        assert md.topic == s.topic_chunks and md.offset == 0
        # the largest message the schema allows also fits
        big = kafka_io.send_and_wait(producer, s.topic_chunks, "song-3mib", os.urandom(MAX_MESSAGE_BYTES))
        assert big.partition == md.partition  # same key, same partition
    finally:
        producer.close()
    consumer = kafka_io.make_consumer(s, s.group_extractor, [s.topic_chunks])
    try:
        got = _consume(consumer, 2)
    finally:
        consumer.close()
    assert [len(r.value) for r in got] == [len(value), MAX_MESSAGE_BYTES]
    assert got[0].value == value and got[0].key == b"song-3mib" and got[0].headers == [("schema", b"1")]


def test_size_limits_are_enforced(kafka_settings: Settings) -> None:
    s = kafka_settings
    producer = kafka_io.make_producer(s)
    try:
        with pytest.raises(kafka_io.DeliveryFailed):  # the songs topic keeps the 1 MiB limit
            kafka_io.send_and_wait(producer, s.topic_songs, "k", os.urandom(2 * 1024 * 1024), timeout=20)
        with pytest.raises(kafka_io.DeliveryFailed):  # beyond the producer's request limit
            kafka_io.send_and_wait(producer, s.topic_chunks, "k", os.urandom(MAX_MESSAGE_BYTES + 128 * 1024), timeout=20)
    finally:
        producer.close()


def test_no_topic_auto_creation(kafka_settings: Settings) -> None:
    producer = kafka_io.make_producer(kafka_settings, max_block_ms=3000)
    try:
        with pytest.raises(kafka_io.DeliveryFailed):
            kafka_io.send_and_wait(producer, kafka_settings.topic_songs + ".nope", "k", b"x", timeout=10)
    finally:
        producer.close(timeout=5)
    admin = kafka_io.make_admin(kafka_settings)
    try:
        assert kafka_settings.topic_songs + ".nope" not in admin.list_topics()
    finally:
        admin.close()


def test_manual_commit_and_reconsume(kafka_settings: Settings) -> None:
    s = kafka_settings
    producer = kafka_io.make_producer(s)
    futures = [kafka_io.send(producer, s.topic_features, "song-a", f"m{i}".encode()) for i in range(6)]
    metas = kafka_io.flush_or_raise(producer, futures)
    producer.close()
    assert [m.offset for m in metas] == list(range(6))
    tp = TopicPartition(s.topic_features, metas[0].partition)

    # 1) read everything, commit only after the first 4 (offset 4 = next to read)
    c1 = kafka_io.make_consumer(s, s.group_classifier, [s.topic_features])
    got = _consume(c1, 6)
    assert [r.value for r in got] == [f"m{i}".encode() for i in range(6)]
    kafka_io.commit_offsets(c1, kafka_io.offsets_after(got[:4]))
    assert c1.committed(tp) == 4
    c1.close()

    # 2) the same group resumes at the committed offset: m4, m5 again (at-least-once)
    c2 = kafka_io.make_consumer(s, s.group_classifier, [s.topic_features])
    again = _consume(c2, 2)
    assert [r.value for r in again] == [b"m4", b"m5"]
    assert kafka_io.consumer_lag(c2) == {t: 0 for t in c2.assignment()}
    assert kafka_io.at_end(c2)
    c2.close()  # nothing committed: auto-commit is off

    c3 = kafka_io.make_consumer(s, s.group_classifier, [s.topic_features])
    assert [r.value for r in _consume(c3, 2)] == [b"m4", b"m5"]
    c3.close()

    # 3) a group-less reader sees the whole topic
    reader = kafka_io.make_reader(s, s.topic_features)
    assert len(_consume(reader, 6)) == 6
    reader.close()


def test_asynchronous_commit_lands_and_reports_failures(kafka_settings: Settings) -> None:
    s = kafka_settings
    producer = kafka_io.make_producer(s)
    metas = kafka_io.flush_or_raise(producer, [kafka_io.send(producer, s.topic_features, "song-b", f"n{i}".encode())
                                               for i in range(3)])
    producer.close()
    tp = TopicPartition(s.topic_features, metas[0].partition)
    failures: list = []
    c1 = kafka_io.make_consumer(s, s.group_classifier + "-async", [s.topic_features])
    got = _consume(c1, 3)
    kafka_io.commit_offsets_async(c1, kafka_io.offsets_after(got[:2]), lambda offs, exc: failures.append(exc))
    deadline = time.monotonic() + 20
    while c1.committed(tp) != metas[0].offset + 2 and time.monotonic() < deadline:
        c1.poll(timeout_ms=100)
    assert c1.committed(tp) == metas[0].offset + 2
    c1.close()
    assert failures == []
    # A commit for a partition of a topic that does not exist is refused: the failure is reported.
    c2 = kafka_io.make_consumer(s, s.group_classifier + "-async", [s.topic_features])
    _consume(c2, 1)
    kafka_io.commit_offsets_async(c2, {TopicPartition(s.topic_features + ".nope", 0): 1},
                                  lambda offs, exc: failures.append(exc))
    deadline = time.monotonic() + 20
    while not failures and time.monotonic() < deadline:
        c2.poll(timeout_ms=100)
    c2.close()
    assert failures and isinstance(failures[0], Exception)


def test_reader_on_missing_topic(kafka_settings: Settings) -> None:
    with pytest.raises(kafka_io.KafkaIOError, match="genre topics create"):
        kafka_io.make_reader(kafka_settings, "no.such.topic", timeout=1)


def test_stop_and_restart_keeps_data(broker_controller, kafka_bootstrap: str) -> None:  # noqa: ANN001
    s = unique_settings(broker_controller.bootstrap, "restart")
    ensure_topics(s)
    p = kafka_io.make_producer(s)
    kafka_io.send_and_wait(p, s.topic_verdicts, "song-r", b"before restart")
    p.close()

    t0 = time.monotonic()
    broker_controller.stop()
    stop_s = time.monotonic() - t0
    assert not broker_controller.is_running()
    with pytest.raises(kafka_io.BrokerUnavailable):
        kafka_io.wait_for_broker(s, timeout=1)
    broker_controller.start()
    assert broker_controller.is_running()
    assert broker_controller.bootstrap == s.bootstrap_servers  # same port after a restart
    reader = kafka_io.make_reader(s, s.topic_verdicts)
    got = _consume(reader, 1)
    reader.close()
    assert [r.value for r in got] == [b"before restart"]
    assert stop_s < 30


def test_cli_status(broker_controller) -> None:  # noqa: ANN001
    env = dict(os.environ)
    res = subprocess.run(
        [sys.executable, "-m", "shared.cli", "broker", "status", "--data-dir", str(broker_controller.broker.data_dir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert f"running at {broker_controller.bootstrap}" in res.stdout
    res = subprocess.run(
        [sys.executable, "-m", "shared.cli", "broker", "status", "--data-dir", str(REPO_ROOT / "no-such-dir")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 3 and "not running" in res.stdout


def test_cli_reports_missing_java(tmp_path) -> None:  # noqa: ANN001
    env = dict(os.environ, PATH=str(tmp_path), JAVA_HOME=str(tmp_path))  # neither java nor mvn on PATH
    res = subprocess.run(
        [sys.executable, "-m", "shared.cli", "broker", "start", "--data-dir", str(tmp_path / "d"), "--port", str(free_port())],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 3
    assert "java not found" in res.stderr and "apt-get install" in res.stderr


# --- SASL_SSL (the foundation of the security suite) -------------------------------------


def test_sasl_ssl_listener(sasl_ssl_broker) -> None:  # noqa: ANN001
    sb = sasl_ssl_broker
    s = unique_settings(sb.broker.bootstrap, "sasl")  # topics made over PLAINTEXT, used over SASL_SSL
    ensure_topics(s)
    scram = sb.settings("genre-svc", **{k: getattr(s, k) for k in ("topic_chunks", "partitions")})
    kafka_io.wait_for_broker(scram, timeout=20)
    producer = kafka_io.make_producer(scram)
    kafka_io.send_and_wait(producer, scram.topic_chunks, "song-tls", os.urandom(1024 * 1024))
    producer.close()
    plain = sb.settings("genre-plain", mechanism="PLAIN", topic_chunks=s.topic_chunks)
    reader = kafka_io.make_reader(plain, plain.topic_chunks)
    got = _consume(reader, 1)
    reader.close()
    assert [len(r.value) for r in got] == [1024 * 1024]

    # a user added to the running broker (SCRAM credentials through the admin API)
    sb.broker.add_scram_user(ScramUser("late-user", "late-pw"))
    kafka_io.wait_for_broker(sb.settings("late-user", "late-pw"), timeout=20)


def test_sasl_ssl_wrong_credentials_are_refused_clearly(sasl_ssl_broker) -> None:  # noqa: ANN001
    sb = sasl_ssl_broker
    bad = sb.settings("genre-svc", password="not-the-password")
    for make in (lambda: kafka_io.wait_for_broker(bad, timeout=20),
                 lambda: kafka_io.make_consumer(bad, "g-bad", [bad.topic_songs]),
                 lambda: kafka_io.make_producer(bad)):
        t0 = time.monotonic()
        with pytest.raises(kafka_io.AuthenticationFailed, match="refused user 'genre-svc' with SCRAM-SHA-512"):
            make()
        assert time.monotonic() - t0 < 15, "an authentication failure must not wait for the bootstrap timeout"
    unknown_ca = sb.settings("genre-svc", ssl_cafile="")  # system CAs do not trust the test CA
    with pytest.raises(kafka_io.AuthenticationFailed, match="CERTIFICATE_VERIFY_FAILED"):
        kafka_io.wait_for_broker(unknown_ca, timeout=20)
