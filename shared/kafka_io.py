"""Thin wrappers over kafka-python 3.x shared by every service, the CLI and the tests.

- `make_producer` / `make_consumer` / `make_admin` build clients from `Settings`
  (connection and SASL/SSL options come from `Settings.kafka_client_config()`), with the
  project's delivery settings: acks=all + idempotence, no auto-commit, no topic
  auto-creation, and size limits that let a `MAX_MESSAGE_BYTES` message through.
- Connection problems at construction become `BrokerUnavailable`, refused credentials
  (SASL) or an untrusted certificate become `AuthenticationFailed`: both carry a message
  meant for a person.
- `commit_offsets` (waits) and `commit_offsets_async` (does not) commit explicit "next
  offset to read" positions after the produced results were acknowledged
  (at-least-once); `offsets_after` computes them from records.

Compression stays off: the large payloads (float32 audio, features) barely compress,
and it avoids a native codec dependency. Pass `compression_type=` to override.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import (
    AuthorizationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
)
from kafka.structs import OffsetAndMetadata

from shared import kafka_recv
from shared.schemas import MAX_MESSAGE_BYTES
from shared.settings import Settings

log = logging.getLogger(__name__)
kafka_recv.install()

RECORD_OVERHEAD_BYTES = 64 * 1024
"""Room for the record batch header, key and headers on top of a MAX_MESSAGE_BYTES value."""
MAX_RECORD_BYTES = MAX_MESSAGE_BYTES + RECORD_OVERHEAD_BYTES
"""Producer max_request_size, consumer max_partition_fetch_bytes and the large topics'
max.message.bytes (shared/topics.py) all use this one figure: 3 MiB + 64 KiB (it was
4 MiB + 64 KiB while chunks were float32 only). Why not lower: during a rolling upgrade
chunkers not yet upgraded still write v1 float32 chunks (2.65 MB) and the chunk topic
keeps them for its retention, so the topic must accept and every consumer must fetch
them; v2 chunks (median 1.4 MB, at most ~2.0 MB) and spec-v2 features (~0.85 MB) fit
with room. Once no v1 writer is left, the chunk topic could go down to 2 MiB + 64 KiB."""
DEFAULT_SEND_TIMEOUT_S = 60.0

__all__ = [
    "AuthenticationFailed", "BrokerUnavailable", "DeliveryFailed", "KafkaIOError",
    "MAX_RECORD_BYTES", "TopicPartition", "admin_config", "at_end", "commit_offsets", "commit_offsets_async",
    "consumer_config",
    "consumer_lag", "flush_or_raise", "kafka_errors", "make_admin", "make_consumer",
    "make_producer", "make_reader", "offsets_after", "send", "producer_config", "send_and_wait", "wait_for_broker",
]


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class KafkaIOError(RuntimeError):
    """Base of the errors this module raises for a person to read."""


class BrokerUnavailable(KafkaIOError):
    """No broker answered at the configured bootstrap address."""


class AuthenticationFailed(KafkaIOError):
    """The broker refused our credentials (SASL) or the TLS handshake failed."""


class DeliveryFailed(KafkaIOError):
    """A produced record was not acknowledged."""


def _unreachable_message(settings: Settings, detail: str = "") -> str:
    msg = (f"cannot reach Kafka at {settings.bootstrap_servers} ({settings.security_protocol}): "
           f"is it running? start one with `genre broker start`")
    return f"{msg} [{detail}]" if detail else msg


def _auth_message(settings: Settings, exc: BaseException) -> str:
    who = f"user {settings.sasl_username!r} with {settings.sasl_mechanism or 'PLAIN'}" \
        if settings.security_protocol.startswith("SASL") else "this client"
    return (f"Kafka at {settings.bootstrap_servers} refused {who} ({settings.security_protocol}): {exc}. "
            f"Check GENRE_KAFKA_SASL_USERNAME/GENRE_KAFKA_SASL_PASSWORD/GENRE_KAFKA_SASL_MECHANISM "
            f"and GENRE_KAFKA_SSL_CAFILE")


def _is_auth_error(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (SaslAuthenticationFailedError, ssl.SSLCertVerificationError)):
            return True
        text = str(exc)
        if "Authentication failed" in text or "CERTIFICATE_VERIFY_FAILED" in text or "SaslAuthenticationFailed" in text:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


class _AuthFailureSpy(logging.Handler):
    """kafka-python logs (but does not raise) an authentication failure while it
    bootstraps, then times out. This handler, attached only while a client is being
    built, remembers the failure so the timeout can be reported as what it was."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failure: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failure is not None:
            return
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001
            return
        if "Authentication failed" in text or "SaslAuthenticationFailed" in text or "CERTIFICATE_VERIFY_FAILED" in text:
            self.failure = text


