"""Settings -> kafka-python client configuration, and the error and offset helpers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaTimeoutError, SaslAuthenticationFailedError
from kafka.structs import OffsetAndMetadata

from shared import kafka_io
from shared.schemas import MAX_MESSAGE_BYTES
from shared.settings import Settings


def test_plaintext_defaults() -> None:
    cfg = Settings.from_env(environ={}).kafka_client_config()
    assert cfg == {"bootstrap_servers": ["127.0.0.1:9092"], "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_from_environment() -> None:
    env = {
        "GENRE_KAFKA_BOOTSTRAP": "k1:9093,k2:9093",
        "GENRE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "GENRE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "GENRE_KAFKA_SASL_USERNAME": "alice",
        "GENRE_KAFKA_SASL_PASSWORD": "s3cret",
        "GENRE_KAFKA_SSL_CAFILE": "/certs/ca.pem",
        "GENRE_KAFKA_SSL_CHECK_HOSTNAME": "false",
    }
    cfg = Settings.from_env(environ=env).kafka_client_config()
    assert cfg == {
        "bootstrap_servers": ["k1:9093", "k2:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
        "ssl_check_hostname": False,
        "ssl_cafile": "/certs/ca.pem",
    }


def test_sasl_plaintext_defaults_to_plain_and_has_no_ssl_options() -> None:
    cfg = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p").kafka_client_config()
    assert cfg["sasl_mechanism"] == "PLAIN"
    assert not any(k.startswith("ssl_") for k in cfg)


def test_ssl_with_client_certificate() -> None:
    s = Settings(security_protocol="SSL", ssl_cafile="ca.pem", ssl_certfile="c.pem", ssl_keyfile="k.pem")
    cfg = s.kafka_client_config()
    assert cfg["ssl_certfile"] == "c.pem" and cfg["ssl_keyfile"] == "k.pem" and cfg["ssl_cafile"] == "ca.pem"
    assert cfg["ssl_check_hostname"] is True
    assert not any(k.startswith("sasl_") for k in cfg)


def test_security_options_reach_every_client_config() -> None:
    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="bob",
                 sasl_password="pw", ssl_cafile="/ca.pem")
    for cfg in (kafka_io.producer_config(s), kafka_io.consumer_config(s, "g"), kafka_io.admin_config(s)):
        assert cfg["security_protocol"] == "SASL_SSL"
        assert cfg["sasl_mechanism"] == "SCRAM-SHA-512"
        assert cfg["sasl_plain_username"] == "bob" and cfg["sasl_plain_password"] == "pw"
        assert cfg["ssl_cafile"] == "/ca.pem"


def test_producer_config() -> None:
    cfg = kafka_io.producer_config(Settings())
    assert cfg["acks"] == "all" and cfg["enable_idempotence"] is True
    assert cfg["linger_ms"] == 5
    assert cfg["max_request_size"] >= MAX_MESSAGE_BYTES + 1024
    assert cfg["compression_type"] is None
    assert cfg["allow_auto_create_topics"] is False
    assert kafka_io.producer_config(Settings(), linger_ms=0, acks=1)["linger_ms"] == 0  # overrides win
    unknown = set(cfg) - set(KafkaProducer.DEFAULT_CONFIG)
    assert not unknown, f"kafka-python would reject {unknown}"


def test_consumer_config() -> None:
    s = Settings(batch_max_size=17)
    cfg = kafka_io.consumer_config(s, "grp")
    assert cfg["group_id"] == "grp"
    assert cfg["enable_auto_commit"] is False
    assert cfg["auto_offset_reset"] == "earliest"
    assert cfg["max_partition_fetch_bytes"] >= MAX_MESSAGE_BYTES + 1024
    assert cfg["fetch_max_bytes"] >= cfg["max_partition_fetch_bytes"]
    assert cfg["max_poll_records"] == 17
    assert cfg["isolation_level"] == "read_uncommitted"
    assert kafka_io.consumer_config(s, "grp", max_poll_records=1)["max_poll_records"] == 1
    # fetch_max_bytes is never below the per-partition limit, even when overridden
    c2 = kafka_io.consumer_config(s, "g", fetch_max_bytes=1024)
    assert c2["fetch_max_bytes"] == c2["max_partition_fetch_bytes"]
    unknown = set(cfg) - set(KafkaConsumer.DEFAULT_CONFIG)
    assert not unknown, f"kafka-python would reject {unknown}"
    unknown = set(kafka_io.admin_config(s)) - set(KafkaAdminClient.DEFAULT_CONFIG)
    assert not unknown


def test_errors_are_translated_for_people() -> None:
    s = Settings(bootstrap_servers="10.0.0.1:9092", security_protocol="SASL_SSL",
                 sasl_mechanism="SCRAM-SHA-512", sasl_username="mallory")
    with pytest.raises(kafka_io.BrokerUnavailable, match=r"cannot reach Kafka at 10\.0\.0\.1:9092.*genre broker start"):
        with kafka_io.kafka_errors(s):
            raise KafkaTimeoutError("Unable to bootstrap from ['10.0.0.1:9092']")
    with pytest.raises(kafka_io.AuthenticationFailed, match=r"refused user 'mallory' with SCRAM-SHA-512"):
        with kafka_io.kafka_errors(s):
            raise SaslAuthenticationFailedError("Authentication failed during authentication due to invalid credentials")
    with pytest.raises(ValueError):  # anything else passes through unchanged
        with kafka_io.kafka_errors(s):
            raise ValueError("x")


def test_auth_failure_logged_during_bootstrap_is_reported_as_such() -> None:
    """kafka-python logs a SASL failure while bootstrapping and then only times out."""
    import logging

    s = Settings(security_protocol="SASL_SSL", sasl_username="eve")
    with pytest.raises(kafka_io.AuthenticationFailed, match="eve"):
        with kafka_io.kafka_errors(s):
            logging.getLogger("kafka.net.manager").error(
                "Connection failed: %s", SaslAuthenticationFailedError("Authentication failed: Invalid username or password"))
            raise KafkaTimeoutError("Unable to bootstrap from ['x:1']")


def _rec(topic: str, partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset)


def test_offsets_after() -> None:
    batch = {TopicPartition("a", 0): [_rec("a", 0, 4), _rec("a", 0, 5)], TopicPartition("a", 1): [_rec("a", 1, 0)]}
    assert kafka_io.offsets_after(batch) == {TopicPartition("a", 0): 6, TopicPartition("a", 1): 1}
    assert kafka_io.offsets_after([_rec("b", 2, 9), _rec("b", 2, 3)]) == {TopicPartition("b", 2): 10}


class FakeConsumer:
    def __init__(self) -> None:
        self.committed_with = None
        self.assigned = {TopicPartition("t", 0), TopicPartition("t", 1)}
        self.positions = {TopicPartition("t", 0): 3, TopicPartition("t", 1): 10}

    def commit(self, offsets=None):  # noqa: ANN001
        self.committed_with = offsets

    def assignment(self):  # noqa: ANN201
        return set(self.assigned)

    def end_offsets(self, tps, timeout_ms=None):  # noqa: ANN001, ANN201
        return {TopicPartition("t", 0): 8, TopicPartition("t", 1): 10}

    def position(self, tp, timeout_ms=None):  # noqa: ANN001, ANN201
        return self.positions[tp]


def test_commit_offsets_uses_offset_and_metadata() -> None:
    c = FakeConsumer()
    kafka_io.commit_offsets(c, {TopicPartition("t", 0): 7})  # type: ignore[arg-type]
    assert c.committed_with == {TopicPartition("t", 0): OffsetAndMetadata(7, "", -1)}
    c2 = FakeConsumer()
    kafka_io.commit_offsets(c2, {})  # type: ignore[arg-type]
    assert c2.committed_with is None


def test_consumer_lag_and_at_end() -> None:
    c = FakeConsumer()
    assert kafka_io.consumer_lag(c) == {TopicPartition("t", 0): 5, TopicPartition("t", 1): 0}  # type: ignore[arg-type]
    assert not kafka_io.at_end(c)  # type: ignore[arg-type]
    c.positions[TopicPartition("t", 0)] = 8
    assert kafka_io.at_end(c)  # type: ignore[arg-type]
