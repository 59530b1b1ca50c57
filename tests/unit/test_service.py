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