@contextlib.contextmanager
def kafka_errors(settings: Settings) -> Iterator[None]:
    """Translate kafka-python's connection and authentication failures into
    `BrokerUnavailable` / `AuthenticationFailed` (other Kafka errors pass through)."""
    spy = _AuthFailureSpy()
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(spy)
    try:
        yield
    except (KafkaIOError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if _is_auth_error(exc):
            raise AuthenticationFailed(_auth_message(settings, exc)) from exc
        if spy.failure is not None and isinstance(exc, (KafkaTimeoutError, KafkaConnectionError, AuthorizationError)):
            raise AuthenticationFailed(_auth_message(settings, spy.failure)) from exc
        if isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc).lower():
            raise BrokerUnavailable(_unreachable_message(settings, str(exc))) from exc
        if isinstance(exc, (KafkaConnectionError, ConnectionError)):
            raise BrokerUnavailable(_unreachable_message(settings, f"{type(exc).__name__}: {exc}")) from exc
        raise
    finally:
        kafka_logger.removeHandler(spy)


# --------------------------------------------------------------------------------------
# Client configuration
# --------------------------------------------------------------------------------------


BOOTSTRAP_TIMEOUT_MS = 30_000
"""How long a client keeps trying to reach a bootstrap server before giving up."""
FETCH_MAX_WAIT_MS = 25
"""Consumer fetch_max_wait_ms: how long the broker holds a fetch that finds no data. A
record produced meanwhile did not always end the wait early here (kafka-python 3.0 and a
one-broker KRaft cluster): with 100 ms, 2-5 % of the chunks under light load reached the
classifier 60-100 ms late (CreateTime to poll), and the classifier's p99 added latency was
100-160 ms against a budget of ~76; with 20 ms their arrival p99 was 13 ms, and with 25
the p99 latency was 66-70 ms in 6 runs (`bench/classifier.py`). The broker also answers one request per
connection at a time, so a commit or ListOffsets waits behind an idle fetch for up to
this long. The price: an idle consumer sends ~40 empty fetches a second."""
FETCH_MAX_BYTES = 16 * 1024 * 1024
"""Consumer fetch_max_bytes: at most this much per fetch response (the broker still sends
one oversized record batch whole). Below glibc's 32 MiB mmap ceiling, so kafka-python's
receive buffers are reused from the heap instead of being mapped and page-faulted afresh
(with shared.malloc_tuning); kafka-python's 50 MB default cost the classifier 10-20 %
(`bench/classifier.py`, 5 alternating runs each: 910-1,290 chunks/s, mean 1,076, against
1,120-1,360, mean 1,248, with 16 MiB; 24 MiB in between)."""


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(settings.kafka_client_config())
    cfg.update(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=64 * 1024,
        max_request_size=MAX_RECORD_BYTES,
        compression_type=None,
        allow_auto_create_topics=False,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        client_id="genre-producer",
    )
    cfg.update(overrides)
    return cfg


def consumer_config(settings: Settings, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(settings.kafka_client_config())
    cfg.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=MAX_RECORD_BYTES,
        fetch_max_bytes=FETCH_MAX_BYTES,
        isolation_level="read_uncommitted",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_poll_records=settings.batch_max_size,
        allow_auto_create_topics=False,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        client_id=f"genre-{group_id}" if group_id else "genre-consumer",
    )
    cfg.update(overrides)
    if cfg["fetch_max_bytes"] < cfg["max_partition_fetch_bytes"]:
        cfg["fetch_max_bytes"] = cfg["max_partition_fetch_bytes"]
    return cfg


def admin_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(settings.kafka_client_config())
    cfg.update(bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS, client_id="genre-admin")
    cfg.update(overrides)
    return cfg


PREFLIGHT_ATTEMPT_S = 2.0


