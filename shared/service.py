"""The loop every streaming service runs: consume, call a stage, produce, commit, count.

Delivery is at-least-once: offsets are committed only after every message produced for
the consumed records has been acknowledged by the broker (acks=all, idempotent
producer). A crash anywhere before the commit replays those records; downstream stages
are idempotent per song id, so a replay never yields a second, different verdict.

A record that does not decode goes to the dead-letter topic with the reason and is
committed; it never stops the consumer. A lost broker connection closes both clients,
backs off exponentially and starts again from the last committed offsets.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, TypeVar

from kafka.errors import KafkaError

from shared import kafka_io
from shared.metrics import ServiceMetrics
from shared.schemas import DeadLetter, Message, SchemaError, decode, now
from shared.settings import Settings

logger = logging.getLogger(__name__)

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 15.0
PAYLOAD_HEAD_BYTES = 256

In = TypeVar("In", bound=Message)


@dataclass(frozen=True)
class Output:
    topic: str
    key: str
    message: Message


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


def session_overrides(settings: Settings) -> dict[str, int]:
    return {
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(1000, settings.session_timeout_ms // 3),
    }


class StreamService(Generic[In]):
    """Consumes `in_topic` records of type `in_type`, maps each through `handle`."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        group_id: str,
        in_topic: str,
        in_type: type[In],
        handle: Callable[[In], Iterable[Output]],
        *,
        max_poll_records: int = 10,
        max_poll_interval_ms: int = 300_000,
        metrics: ServiceMetrics | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.group_id = group_id
        self.in_topic = in_topic
        self.in_type = in_type
        self.handle = handle
        self.max_poll_records = max_poll_records
        self.max_poll_interval_ms = max_poll_interval_ms
        self.metrics = metrics or ServiceMetrics(name)
        self.stop = stop or StopFlag()

    # -- lifecycle --------------------------------------------------------------------
    def run_forever(self) -> None:
        backoff = BACKOFF_START_S
        while not self.stop.is_set():
            try:
                self._run_session()
                backoff = BACKOFF_START_S
            except kafka_io.AuthenticationFailed:
                raise
            except (KafkaError, kafka_io.BrokerUnavailable, OSError) as exc:
                self.metrics.reconnects.labels(self.name).inc()
                self.metrics.errors.labels(self.name, "kafka").inc()
                logger.warning("Kafka connection problem (%s: %s); reconnecting in %.1f s",
                               type(exc).__name__, exc, backoff)
                if self.stop.wait(backoff):
                    break
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        logger.info("%s stopped", self.name)

    def _run_session(self) -> None:
        consumer = kafka_io.make_consumer(
            self.settings, self.group_id, [self.in_topic],
            max_poll_records=self.max_poll_records, max_poll_interval_ms=self.max_poll_interval_ms,
            **session_overrides(self.settings),
        )
        producer = kafka_io.make_producer(self.settings)
        logger.info("%s consuming %s as group %s", self.name, self.in_topic, self.group_id)
        try:
            while not self.stop.is_set():
                batch = consumer.poll(timeout_ms=self.settings.poll_timeout_ms)
                if batch:
                    self._process(batch, consumer, producer)
                self._update_lag(consumer)
        finally:
            for client in (consumer, producer):
                try:
                    client.close()
                except Exception:  # closing a client whose broker vanished can raise anything
                    logger.debug("error while closing a Kafka client", exc_info=True)

    # -- one poll's worth of records --------------------------------------------------
    def _process(self, batch: dict, consumer: object, producer: object) -> None:
        futures = []
        offsets = {}
        for tp, records in batch.items():
            for rec in records:
                self.metrics.messages_in.labels(self.name, tp.topic).inc()
                for out in self._outputs_for(rec):
                    futures.append(
                        producer.send(out.topic, key=out.key.encode("utf-8"), value=out.message.encode())  # type: ignore[attr-defined]
                    )
                    self.metrics.messages_out.labels(self.name, out.topic).inc()
                offsets[tp] = rec.offset + 1
        producer.flush()  # type: ignore[attr-defined]
        for f in futures:
            f.get(timeout=30)  # raises if any send failed: then nothing is committed
        kafka_io.commit_offsets(consumer, offsets)

    def _outputs_for(self, rec: object) -> Iterable[Output]:
        try:
            msg = decode(rec.value, self.in_type)  # type: ignore[attr-defined]
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
        logger.warning("dead-lettering %s[%s]@%s: %s", getattr(rec, "topic", "?"),
                       getattr(rec, "partition", "?"), getattr(rec, "offset", "?"), reason)
        self.metrics.deadletters.labels(self.name, str(getattr(rec, "topic", ""))).inc()
        dl = dead_letter(self.name, rec, reason)
        return Output(self.settings.topic_deadletter, dl.key or f"{dl.topic}-{dl.partition}-{dl.offset}", dl)

    def _update_lag(self, consumer: object) -> None:
        for tp, lag in kafka_io.consumer_lag(consumer).items():
            self.metrics.consumer_lag.labels(self.name, self.group_id, tp.topic, str(tp.partition)).set(lag)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
