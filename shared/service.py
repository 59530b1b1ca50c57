"""The loop every streaming service runs: consume, call a stage, produce, commit, count.

Delivery is at-least-once: offsets are committed only after every message produced for
the consumed records has been acknowledged by the broker (acks=all, idempotent
producer). A crash anywhere before the commit replays those records; downstream stages
are idempotent per song id, so a replay never yields a second, different verdict.

A service may consume several topics in its one group, each with its own record decoder
(`StreamService(..., extra_inputs={topic: decoder})`: the chunker reads the songs topic's
msgpack claim checks and the audio topic's raw files, whose decoder reads the value,
headers and key). A record that does not decode goes to the dead-letter topic with the
reason and is committed; it never stops the consumer.

Broker loss. kafka-python reconnects by itself, quietly, so two things watch for it:
`ConnectionWatch` sees kafka-python's own connection failures (refused or dropped
connections) the moment they happen, and a health check (end offsets, every
HEALTH_INTERVAL_S, HEALTH_TIMEOUT_MS at most) notices a broker that stays away. Either
way the loop logs "lost the connection to Kafka" and counts it once per outage
(genre_kafka_reconnects_total; genre_errors_total{kind="kafka"} per failed attempt).
A failed health check, send or commit closes both clients without waiting for
unsendable records, backs off exponentially (BACKOFF_START_S doubling to BACKOFF_MAX_S)
and builds new ones, which resume from the last committed offsets. The first health
check that succeeds afterwards logs "reconnected to Kafka ... after N s". Refused
credentials are not retried: `AuthenticationFailed` ends the service (exit status 3 in
the services).

Memory stays bounded for long songs: kafka-python 3 has no producer buffer limit, so the
loop waits for acknowledgements whenever FLUSH_BYTES of output are outstanding.

SIGTERM/SIGINT: the record in hand is finished if it needs only its current output,
otherwise handed back (not committed: the next owner redoes it from the start; a
chunker stops mid-song within one chunk); everything acknowledged is committed and both
clients are closed, then the process exits 0.
"""

from __future__ import annotations

import gc
import logging
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, Protocol, TypeVar

from kafka.errors import CommitFailedError, KafkaError

from shared import kafka_io
from shared.malloc_tuning import reuse_large_buffers
from shared.metrics import ServiceMetrics
from shared.schemas import DeadLetter, Message, SchemaError, decode, now
from shared.settings import Settings

logger = logging.getLogger(__name__)

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 15.0
PAYLOAD_HEAD_BYTES = 256
FLUSH_BYTES = 16 * 1024 * 1024
"""Outstanding produced bytes after which the loop waits for acknowledgements."""
ACK_TIMEOUT_S = 30.0
HEALTH_INTERVAL_S = 5.0
"""How often the loop asks the broker for end offsets (lag metrics and liveness)."""
HEALTH_TIMEOUT_MS = 5000
RECONNECT_BOOTSTRAP_TIMEOUT_MS = 10_000
"""Each (re)connection attempt gives up after this, then backs off: a SIGTERM while the
broker is away is honoured within about this long."""
CLIENT_RECONNECT_BACKOFF_MAX_MS = 2000
"""kafka-python's own reconnect backoff tops out at 30 s by default, which would leave a
service idle for up to 30 s after the broker came back."""
CLOSE_TIMEOUT_S = 5.0
READY_LOG = re.compile(r"\S+ consuming .+ as group \S+")
"""The line a service logs once it consumes (imports, model and clients ready): what
supervising tests and benches wait for in its log."""

In = TypeVar("In")
"""What a service's handler takes: a decoded Message, or a decoder's own type."""


@dataclass(frozen=True)
class Output:
    topic: str
    key: str
    message: Message
    version: int | None = None  # the schema version to write (None: the type's own)


