"""The stream loop's record handling (shared/service.py), with fake Kafka clients.

Pure logic: `_process` is fed one poll's batch; the fake producer keeps what was sent and
the fake consumer what was committed. What must hold: a record that does not decode, or
whose handler raises, becomes a dead letter (with its reason and the first 256 bytes) on
the dead-letter topic, is committed, and does not stop the records after it."""

from dataclasses import dataclass

import msgpack
import pytest
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from shared.metrics import ServiceMetrics
from shared.schemas import DeadLetter, SongRef, Verdict, decode
from shared.service import PAYLOAD_HEAD_BYTES, Output, StreamService
from shared.settings import Settings

DIGEST = "0123456789abcdef" * 4
TP = TopicPartition("genre.songs", 3)


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


class Done:
    def get(self, timeout=None):
        return None


class FakeProducer:
    def __init__(self):
        self.sent = []

    def send(self, topic, key, value):
        self.sent.append((topic, key, value))
        return Done()

    def flush(self, timeout=None):
        pass


class FakeConsumer:
    def __init__(self):
        self.commits = []

    def commit(self, offsets):
        self.commits.append({tp: om.offset for tp, om in offsets.items()})


def song(song_id, pad=""):
    return SongRef(song_id=song_id, filename="f.mp3" + pad, blob=DIGEST, size=1).encode()


def service(handle):
    settings = Settings.from_env({})
    return StreamService("chunker", settings, "g", "genre.songs", SongRef, handle,
                         metrics=ServiceMetrics("chunker"))


def verdict_for(msg):
    return [Output("genre.verdicts", msg.song_id, Verdict(song_id=msg.song_id, filename=msg.filename, status="ok"))]


def run(svc, values):
    recs = [Rec(TP.topic, TP.partition, 40 + i, f"k{i}".encode(), v) for i, v in enumerate(values)]
    producer, consumer = FakeProducer(), FakeConsumer()
    svc._process({TP: recs}, consumer, producer)
    return producer.sent, consumer.commits


def dead_letters(sent, settings):
    return [decode(v, DeadLetter) for t, _k, v in sent if t == settings.topic_deadletter]


def test_a_record_that_does_not_decode_is_dead_lettered_with_its_head_and_committed():
    svc = service(verdict_for)
    garbage = b"\xc1" + bytes(range(256)) * 2  # not msgpack, longer than the head
    sent, commits = run(svc, [garbage, song("after")])
    dls = dead_letters(sent, svc.settings)
    assert len(dls) == 1
    dl = dls[0]
    assert (dl.service, dl.topic, dl.partition, dl.offset, dl.key) == ("chunker", TP.topic, 3, 40, "k0")
    assert "msgpack" in dl.reason
    assert dl.payload_head == garbage[:PAYLOAD_HEAD_BYTES] and len(dl.payload_head) == 256
    assert [t for t, _k, _v in sent] == [svc.settings.topic_deadletter, "genre.verdicts"]
    assert commits == [{TP: 42}]  # both records done, the dead-lettered one included


def test_a_handler_that_raises_gives_a_dead_letter_and_the_next_record_goes_on():
    def handle(msg):
        if msg.song_id == "bad":
            raise ValueError("cannot chunk this")
        return verdict_for(msg)

    svc = service(handle)
    bad = song("bad", pad="x" * 400)
    sent, commits = run(svc, [bad, song("good")])  # does not raise
    dls = dead_letters(sent, svc.settings)
    assert len(dls) == 1
    assert dls[0].reason == "ValueError: cannot chunk this"
    assert dls[0].offset == 40 and dls[0].key == "k0"
    assert dls[0].payload_head == bad[:256] and msgpack.unpackb(bad)["song_id"] == "bad"
    assert [decode(v, Verdict).song_id for t, _k, v in sent if t == "genre.verdicts"] == ["good"]
    assert commits == [{TP: 42}]
    assert svc.metrics.errors.labels("chunker", "handler")._value.get() == 1
    assert svc.metrics.deadletters.labels("chunker", TP.topic)._value.get() == 1


def test_a_kafka_error_in_the_handler_is_not_dead_lettered_and_nothing_is_committed():
    """A broker failure is the loop's business (reconnect and redo), not the record's."""
    def handle(msg):
        raise KafkaTimeoutError("broker gone")

    svc = service(handle)
    producer, consumer = FakeProducer(), FakeConsumer()
    with pytest.raises(KafkaTimeoutError):
        svc._process({TP: [Rec(TP.topic, 3, 7, b"k", song("a"))]}, consumer, producer)
    assert producer.sent == [] and consumer.commits == []


# --- the rest of the record path: dead letters, flushes, hand-backs, metrics --------------------

import logging  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from kafka.errors import CommitFailedError, KafkaConnectionError  # noqa: E402

from shared import kafka_io  # noqa: E402
from shared import service as service_mod  # noqa: E402
from shared.service import (  # noqa: E402
    ConnectionWatch, HandedBack, KafkaLink, KafkaNoiseFilter, StopFlag, close_quietly, dead_letter,
    dead_letter_output, session_overrides,
)