def _preflight(settings: Settings, timeout_s: float) -> None:
    """Connect once with a short-lived admin client, in short attempts, until it works.

    Why: kafka-python 3.0 only logs a refused SASL login while it bootstraps and keeps
    retrying until its bootstrap timeout; worse, when the broker's error response and
    its close of the connection arrive in the same read, the transport drops the
    response and reports "socket disconnected". Short attempts watched by
    `kafka_errors` turn bad credentials into `AuthenticationFailed` within seconds
    instead of a misleading `BrokerUnavailable` after the full timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        attempt_ms = int(1000 * min(PREFLIGHT_ATTEMPT_S, max(0.5, deadline - time.monotonic())))
        try:
            with kafka_errors(settings):
                admin = KafkaAdminClient(**admin_config(settings, bootstrap_timeout_ms=attempt_ms,
                                                        request_timeout_ms=max(attempt_ms, 5000)))
                admin.close()
            return
        except BrokerUnavailable:
            if time.monotonic() >= deadline:
                raise


def _needs_preflight(settings: Settings) -> bool:
    return settings.security_protocol.upper().startswith("SASL")


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """An idempotent acks=all producer able to send MAX_MESSAGE_BYTES values.

    Keys and values are bytes (no serializers): encode keys with `.encode()`."""
    cfg = producer_config(settings, **overrides)
    if _needs_preflight(settings):
        _preflight(settings, cfg["bootstrap_timeout_ms"] / 1000)
    with kafka_errors(settings):
        return KafkaProducer(**cfg)


def make_consumer(settings: Settings, group_id: str | None, topics: Sequence[str] = (), **overrides: Any) -> KafkaConsumer:
    """A consumer in `group_id` subscribed to `topics` (none: assign partitions yourself).

    Auto-commit is off: commit with `commit_offsets` after the outputs are acknowledged.
    `max_poll_records` defaults to `settings.batch_max_size`; override it per service."""
    cfg = consumer_config(settings, group_id, **overrides)
    if _needs_preflight(settings):
        _preflight(settings, cfg["bootstrap_timeout_ms"] / 1000)
    with kafka_errors(settings):
        consumer = KafkaConsumer(**cfg)
        if topics:
            consumer.subscribe(list(topics))
        return consumer


def make_reader(settings: Settings, topic: str, *, from_beginning: bool = True,
                timeout: float = 15.0, **overrides: Any) -> KafkaConsumer:
    """A group-less consumer assigned every partition of `topic` (for reading results
    and for tests): nothing is committed, and it starts at the beginning (or the end).

    Raises `KafkaIOError` if the topic does not exist."""
    cfg = consumer_config(settings, None, **{"client_id": "genre-reader", **overrides})
    if _needs_preflight(settings):
        _preflight(settings, cfg["bootstrap_timeout_ms"] / 1000)
    with kafka_errors(settings):
        consumer = KafkaConsumer(**cfg)
        try:
            deadline = time.monotonic() + timeout
            parts = consumer.partitions_for_topic(topic)
            while not parts and time.monotonic() < deadline:
                time.sleep(0.1)
                parts = consumer.partitions_for_topic(topic)
            if not parts:
                raise KafkaIOError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}: "
                                   f"create the topics with `genre topics create`")
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            if from_beginning:
                consumer.seek_to_beginning(*tps)
            else:
                consumer.seek_to_end(*tps)
        except BaseException:
            consumer.close()
            raise
        return consumer


def make_admin(settings: Settings, **overrides: Any) -> KafkaAdminClient:
    cfg = admin_config(settings, **overrides)
    if _needs_preflight(settings):
        _preflight(settings, cfg["bootstrap_timeout_ms"] / 1000)
    with kafka_errors(settings):
        return KafkaAdminClient(**cfg)


def _tcp_reachable(bootstrap_servers: str, timeout: float = 1.0) -> bool:
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]") or "localhost"
        try:
            with socket.create_connection((host, int(port or 9092)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def wait_for_broker(settings: Settings, timeout: float = 30.0) -> None:
    """Return once a broker answers a metadata request; else raise `BrokerUnavailable`
    (or `AuthenticationFailed` when it answers but refuses the credentials).

    Waits quietly for a TCP connection first, so an absent broker does not fill the
    log with kafka-python's reconnect messages."""
    deadline = time.monotonic() + timeout
    while not _tcp_reachable(settings.bootstrap_servers):
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(_unreachable_message(settings, f"no TCP connection in {timeout:.0f} s"))
        time.sleep(0.25)
    _preflight(settings, max(1.0, deadline - time.monotonic()))


# --------------------------------------------------------------------------------------
# Producing
# --------------------------------------------------------------------------------------


def _headers(headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None) -> list[tuple[str, bytes]] | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v.encode("utf-8") if isinstance(v, str) else bytes(v)) for k, v in items]


def send(producer: KafkaProducer, topic: str, key: str | bytes | None, value: bytes,
         headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None) -> Any:
    """Send without waiting; returns kafka-python's future (see `flush_or_raise`)."""
    k = key.encode("utf-8") if isinstance(key, str) else key
    return producer.send(topic, key=k, value=value, headers=_headers(headers))


def send_and_wait(producer: KafkaProducer, topic: str, key: str | bytes | None, value: bytes,
                  headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None,
                  timeout: float = DEFAULT_SEND_TIMEOUT_S) -> Any:
    """Send one record and wait for the broker's acknowledgement; returns its
    RecordMetadata (topic, partition, offset). Raises `DeliveryFailed`."""
    try:
        future = send(producer, topic, key, value, headers)
        return future.get(timeout=timeout)
    except KafkaIOError:
        raise
    except KafkaError as exc:
        if _is_auth_error(exc):
            raise AuthenticationFailed(str(exc)) from exc
        raise DeliveryFailed(f"record for {topic} (key {key!r}, {len(value)} bytes) not acknowledged: "
                             f"{type(exc).__name__}: {exc}") from exc