class StopFlag:
    """Set by SIGTERM/SIGINT; loops check it between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        logger.info("received %s: finishing in-flight work, committing, closing", signal.Signals(signum).name)
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


def dead_letter(service: str, record: object, reason: str) -> DeadLetter:
    value = getattr(record, "value", None) or b""
    key = getattr(record, "key", None) or b""
    return DeadLetter(
        service=service,
        topic=str(getattr(record, "topic", "")),
        partition=int(getattr(record, "partition", -1)),
        offset=int(getattr(record, "offset", -1)),
        reason=reason,
        key=key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key),
        payload_head=bytes(value[:PAYLOAD_HEAD_BYTES]),
        at=now(),
    )


def dead_letter_output(service: str, settings: Settings, metrics: ServiceMetrics, record: object,
                       reason: str) -> Output:
    """Log and count a record that cannot be processed, and address its dead letter."""
    logger.warning("dead-lettering %s[%s]@%s: %s", getattr(record, "topic", "?"),
                   getattr(record, "partition", "?"), getattr(record, "offset", "?"), reason)
    metrics.deadletters.labels(service, str(getattr(record, "topic", ""))).inc()
    dl = dead_letter(service, record, reason)
    return Output(settings.topic_deadletter, dl.key or f"{dl.topic}-{dl.partition}-{dl.offset}", dl)


def session_overrides(settings: Settings) -> dict[str, int]:
    return {
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(1000, settings.session_timeout_ms // 3),
        "reconnect_backoff_max_ms": CLIENT_RECONNECT_BACKOFF_MAX_MS,
    }


class HandedBack(Exception):
    """Raised inside `_process` when a stop request interrupts a record mid-way."""


def close_quietly(client: object, *, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close a consumer or producer without waiting on a broker that may be gone."""
    try:
        if hasattr(client, "subscription"):  # a KafkaConsumer
            client.close(autocommit=False, timeout_ms=int(timeout_s * 1000))  # type: ignore[attr-defined]
        else:
            client.close(timeout=timeout_s)  # type: ignore[attr-defined]
    except Exception:  # closing a client whose broker vanished can raise anything
        logger.debug("error while closing a Kafka client", exc_info=True)