def test_a_dead_letter_of_a_bare_record_has_neutral_fields_and_a_fallback_key(caplog):
    settings = Settings.from_env({})
    metrics = ServiceMetrics("x")
    before = time.time()
    with caplog.at_level(logging.WARNING, logger="shared.service"):
        out = dead_letter_output("x", settings, metrics, object(), "why")
    dl = out.message
    assert (dl.topic, dl.partition, dl.offset, dl.key, dl.payload_head) == ("", -1, -1, "", b"")
    assert before <= dl.at <= time.time()
    assert out.topic == settings.topic_deadletter and out.key == "--1--1"
    assert [r.getMessage() for r in caplog.records] == ["dead-lettering ?[?]@?: why"]
    assert metrics.deadletters.labels("x", "")._value.get() == 1


def test_a_dead_letter_keeps_the_record_key_decoding_bad_utf8_and_non_bytes_keys(caplog):
    rec = Rec("t", 2, 9, b"k\xff", b"v" * 300)
    assert dead_letter("s", rec, "r").key == "k\ufffd"
    assert dead_letter("s", Rec("t", 2, 9, "plain", b""), "r").key == "plain"
    with caplog.at_level(logging.WARNING, logger="shared.service"):
        out = dead_letter_output("s", Settings.from_env({}), ServiceMetrics("s"), Rec("t", 2, 9, None, None), "r")
    assert out.key == "t-2-9" and out.message.payload_head == b""
    assert [r.getMessage() for r in caplog.records] == ["dead-lettering t[2]@9: r"]


class RecordingProducer(FakeProducer):
    def __init__(self):
        super().__init__()
        self.flushes = []
        self.timeouts = []

    def flush(self, timeout=None):
        self.flushes.append((len(self.sent), timeout))

    def send(self, topic, key, value):
        super().send(topic, key, value)
        outer = self

        class Future:
            def get(self, timeout=None):
                outer.timeouts.append(timeout)
        return Future()


@pytest.mark.parametrize("extra, flushes", [(0, [2, 4, 6, 6]), (1, [3, 6, 6])])
def test_outputs_are_flushed_whenever_the_outstanding_bytes_reach_the_limit(monkeypatch, extra, flushes):
    value_len = len(Verdict(song_id="a", filename="f.mp3", status="ok").encode())
    monkeypatch.setattr(service_mod, "FLUSH_BYTES", 2 * value_len + extra)

    def three(msg):
        return [Output("genre.verdicts", msg.song_id, Verdict(song_id=msg.song_id, filename=msg.filename,
                                                             status="ok"))] * 3
    svc = service(three)
    producer, consumer = RecordingProducer(), FakeConsumer()
    svc._process({TP: [Rec(TP.topic, 3, 5, b"k", song("a")), Rec(TP.topic, 3, 6, b"k", song("a"))]},
                 consumer, producer)
    # whenever the outputs since the last wait reach the limit, then the closing wait
    assert [n for n, _t in producer.flushes] == flushes
    assert all(t == service_mod.ACK_TIMEOUT_S for _n, t in producer.flushes)
    assert len(producer.timeouts) == 6 and all(0.1 <= t <= service_mod.ACK_TIMEOUT_S for t in producer.timeouts)
    assert [k for _t, k, _v in producer.sent] == [b"a"] * 6
    assert consumer.commits == [{TP: 7}]
    assert svc.metrics.messages_in.labels("chunker", TP.topic)._value.get() == 2
    assert svc.metrics.messages_out.labels("chunker", "genre.verdicts")._value.get() == 6
    assert svc.metrics.processing_seconds.labels("chunker", "chunker")._sum.get() > 0


def test_each_partition_of_a_batch_commits_its_own_next_offset():
    other = TopicPartition("genre.songs", 4)
    svc = service(verdict_for)
    producer, consumer = FakeProducer(), FakeConsumer()
    svc._process({TP: [Rec(TP.topic, 3, 1, b"k", song("a"))],
                  other: [Rec(other.topic, 4, 8, b"k", song("b")), Rec(other.topic, 4, 9, b"k", song("c"))]},
                 consumer, producer)
    assert consumer.commits == [{TP: 2, other: 10}]


def test_a_stop_before_a_record_hands_back_it_and_the_rest_of_the_batch():
    svc = service(verdict_for)
    svc.stop.set()
    producer, consumer = FakeProducer(), FakeConsumer()
    other = TopicPartition("genre.songs", 4)
    with pytest.raises(HandedBack):
        svc._process({TP: [Rec(TP.topic, 3, 1, b"k", song("a"))], other: [Rec(other.topic, 4, 1, b"k", song("b"))]},
                     consumer, producer)
    assert producer.sent == [] and consumer.commits == []


def test_a_stop_mid_record_sends_what_is_out_closes_the_stage_and_commits_only_the_records_done(caplog):
    closed = []

    def long_song(msg):
        try:
            for i in range(5):
                if msg.song_id == "long" and i == 2:
                    svc.stop.set()
                yield Output("genre.chunks", msg.song_id, Verdict(song_id=msg.song_id, filename="f", status="ok"))
                if msg.song_id != "long":
                    return
        finally:
            closed.append(msg.song_id)

    alive = []  # held, so that only an explicit close() ends a stage (as it stops a decoder)

    def handle(msg):
        alive.append(long_song(msg))
        return alive[-1]

    svc = service(handle)
    producer, consumer = FakeProducer(), FakeConsumer()
    recs = [Rec(TP.topic, 3, 20, b"k", song("short")), Rec(TP.topic, 3, 21, b"k", song("long")),
            Rec(TP.topic, 3, 22, b"k", song("never"))]
    with caplog.at_level(logging.INFO, logger="shared.service"), pytest.raises(HandedBack) as handed:
        svc._process({TP: recs}, consumer, producer)
    assert [k for _t, k, _v in producer.sent] == [b"short", b"long", b"long"]  # the third is not sent
    assert consumer.commits == [{TP: 21}]  # the long song is redone by the next owner
    assert handed.tb is not None  # the loop's frame is still held: only an explicit close ended the stage
    assert closed == ["short", "long"]
    assert "chunker: stop requested; handing back genre.songs[3]@21" in [r.getMessage() for r in caplog.records]