def flush_or_raise(producer: KafkaProducer, futures: Iterable[Any] = (),
                   timeout: float = DEFAULT_SEND_TIMEOUT_S) -> list[Any]:
    """Flush and check that every future succeeded; returns their RecordMetadata.

    Raises `DeliveryFailed` naming the first failure (then do not commit)."""
    futures = list(futures)
    try:
        producer.flush(timeout=timeout)
    except KafkaTimeoutError as exc:
        raise DeliveryFailed(f"producer flush did not finish in {timeout:.0f} s: {exc}") from exc
    results = []
    deadline = time.monotonic() + timeout
    for f in futures:
        try:
            results.append(f.get(timeout=max(0.1, deadline - time.monotonic())))
        except KafkaError as exc:
            if _is_auth_error(exc):
                raise AuthenticationFailed(str(exc)) from exc
            raise DeliveryFailed(f"a produced record was not acknowledged: {type(exc).__name__}: {exc}") from exc
    return results


# --------------------------------------------------------------------------------------
# Consuming
# --------------------------------------------------------------------------------------


def offsets_after(records: Mapping[TopicPartition, Sequence[Any]] | Iterable[Any]) -> dict[TopicPartition, int]:
    """The offsets to commit after processing `records` (a poll() result or an iterable
    of ConsumerRecords): the highest offset + 1 per partition."""
    out: dict[TopicPartition, int] = {}
    if isinstance(records, Mapping):
        it: Iterable[Any] = (r for recs in records.values() for r in recs)
    else:
        it = records
    for r in it:
        tp = TopicPartition(r.topic, r.partition)
        out[tp] = max(out.get(tp, 0), r.offset + 1)
    return out


def commit_offsets(consumer: KafkaConsumer, offsets: Mapping[TopicPartition, int]) -> None:
    """Synchronously commit `offsets` (the NEXT offset to read per partition, i.e. last
    processed + 1). Does nothing for an empty mapping.

    kafka-python 3 takes ``{TopicPartition: OffsetAndMetadata(offset, metadata,
    leader_epoch)}``; the leader epoch is -1 (unknown). Raises kafka's CommitFailedError
    if the group rebalanced meanwhile: the records will be delivered again (at-least-once).
    """
    if not offsets:
        return
    consumer.commit(offsets=_offset_payload(offsets))


def commit_offsets_async(consumer: KafkaConsumer, offsets: Mapping[TopicPartition, int],
                         on_failure: Callable[[Mapping[TopicPartition, int], Exception], None]) -> None:
    """Send a commit of `offsets` without waiting for it (see commit_offsets).

    A synchronous commit waits its turn behind the consumer's long-polling fetch on the
    same broker connection (up to fetch_max_wait_ms), and the thread that commits also
    polls: every chunk in flight waited with it. A failed commit is only passed to
    `on_failure` (from kafka-python's I/O thread): the records are then delivered again
    unless a later commit covers them (at-least-once either way)."""
    if not offsets:
        return
    sent = dict(offsets)

    def done(_offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            on_failure(sent, response)

    consumer.commit_async(offsets=_offset_payload(offsets), callback=done)


def _offset_payload(offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(int(off), "", -1) for tp, off in offsets.items()}


def at_end(consumer: KafkaConsumer) -> bool:
    """True when the consumer's position is at the end of every assigned partition
    (nothing more to read right now)."""
    assigned = list(consumer.assignment())
    if not assigned:
        return True
    ends = consumer.end_offsets(assigned)
    for tp in assigned:
        end = ends.get(tp)
        if end is not None and consumer.position(tp, timeout_ms=5000) < end:
            return False
    return True


def consumer_lag(consumer: KafkaConsumer, *, timeout_ms: int = 5000,
                 probe_topic: str | None = None) -> dict[TopicPartition, int]:
    """Records not yet consumed per assigned partition (end offset - position).

    Every call is a broker round trip that raises (KafkaTimeoutError) when the broker does
    not answer within `timeout_ms`; with nothing assigned yet, the end offset of
    `probe_topic`'s partition 0 is asked instead, so the services' liveness check holds."""
    assigned = list(consumer.assignment())
    if not assigned:
        if probe_topic:
            consumer.end_offsets([TopicPartition(probe_topic, 0)], timeout_ms=timeout_ms)
        return {}
    ends = consumer.end_offsets(assigned, timeout_ms=timeout_ms)
    lag: dict[TopicPartition, int] = {}
    for tp in assigned:
        try:
            pos = consumer.position(tp, timeout_ms=timeout_ms)
        except KafkaError:
            continue
        if pos is None or ends.get(tp) is None:
            continue
        lag[tp] = max(0, int(ends[tp]) - int(pos))
    return lag