class KafkaNoiseFilter(logging.Filter):
    """Lets each distinct kafka-python message through once per `window_s` per logger.

    While the broker is away kafka-python logs every failed reconnect (several lines a
    second); the service's own "lost the connection" / "reconnected" lines say what
    matters. Installed on the root handlers, not on the "kafka" logger, so code that
    watches kafka-python's records (kafka_io's authentication spy) still sees them all."""

    def __init__(self, window_s: float = 30.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kafka") or record.levelno >= logging.CRITICAL:
            return True
        key = (record.name, record.msg)
        t = time.monotonic()
        if t - self._last.get(key, -1e9) < self.window_s:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = t
        return True


class ConnectionWatch(logging.Handler):
    """Calls `on_failure(text)` whenever kafka-python reports a refused or dropped broker
    connection, from whichever thread logs it (its I/O can block the service's loop for
    the whole outage, so the loss is reported when it happens, not when the loop resumes).

    Attached to the "kafka" logger while a session runs. kafka-python recovers from a
    short outage inside its own retry loops without raising anything, so without this a
    broker restart could pass unnoticed (and uncounted) by the service."""

    SIGNS = ("ECONNREFUSED", "Connection refused", "socket disconnected", "Connection lost")

    def __init__(self, on_failure: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.on_failure = on_failure

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if any(sign in text for sign in self.SIGNS):
                self.on_failure(text[:200])
        except Exception:  # noqa: BLE001 - a log handler must never raise
            pass


class KafkaLink:
    """The reconnect policy every service shares: run sessions until stopped; an outage is
    logged and counted once, then new clients come after exponential backoff."""

    def __init__(self, name: str, settings: Settings, metrics: ServiceMetrics, stop: StopFlag) -> None:
        self.name = name
        self.settings = settings
        self.metrics = metrics
        self.stop = stop
        self.lost_since: float | None = None
        self._backoff = BACKOFF_START_S
        self._attempt = 0

    def client_overrides(self) -> dict[str, int]:
        """While reconnecting, clients give up on the bootstrap servers sooner."""
        return {"bootstrap_timeout_ms": RECONNECT_BOOTSTRAP_TIMEOUT_MS} if self.lost_since is not None else {}

    def run_forever(self, session: Callable[[], None]) -> None:
        """Raises `kafka_io.AuthenticationFailed` (credentials are not retried)."""
        while not self.stop.is_set():
            try:
                session()
            except kafka_io.AuthenticationFailed:
                raise
            except (KafkaError, kafka_io.KafkaIOError, OSError) as exc:
                self._attempt += 1
                attempt, backoff = self._attempt, self._backoff
                self.metrics.errors.labels(self.name, "kafka").inc()
                if self.lost_since is None:
                    self.lost_since = time.monotonic()
                    self.metrics.reconnects.labels(self.name).inc()
                    logger.warning("%s lost the connection to Kafka at %s (%s: %s); reconnecting in %.1f s "
                                   "from the committed offsets", self.name, self.settings.bootstrap_servers,
                                   type(exc).__name__, exc, backoff)
                else:
                    logger.warning("%s: Kafka still unavailable (attempt %d, %s: %s); new clients in %.1f s",
                                   self.name, attempt, type(exc).__name__, exc, backoff)
                if self.stop.wait(backoff):
                    break
                self._backoff = min(backoff * 2, BACKOFF_MAX_S)
        logger.info("%s stopped", self.name)

    def connected(self, round_trip_started: float | None = None) -> None:
        """A broker round trip (that began at `round_trip_started`) succeeded."""
        if self.lost_since is None:
            return
        if round_trip_started is not None and round_trip_started < self.lost_since:
            return
        logger.warning("%s reconnected to Kafka at %s after %.1f s", self.name,
                       self.settings.bootstrap_servers, time.monotonic() - self.lost_since)
        self.lost_since = None
        self._backoff, self._attempt = BACKOFF_START_S, 0

    def connection_failed(self, detail: str) -> None:
        """ConnectionWatch's callback: the first failure of an outage is logged and counted."""
        if self.lost_since is not None:
            return
        self.lost_since = time.monotonic()
        self.metrics.reconnects.labels(self.name).inc()
        self.metrics.errors.labels(self.name, "kafka").inc()
        logger.warning("%s lost the connection to Kafka at %s (kafka-python: %s); reconnecting with backoff",
                       self.name, self.settings.bootstrap_servers, detail)

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Report kafka-python's own connection failures while a session runs."""
        watch = ConnectionWatch(self.connection_failed)
        kafka_logger = logging.getLogger("kafka")
        kafka_logger.addHandler(watch)
        try:
            yield
        finally:
            kafka_logger.removeHandler(watch)


RecordDecoder = Callable[[Any], In]
"""Turns a consumed record (kafka-python's ConsumerRecord: value, key, headers, ...) into
the handler's input; raises SchemaError with the reason for a record it cannot take
(the record then becomes a dead letter)."""


def message_decoder(in_type: type[In]) -> RecordDecoder[In]:
    """The decoder of a topic that carries our msgpack messages of type `in_type`."""

    def decode_record(rec: Any) -> In:
        return decode(rec.value, in_type)  # type: ignore[type-var, return-value]

    return decode_record


class StreamService(Generic[In]):
    """Consumes `in_topic` records of type `in_type`, maps each through `handle`.

    `extra_inputs` adds topics read by the same consumer group, each with its own record
    decoder (the chunker reads the songs topic's claim checks and the audio topic's raw
    files); `handle` gets whatever the record's decoder returned. A record whose topic is
    not among the inputs is decoded as `in_type`."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        group_id: str,
        in_topic: str,
        in_type: type[In],
        handle: Callable[[In], Iterable[Output]],
        *,
        extra_inputs: Mapping[str, RecordDecoder[In]] | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        max_poll_records: int = 10,
        max_poll_interval_ms: int = 300_000,
        metrics: ServiceMetrics | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.group_id = group_id
        self.in_topic = in_topic
        self.handle = handle
        self._default_decoder: RecordDecoder[In] = message_decoder(in_type)
        self.decoders: dict[str, RecordDecoder[In]] = {in_topic: self._default_decoder, **(extra_inputs or {})}
        """topic -> record decoder, for every topic the service consumes."""
        self.consumer_overrides = dict(consumer_overrides or {})
        """Extra kafka-python consumer options (e.g. a larger max_partition_fetch_bytes)."""
        self.max_poll_records = max_poll_records
        self.max_poll_interval_ms = max_poll_interval_ms
        self.metrics = metrics or ServiceMetrics(name)
        self.stop = stop or StopFlag()
        self.link = KafkaLink(name, settings, self.metrics, self.stop)

    @property
    def topics(self) -> list[str]:
        """Every topic the service consumes, `in_topic` first."""
        return list(self.decoders)

    # -- lifecycle --------------------------------------------------------------------
    def run_forever(self) -> None:
        """Consume until stopped; reconnect with backoff whenever the broker goes away."""
        self.link.run_forever(self._run_session)

    def _run_session(self) -> None:
        boot = self.link.client_overrides()
        consumer = kafka_io.make_consumer(
            self.settings, self.group_id, self.topics,
            max_poll_records=self.max_poll_records, max_poll_interval_ms=self.max_poll_interval_ms,
            **session_overrides(self.settings), **self.consumer_overrides, **boot,
        )
        try:
            producer = kafka_io.make_producer(
                self.settings, reconnect_backoff_max_ms=CLIENT_RECONNECT_BACKOFF_MAX_MS, **boot)
        except BaseException:
            close_quietly(consumer)
            raise
        logger.info("%s consuming %s as group %s", self.name, ", ".join(self.topics), self.group_id)
        healthy_at = 0.0
        try:
            with self.link.watching():
                while not self.stop.is_set():
                    batch = consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
                    if batch:
                        try:
                            self._process(batch, consumer, producer)
                        except CommitFailedError as exc:
                            # The group rebalanced while we worked: our outputs are out, the
                            # records go to their new owner again (at-least-once, idempotent).
                            logger.warning("%s: commit refused after a rebalance (%s); those records will be "
                                           "processed again", self.name, exc)
                            self.metrics.errors.labels(self.name, "commit").inc()
                    interval = HEALTH_INTERVAL_S if self.link.lost_since is None else 1.0
                    if time.monotonic() - healthy_at >= interval:
                        started = time.monotonic()
                        self._update_lag(consumer)  # raises KafkaTimeoutError when the broker is gone
                        healthy_at = time.monotonic()
                        self.link.connected(started)
        except HandedBack:
            pass
        finally:
            close_quietly(consumer)
            close_quietly(producer)

    # -- one poll's worth of records --------------------------------------------------
    def _process(self, batch: dict, consumer: object, producer: object) -> None:
        """Produce every record's outputs, wait for their acknowledgement, commit.

        On a stop request the record in hand is abandoned (not committed) unless it is
        done; records not yet started are left for the next owner."""
        futures: list = []
        offsets: dict = {}
        outstanding = 0
        handed_back = False
        for tp, records in batch.items():
            for rec in records:
                if self.stop.is_set():
                    handed_back = True
                    break
                self.metrics.messages_in.labels(self.name, tp.topic).inc()
                outputs = iter(self._outputs_for(rec))
                done = True
                try:
                    out = next(outputs, None)
                    while out is not None:
                        value = out.message.encode(out.version)
                        futures.append(producer.send(out.topic, key=out.key.encode("utf-8"), value=value))  # type: ignore[attr-defined]
                        self.metrics.messages_out.labels(self.name, out.topic).inc()
                        outstanding += len(value)
                        if outstanding >= FLUSH_BYTES:
                            self._await(producer, futures)
                            futures, outstanding = [], 0
                        out = next(outputs, None)
                        if out is not None and self.stop.is_set():
                            done = False  # more to come (a long song): hand the record back
                            break
                finally:
                    close = getattr(outputs, "close", None)
                    if close is not None:
                        close()  # stops an abandoned song's decoder (kills ffmpeg)
                if not done:
                    # Its outputs so far are sent; the next owner redoes it from the start and
                    # downstream stages take the repeated chunks as replays (idempotent).
                    logger.info("%s: stop requested; handing back %s[%d]@%d", self.name, tp.topic,
                                tp.partition, rec.offset)
                    handed_back = True
                    break
                offsets[tp] = rec.offset + 1
            if handed_back:
                break
        self._await(producer, futures)
        kafka_io.commit_offsets(consumer, offsets)
        if handed_back:
            raise HandedBack()

    @staticmethod
    def _await(producer: object, futures: list) -> None:
        """Block until every produced record is acknowledged; raise if any failed."""
        producer.flush(timeout=ACK_TIMEOUT_S)  # type: ignore[attr-defined]
        deadline = time.monotonic() + ACK_TIMEOUT_S
        for f in futures:
            f.get(timeout=max(0.1, deadline - time.monotonic()))  # raises: then nothing is committed

    def _outputs_for(self, rec: object) -> Iterable[Output]:
        try:
            msg = self.decoders.get(rec.topic, self._default_decoder)(rec)  # type: ignore[attr-defined]
        except SchemaError as exc:
            yield self._dead_letter(rec, str(exc))
            return
        started = time.perf_counter()
        try:
            yield from self.handle(msg)
        except (KafkaError, kafka_io.BrokerUnavailable):
            raise
        except Exception as exc:  # a bug or hostile input in one record must not stop the service
            logger.exception("%s failed on %s", self.name, getattr(msg, "song_id", "?"))
            self.metrics.errors.labels(self.name, "handler").inc()
            yield self._dead_letter(rec, f"{type(exc).__name__}: {exc}")
        finally:
            self.metrics.processing_seconds.labels(self.name, self.name).observe(time.perf_counter() - started)

    def _dead_letter(self, rec: object, reason: str) -> Output:
        return dead_letter_output(self.name, self.settings, self.metrics, rec, reason)

    def _update_lag(self, consumer: object) -> None:
        """Export the lag; a broker that does not answer within HEALTH_TIMEOUT_MS raises."""
        lags = kafka_io.consumer_lag(consumer, timeout_ms=HEALTH_TIMEOUT_MS, probe_topic=self.in_topic)  # type: ignore[arg-type]
        for tp, lag in lags.items():
            self.metrics.consumer_lag.labels(self.name, self.group_id, tp.topic, str(tp.partition)).set(lag)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    noise = KafkaNoiseFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(noise)


class StartupError(Exception):
    """A service cannot start as configured (bad model, missing backend): exit status 2."""


class ServiceFailed(RuntimeError):
    """The service stopped on an internal failure: exit status 1, the supervisor restarts it."""


class Runnable(Protocol):
    def run_forever(self) -> None: ...


def run_service(name: str, build: Callable[[Settings, ServiceMetrics, StopFlag], Runnable]) -> int:
    """The life of a service process, and its exit status.

    SIGTERM is handled from the first moment, so a stop during a slow start (TensorFlow's
    import) still exits 0; refused Kafka credentials exit 3 with a clear message."""
    reuse_large_buffers()  # before TensorFlow and the Kafka clients allocate anything
    stop = StopFlag()
    stop.install()
    settings = Settings.from_env()
    configure_logging(settings)
    metrics = ServiceMetrics(name)
    metrics.serve(settings.metrics_port)
    try:
        service = build(settings, metrics, stop)
    except StartupError as exc:
        logger.error("%s cannot start: %s", name, exc)
        return 2
    # Everything imported and loaded so far (TensorFlow and the model: ~370,000 objects)
    # lives as long as the process: keep it out of the cyclic GC, whose full collections
    # would otherwise walk it all (~190 ms, a stall of every chunk in flight).
    gc.freeze()
    if stop.is_set():
        return 0
    try:
        service.run_forever()
    except kafka_io.AuthenticationFailed as exc:
        logger.error("authentication with Kafka failed, exiting with status 3: %s", exc)
        return 3
    except ServiceFailed as exc:
        logger.error("%s; exiting so the supervisor restarts the service from the committed offsets", exc)
        return 1
    return 0