def test_a_record_whose_last_output_is_out_when_the_stop_comes_is_done():
    def one(msg):
        svc.stop.set()
        yield from verdict_for(msg)

    svc = service(one)
    producer, consumer = FakeProducer(), FakeConsumer()
    with pytest.raises(HandedBack):
        svc._process({TP: [Rec(TP.topic, 3, 30, b"k", song("a")), Rec(TP.topic, 3, 31, b"k", song("b"))]},
                     consumer, producer)
    assert consumer.commits == [{TP: 31}] and len(producer.sent) == 1


def test_a_broker_unavailable_in_the_handler_is_not_dead_lettered():
    def handle(msg):
        raise kafka_io.BrokerUnavailable("gone")

    svc = service(handle)
    producer, consumer = FakeProducer(), FakeConsumer()
    with pytest.raises(kafka_io.BrokerUnavailable):
        svc._process({TP: [Rec(TP.topic, 3, 7, b"k", song("a"))]}, consumer, producer)
    assert producer.sent == [] and consumer.commits == []


def test_the_service_keeps_the_metrics_and_stop_flag_it_is_given():
    m, stop = ServiceMetrics("chunker"), StopFlag()
    svc = StreamService("chunker", Settings.from_env({}), "g", "genre.songs", SongRef, verdict_for,
                        metrics=m, stop=stop)
    assert svc.metrics is m and svc.stop is stop and svc.link.stop is stop and svc.link.metrics is m
    assert svc.link.name == "chunker" and svc.link.settings is svc.settings


# --- client settings and closing -------------------------------------------------------------


@pytest.mark.parametrize("session_ms, heartbeat", [(10_000, 3333), (6000, 2000), (1500, 1000)])
def test_session_overrides_heartbeat_a_third_of_the_session_at_least_a_second(session_ms, heartbeat):
    assert session_overrides(SimpleNamespace(session_timeout_ms=session_ms)) == {
        "session_timeout_ms": session_ms, "heartbeat_interval_ms": heartbeat, "reconnect_backoff_max_ms": 2000}


class ClosingConsumer:
    subscription = None

    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def close(self, **kw):
        self.calls.append(kw)
        if self.fail:
            raise KafkaConnectionError("gone")


class ClosingProducer:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def close(self, **kw):
        self.calls.append(kw)
        if self.fail:
            raise OSError("gone")


def test_close_quietly_closes_a_consumer_without_committing_and_a_producer_with_a_timeout(caplog):
    c, p = ClosingConsumer(), ClosingProducer()
    close_quietly(c, timeout_s=2.5)
    close_quietly(p, timeout_s=2.5)
    assert c.calls == [{"autocommit": False, "timeout_ms": 2500}] and p.calls == [{"timeout": 2.5}]
    close_quietly(c)
    assert c.calls[-1] == {"autocommit": False, "timeout_ms": 5000}
    with caplog.at_level(logging.DEBUG, logger="shared.service"):
        close_quietly(ClosingConsumer(fail=True))
        close_quietly(ClosingProducer(fail=True))
    assert [r.getMessage() for r in caplog.records] == ["error while closing a Kafka client"] * 2
    assert all(r.exc_info and r.exc_info[0] is not None for r in caplog.records)


# --- log noise and connection watching ---------------------------------------------------------


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def monotonic(self):
        return self.t

    def perf_counter(self):
        return self.t


def log_record(name="kafka.conn", msg="retrying", level=logging.WARNING):
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_the_noise_filter_lets_each_kafka_message_through_once_per_window(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(service_mod, "time", clock)
    f = KafkaNoiseFilter()
    assert f.filter(log_record())
    clock.t += 29.9
    assert not f.filter(log_record())
    assert f.filter(log_record(msg="other")) and f.filter(log_record(name="kafka.client"))
    assert f.filter(log_record("genre.x")) and f.filter(log_record("genre.x"))  # not kafka-python's
    assert f.filter(log_record(level=logging.CRITICAL)) and f.filter(log_record(level=logging.CRITICAL))
    assert f.filter(log_record("shared.kafka")) and f.filter(log_record("shared.kafka"))
    clock.t += 0.1  # 30 s after the first: through again
    assert f.filter(log_record())
    assert not f.filter(log_record())


def test_the_noise_filter_forgets_everything_past_a_thousand_messages(monkeypatch):
    monkeypatch.setattr(service_mod, "time", Clock())
    f = KafkaNoiseFilter(window_s=60.0)
    for i in range(1001):
        assert f.filter(log_record(msg=f"m{i}"))
    assert not f.filter(log_record(msg="m0"))
    assert f.filter(log_record(msg="m1001"))  # the table is cleared before this one is kept
    assert f.filter(log_record(msg="m0"))


def test_the_connection_watch_reports_refused_and_dropped_connections_only(caplog):
    seen = []
    watch = ConnectionWatch(seen.append)
    log = logging.getLogger("kafka.test_watch")
    log.addHandler(watch)
    try:
        log.warning("%s: socket disconnected", "<conn>")
        log.error("connect failed: [Errno 111] ECONNREFUSED " + "x" * 300)
        log.warning("all fine")
        log.info("Connection refused")  # below WARNING
        watch.on_failure = None  # a failing callback must not raise out of logging
        log.warning("Connection lost")
    finally:
        log.removeHandler(watch)
    assert seen[0] == "<conn>: socket disconnected"
    assert seen[1].startswith("connect failed: [Errno 111] ECONNREFUSED") and len(seen[1]) == 200
    assert len(seen) == 2


class CountingStop(StopFlag):
    """wait() returns at once, recording the backoff; stops after `stop_after` waits."""

    def __init__(self, stop_after=100):
        super().__init__()
        self.waits, self.stop_after = [], stop_after

    def wait(self, seconds):
        self.waits.append(seconds)
        if len(self.waits) >= self.stop_after:
            self.set()
        return self.is_set()


def link(stop):
    settings = Settings.from_env({}, bootstrap_servers="b:9092")
    return KafkaLink("svc", settings, ServiceMetrics("svc"), stop)


def test_an_outage_is_logged_and_counted_once_then_backs_off_doubling_to_the_maximum(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(service_mod, "time", clock)
    stop = CountingStop(stop_after=8)
    lk = link(stop)
    assert lk.client_overrides() == {}
    overrides = []

    def session():
        overrides.append(lk.client_overrides())
        clock.t += 1
        raise KafkaConnectionError("refused")

    with caplog.at_level(logging.INFO, logger="shared.service"):
        lk.run_forever(session)
    assert stop.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert overrides == [{}] + [{"bootstrap_timeout_ms": 10_000}] * 7
    assert lk.metrics.reconnects.labels("svc")._value.get() == 1
    assert lk.metrics.errors.labels("svc", "kafka")._value.get() == 8
    assert lk.lost_since == 1001.0
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == ("svc lost the connection to Kafka at b:9092 (KafkaConnectionError: KafkaConnectionError: "
                       "refused); reconnecting in 0.5 s from the committed offsets")
    assert msgs[1] == ("svc: Kafka still unavailable (attempt 2, KafkaConnectionError: KafkaConnectionError: "
                       "refused); new clients in 1.0 s")
    assert msgs[6].startswith("svc: Kafka still unavailable (attempt 7,") and msgs[6].endswith("in 15.0 s")
    assert msgs[-1] == "svc stopped" and len(msgs) == 9


def test_a_round_trip_begun_after_the_loss_ends_the_outage_and_resets_the_backoff(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(service_mod, "time", clock)
    stop = CountingStop()
    lk = link(stop)
    lk.connected(0.0)  # nothing lost: nothing to say
    calls = iter([OSError("a"), kafka_io.BrokerUnavailable("b"), None, KafkaConnectionError("c"),
                  KafkaConnectionError("d")])

    def session():
        exc = next(calls)
        if exc is None:
            lk.connected(clock.t - 5)  # began before the loss: not proof of a reconnection
            assert lk.lost_since is not None
            clock.t += 2.5
            lk.connected(clock.t)
            assert lk.lost_since is None
            return
        if str(exc).endswith("d"):
            stop.set()
        raise exc

    with caplog.at_level(logging.WARNING, logger="shared.service"):
        lk.run_forever(session)
    assert stop.waits == [0.5, 1.0, 0.5, 1.0]  # backoff back at the start after the reconnection
    assert lk.metrics.reconnects.labels("svc")._value.get() == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[2] == "svc reconnected to Kafka at b:9092 after 2.5 s"
    assert msgs[3].startswith("svc lost the connection to Kafka at b:9092 (KafkaConnectionError")
    assert msgs[4].startswith("svc: Kafka still unavailable (attempt 2, ")


def test_refused_credentials_and_bugs_are_not_retried():
    for exc in (kafka_io.AuthenticationFailed("no"), ValueError("bug")):
        stop = CountingStop()
        lk = link(stop)

        def session():
            raise exc
        with pytest.raises(type(exc)):
            lk.run_forever(session)
        assert stop.waits == [] and lk.lost_since is None


def test_a_stop_during_the_backoff_ends_the_loop_without_another_session():
    stop = CountingStop(stop_after=1)
    lk = link(stop)
    sessions = []

    def session():
        sessions.append(1)
        raise KafkaConnectionError("x")
    lk.run_forever(session)
    assert sessions == [1] and stop.waits == [0.5]
    assert lk._backoff == 0.5  # not doubled for a session that will never come
    lk.run_forever(session)
    assert sessions == [1]


def test_kafka_pythons_own_connection_failures_start_one_outage_while_watched(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(service_mod, "time", clock)
    lk = link(StopFlag())
    kafka_log = logging.getLogger("kafka.conn")
    with caplog.at_level(logging.WARNING):
        with lk.watching():
            kafka_log.warning("<conn>: Connection refused")
            clock.t += 1
            kafka_log.warning("<conn>: socket disconnected")
        assert lk.lost_since == 1000.0
        assert lk.client_overrides() == {"bootstrap_timeout_ms": 10_000}
        lk.lost_since = None
        kafka_log.warning("<conn>: Connection refused")  # no longer watched
    assert lk.lost_since is None
    assert lk.metrics.reconnects.labels("svc")._value.get() == 1
    assert lk.metrics.errors.labels("svc", "kafka")._value.get() == 1
    assert ("svc lost the connection to Kafka at b:9092 (kafka-python: <conn>: Connection refused); "
            "reconnecting with backoff") in [r.getMessage() for r in caplog.records]


def test_a_record_with_no_outputs_yet_is_committed():
    """Most records give nothing at once (the aggregator waits for a song's last chunk)."""
    svc = service(lambda msg: [])
    sent, commits = run(svc, [song("a")])
    assert sent == [] and commits == [{TP: 41}]


def test_acknowledgements_are_awaited_up_to_one_shared_deadline(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(service_mod, "time", clock)
    timeouts = []

    class Slow:
        def __init__(self, seconds):
            self.seconds = seconds

        def get(self, timeout=None):
            timeouts.append(timeout)
            clock.t += self.seconds

    class Producer:
        def flush(self, timeout=None):
            timeouts.append(("flush", timeout))

    StreamService._await(Producer(), [Slow(20), Slow(9.5), Slow(1), Slow(0)])
    assert timeouts == [("flush", 30.0), 30.0, 10.0, 0.5, 0.1]


def test_a_failing_handler_is_logged_with_the_song_and_its_time_observed(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(service_mod, "time", clock)

    def handle(msg):
        clock.t += 2.0
        raise RuntimeError("boom")

    svc = service(handle)
    with caplog.at_level(logging.ERROR, logger="shared.service"):
        run(svc, [song("s-1")])
    [rec] = caplog.records
    assert rec.getMessage() == "chunker failed on s-1" and rec.exc_info[0] is RuntimeError
    assert svc.metrics.processing_seconds.labels("chunker", "chunker")._sum.get() == 2.0


def test_a_failing_handler_of_a_record_without_a_song_id_is_logged_too(caplog):
    def handle(msg):
        raise RuntimeError("boom")

    svc = StreamService("janitor", Settings.from_env({}), "g", "genre.deadletter", DeadLetter, handle,
                        metrics=ServiceMetrics("janitor"))
    raw = DeadLetter(service="s", topic="t", partition=0, offset=1, reason="r").encode()
    with caplog.at_level(logging.ERROR, logger="shared.service"):
        run(svc, [raw])
    assert [r.getMessage() for r in caplog.records] == ["janitor failed on ?"]


def test_the_stop_flag_wait_returns_after_its_timeout_or_at_once_when_set():
    stop = StopFlag()
    assert stop.wait(0.01) is False
    stop.set()
    assert stop.wait(60) is True


def test_a_service_without_given_metrics_exports_its_own_under_its_name():
    svc = StreamService("chunker", Settings.from_env({}), "g", "genre.songs", SongRef, verdict_for)
    assert svc.metrics.registry.get_sample_value("genre_kafka_reconnects_total", {"service": "chunker"}) == 0.0


# --- a session: clients, polling, health checks ---------------------------------------------------


class PollConsumer:
    """Returns the scripted batches (or raises the scripted exceptions), 2 s of the clock per
    poll; when the script is done it sets the stop flag."""

    subscription = None

    def __init__(self, clock, stop, script, step=2):
        self.clock, self.stop, self.script, self.step = clock, stop, list(script), step
        self.commits, self.polls, self.closed = [], [], []

    def poll(self, timeout_ms):
        self.polls.append(timeout_ms)
        self.clock.t += self.step
        if not self.script:
            self.stop.set()
            return {}
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def commit(self, offsets):
        out = {tp: om.offset for tp, om in offsets.items()}
        if out.get(TP) == 666:
            raise CommitFailedError("rebalanced")
        self.commits.append(out)

    def close(self, **kw):
        self.closed.append(kw)


class SessionProducer(FakeProducer):
    def __init__(self):
        super().__init__()
        self.closed = []

    def close(self, **kw):
        self.closed.append(kw)


def session_rig(monkeypatch, script, lag=None, step=2):
    clock = Clock()
    monkeypatch.setattr(service_mod, "time", clock)
    svc = service(verdict_for)
    consumer = PollConsumer(clock, svc.stop, script, step)
    producer = SessionProducer()
    made = {}

    def make_consumer(settings, group_id, topics, **kw):
        made["consumer"] = (settings, group_id, topics, kw)
        return consumer

    def make_producer(settings, **kw):
        made["producer"] = (settings, kw)
        return producer

    lags = []

    def consumer_lag(c, *, timeout_ms, probe_topic):
        lags.append((clock.t, c, timeout_ms, probe_topic))
        if lag is not None:
            return lag(svc, clock)
        return {TP: 5, TopicPartition("genre.songs", 0): 2}

    monkeypatch.setattr(kafka_io, "make_consumer", make_consumer)
    monkeypatch.setattr(kafka_io, "make_producer", make_producer)
    monkeypatch.setattr(kafka_io, "consumer_lag", consumer_lag)
    return svc, clock, consumer, producer, made, lags


def test_a_session_consumes_commits_checks_health_every_interval_and_closes_both_clients(monkeypatch, caplog):
    recs = {40: Rec(TP.topic, 3, 40, b"k", song("a")), 41: Rec(TP.topic, 3, 41, b"k", song("b"))}
    svc, clock, consumer, producer, made, lags = session_rig(
        monkeypatch, [{TP: [recs[40]]}, {}, {}, {TP: [recs[41]]}])
    with caplog.at_level(logging.INFO, logger="shared.service"):
        svc.run_forever()
    settings, group, topics, kw = made["consumer"]
    assert settings is svc.settings and group == "g" and topics == ["genre.songs"]
    assert kw == {"max_poll_records": 10, "max_poll_interval_ms": 300_000, "session_timeout_ms": 10_000,
                  "heartbeat_interval_ms": 3333, "reconnect_backoff_max_ms": 2000}
    assert made["producer"] == (svc.settings, {"reconnect_backoff_max_ms": 2000})
    assert consumer.polls == [svc.settings.poll_timeout_ms] * 5
    assert consumer.commits == [{TP: 41}, {TP: 42}]
    assert [k for _t, k, _v in producer.sent] == [b"a", b"b"]
    # polls end at 1002, 1004, 1006, 1008, 1010: the broker is asked at 1002 and 1008 (5 s apart)
    assert [(t, c, ms, topic) for t, c, ms, topic in lags] == [(1002, consumer, 5000, "genre.songs"),
                                                               (1008, consumer, 5000, "genre.songs")]
    lag = svc.metrics.consumer_lag
    assert lag.labels("chunker", "g", "genre.songs", "3")._value.get() == 5
    assert lag.labels("chunker", "g", "genre.songs", "0")._value.get() == 2
    assert consumer.closed == [{"autocommit": False, "timeout_ms": 5000}] and producer.closed == [{"timeout": 5.0}]
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == "chunker consuming genre.songs as group g" and msgs[-1] == "chunker stopped"


def test_while_reconnecting_clients_give_up_sooner_and_health_is_checked_every_second(monkeypatch, caplog):
    def lag(svc, clock):
        if len(lags) == 1:  # kafka-python reports a new failure during the first round trip
            svc.link.lost_since = clock.t + 0.5
        return {}

    svc, clock, consumer, producer, made, lags = session_rig(monkeypatch, [{}, {}], lag=lag, step=1)
    svc.link.lost_since = 999.0
    with caplog.at_level(logging.WARNING, logger="shared.service"):
        svc._run_session()
    assert made["consumer"][3]["bootstrap_timeout_ms"] == 10_000
    assert made["producer"][1] == {"reconnect_backoff_max_ms": 2000, "bootstrap_timeout_ms": 10_000}
    # polls end at 1001, 1002, 1003: a health check every second while the link is down;
    # the first began before the failure it saw, the second proves the broker is back
    assert [t for t, *_ in lags] == [1001, 1002]
    assert svc.link.lost_since is None
    assert [r.getMessage() for r in caplog.records] == ["chunker reconnected to Kafka at 127.0.0.1:9092 after 0.5 s"]


def test_a_commit_refused_after_a_rebalance_is_counted_and_the_session_goes_on(monkeypatch, caplog):
    svc, clock, consumer, producer, made, lags = session_rig(
        monkeypatch, [{TP: [Rec(TP.topic, 3, 665, b"k", song("a"))]}, {TP: [Rec(TP.topic, 3, 7, b"k", song("b"))]}])
    with caplog.at_level(logging.WARNING, logger="shared.service"):
        svc._run_session()
    assert consumer.commits == [{TP: 8}]
    assert svc.metrics.errors.labels("chunker", "commit")._value.get() == 1
    assert [r.getMessage() for r in caplog.records] == [
        "chunker: commit refused after a rebalance (CommitFailedError: rebalanced); those records will be "
        "processed again"]


def test_a_stop_mid_batch_ends_the_session_quietly_and_a_broker_failure_ends_it_loudly(monkeypatch):
    svc, clock, consumer, producer, made, lags = session_rig(monkeypatch, [])
    svc.stop.set()
    consumer.script = [{TP: [Rec(TP.topic, 3, 1, b"k", song("a"))]}]
    svc.stop = svc.link.stop = StopFlag()
    orig_process = svc._process

    def process(batch, c, p):
        svc.stop.set()
        return orig_process(batch, c, p)
    svc._process = process
    svc._run_session()  # HandedBack stays inside
    assert consumer.commits == [] and consumer.closed and producer.closed

    svc, clock, consumer, producer, made, lags = session_rig(monkeypatch, [KafkaTimeoutError("gone")])
    with pytest.raises(KafkaTimeoutError):
        svc._run_session()
    assert consumer.closed and producer.closed


def test_a_producer_that_cannot_be_made_closes_the_consumer(monkeypatch):
    svc, clock, consumer, producer, made, lags = session_rig(monkeypatch, [])

    def no_producer(settings, **kw):
        raise KafkaConnectionError("no broker")
    monkeypatch.setattr(kafka_io, "make_producer", no_producer)
    with pytest.raises(KafkaConnectionError):
        svc._run_session()
    assert consumer.closed == [{"autocommit": False, "timeout_ms": 5000}] and consumer.polls == []


# --- the process: signals, logging, exit statuses ---------------------------------------------------


def test_sigterm_and_sigint_set_the_stop_flag(caplog):
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for sig in saved:
            stop = StopFlag()
            stop.install()
            assert not stop.is_set()
            with caplog.at_level(logging.INFO, logger="shared.service"):
                signal.raise_signal(sig)
            assert stop.is_set() and stop.wait(0)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert [r.getMessage() for r in caplog.records] == [
        f"received {name}: finishing in-flight work, committing, closing" for name in ("SIGTERM", "SIGINT")]


def test_configure_logging_sets_the_level_quiets_kafka_python_and_filters_its_repeats():
    root, kafka_logger = logging.getLogger(), logging.getLogger("kafka")
    saved = (root.handlers[:], root.level, kafka_logger.level)
    root.handlers = []
    try:
        service_mod.configure_logging(Settings.from_env({}, log_level="debug"))
        assert root.level == logging.DEBUG and kafka_logger.level == logging.WARNING
        [handler] = root.handlers
        assert any(isinstance(f, KafkaNoiseFilter) for f in handler.filters)
        assert handler.formatter._fmt == "%(asctime)s %(levelname)s %(name)s: %(message)s"
        root.handlers = []
        service_mod.configure_logging(Settings.from_env({}, log_level="nonsense"))
        assert root.level == logging.INFO
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])
        kafka_logger.setLevel(saved[2])


class Process:
    """run_service's surroundings, recorded instead of done."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(service_mod, "reuse_large_buffers", lambda: self.calls.append("buffers"))
        monkeypatch.setattr(StopFlag, "install", lambda flag: self.calls.append("signals"))
        monkeypatch.setattr(service_mod, "configure_logging", lambda s: self.calls.append(("logging", s)))
        monkeypatch.setattr(ServiceMetrics, "serve", lambda m, port: self.calls.append(("serve", m.service, port)))
        monkeypatch.setattr(service_mod, "gc", SimpleNamespace(freeze=lambda: self.calls.append("freeze")))
        monkeypatch.setenv("GENRE_METRICS_PORT", "9123")


@pytest.mark.parametrize("outcome, status, logged", [
    (None, 0, []),
    (kafka_io.AuthenticationFailed("bad password"), 3,
     ["authentication with Kafka failed, exiting with status 3: bad password"]),
    (service_mod.ServiceFailed("inference thread died"), 1,
     ["inference thread died; exiting so the supervisor restarts the service from the committed offsets"]),
])
def test_run_service_exit_statuses(monkeypatch, caplog, outcome, status, logged):
    proc = Process(monkeypatch)
    built = []

    class Svc:
        def run_forever(self):
            proc.calls.append("run")
            if outcome is not None:
                raise outcome

    def build(settings, metrics, stop):
        built.append((settings, metrics, stop))
        return Svc()

    with caplog.at_level(logging.ERROR, logger="shared.service"):
        assert service_mod.run_service("classifier", build) == status
    settings, metrics, stop = built[0]
    assert settings.metrics_port == 9123 and metrics.service == "classifier" and isinstance(stop, StopFlag)
    assert proc.calls == ["buffers", "signals", ("logging", settings), ("serve", "classifier", 9123), "freeze", "run"]
    assert [r.getMessage() for r in caplog.records] == logged


def test_run_service_exits_2_when_it_cannot_start_and_0_when_stopped_while_starting(monkeypatch, caplog):
    proc = Process(monkeypatch)

    def cannot(settings, metrics, stop):
        raise service_mod.StartupError("no model at /m")

    with caplog.at_level(logging.ERROR, logger="shared.service"):
        assert service_mod.run_service("classifier", cannot) == 2
    assert [r.getMessage() for r in caplog.records] == ["classifier cannot start: no model at /m"]

    class Never:
        def run_forever(self):
            raise AssertionError("must not run")

    def stopped(settings, metrics, stop):
        stop.set()  # SIGTERM during a slow start
        return Never()

    assert service_mod.run_service("classifier", stopped) == 0
    assert "run" not in proc.calls


# --- several input topics, each with its own record decoder -------------------------------------

from shared.schemas import SchemaError  # noqa: E402
from shared.service import message_decoder  # noqa: E402

AUDIO_TP = TopicPartition("genre.audio", 1)


@dataclass
class RawRec:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list


def raw_decoder(rec):
    """A decoder that reads the whole record, as a raw-audio decoder does."""
    names = [v.decode() for k, v in rec.headers if k == "filename"]
    if not names:
        raise SchemaError("missing header 'filename'")
    return SongRef(song_id=rec.key.decode(), filename=names[0], blob=DIGEST, size=len(rec.value))


def two_topic_service(handle, **kw):
    return StreamService("chunker", Settings.from_env({}), "g", "genre.songs", SongRef, handle,
                         extra_inputs={"genre.audio": raw_decoder}, metrics=ServiceMetrics("chunker"), **kw)


def test_each_topic_is_decoded_by_its_own_decoder_and_both_go_to_the_one_handler():
    seen = []

    def handle(msg):
        seen.append((msg.song_id, msg.filename, msg.size))
        return verdict_for(msg)

    svc = two_topic_service(handle)
    assert svc.topics == ["genre.songs", "genre.audio"] and svc.in_topic == "genre.songs"
    batch = {
        TP: [Rec(TP.topic, 3, 40, b"k", song("ref"))],
        AUDIO_TP: [RawRec(AUDIO_TP.topic, 1, 7, b"raw", b"\xff\xfbaudio", [("filename", b"x.mp3")]),
                   RawRec(AUDIO_TP.topic, 1, 8, b"nameless", b"\xff\xfb", [])],
    }
    producer, consumer = FakeProducer(), FakeConsumer()
    svc._process(batch, consumer, producer)
    assert seen == [("ref", "f.mp3", 1), ("raw", "x.mp3", 7)]
    dls = dead_letters(producer.sent, svc.settings)
    assert [(d.topic, d.partition, d.offset, d.key, d.reason, d.payload_head) for d in dls] == [
        ("genre.audio", 1, 8, "nameless", "missing header 'filename'", b"\xff\xfb")]
    assert consumer.commits == [{TP: 41, AUDIO_TP: 9}]
    assert svc.metrics.messages_in.labels("chunker", "genre.audio")._value.get() == 2
    assert svc.metrics.deadletters.labels("chunker", "genre.audio")._value.get() == 1


def test_a_msgpack_record_on_the_raw_topic_is_not_read_as_a_message():
    """The decoder is chosen by the record's topic, not by what its value looks like."""
    svc = two_topic_service(verdict_for)
    producer, consumer = FakeProducer(), FakeConsumer()
    svc._process({AUDIO_TP: [RawRec(AUDIO_TP.topic, 1, 0, b"k", song("a"), [])]}, consumer, producer)
    assert [d.reason for d in dead_letters(producer.sent, svc.settings)] == ["missing header 'filename'"]


def test_a_record_of_a_topic_without_a_decoder_is_decoded_as_the_in_type():
    svc = two_topic_service(verdict_for)
    sent, commits = run(svc, [song("x")])  # TP is genre.songs: the in_type
    other = TopicPartition("genre.other", 0)
    producer, consumer = FakeProducer(), FakeConsumer()
    svc._process({other: [Rec(other.topic, 0, 3, b"k", song("y"))]}, consumer, producer)
    assert [decode(v, Verdict).song_id for t, _k, v in sent + producer.sent if t == "genre.verdicts"] == ["x", "y"]


def test_a_raising_handler_of_a_raw_record_is_dead_lettered_with_its_raw_head():
    def handle(msg):
        raise OSError(28, "No space left on device")

    svc = two_topic_service(handle)
    producer, consumer = FakeProducer(), FakeConsumer()
    svc._process({AUDIO_TP: [RawRec(AUDIO_TP.topic, 1, 5, b"c", b"RIFF" * 100, [("filename", b"a.wav")])]},
                 consumer, producer)
    [dl] = dead_letters(producer.sent, svc.settings)
    assert dl.reason == "OSError: [Errno 28] No space left on device" and dl.payload_head == (b"RIFF" * 100)[:256]
    assert consumer.commits == [{AUDIO_TP: 6}]


def test_message_decoder_decodes_the_value_and_refuses_what_does_not_decode():
    dec = message_decoder(SongRef)
    assert dec(Rec(TP.topic, 3, 0, b"k", song("a"))).song_id == "a"
    with pytest.raises(SchemaError, match="msgpack"):
        dec(Rec(TP.topic, 3, 0, b"k", b"\xc1"))


def test_a_session_subscribes_to_every_input_with_the_consumer_overrides(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(service_mod, "time", clock)
    svc = two_topic_service(verdict_for, consumer_overrides={"max_partition_fetch_bytes": 17_000_000})
    consumer = PollConsumer(clock, svc.stop, [{AUDIO_TP: [RawRec(AUDIO_TP.topic, 1, 0, b"c", b"x",
                                                                  [("filename", b"a.mp3")])]}])
    made = {}

    def make_consumer(settings, group_id, topics, **kw):
        made["consumer"] = (group_id, topics, kw)
        return consumer

    monkeypatch.setattr(kafka_io, "make_consumer", make_consumer)
    monkeypatch.setattr(kafka_io, "make_producer", lambda settings, **kw: SessionProducer())
    probes = []
    monkeypatch.setattr(kafka_io, "consumer_lag", lambda c, *, timeout_ms, probe_topic: probes.append(probe_topic) or {})
    with caplog.at_level(logging.INFO, logger="shared.service"):
        svc._run_session()
    group, topics, kw = made["consumer"]
    assert group == "g" and topics == ["genre.songs", "genre.audio"]
    assert kw["max_partition_fetch_bytes"] == 17_000_000 and kw["max_poll_records"] == 10
    assert consumer.commits == [{AUDIO_TP: 1}] and probes == ["genre.songs"]
    assert caplog.records[0].getMessage() == "chunker consuming genre.songs, genre.audio as group g"


class Versioned:
    """A message whose encoding depends on the schema version asked for."""

    def encode(self, version: int | None = None) -> bytes:  # as Message.encode: None is the type's own (7)
        return f"v{7 if version is None else version}".encode()


def test_an_output_with_a_schema_version_is_encoded_in_that_version():
    svc = service(lambda msg: [Output("genre.chunks", msg.song_id, Versioned(), version=1),  # type: ignore[arg-type]
                               Output("genre.chunks", msg.song_id, Versioned())])  # type: ignore[arg-type]
    sent, commits = run(svc, [song("a")])
    assert [v for _t, _k, v in sent] == [b"v1", b"v7"]
    assert commits == [{TP: 41}]
