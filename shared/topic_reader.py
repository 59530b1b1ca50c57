"""Read a whole topic from the beginning without a consumer group (for `genre results`)."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from shared import kafka_io
from shared.settings import Settings

PARTITION_WAIT_S = 10.0


def make_reader(settings: Settings, topic: str) -> KafkaConsumer:
    """A group-less consumer assigned every partition of `topic`, positioned at the start."""
    consumer = kafka_io.make_consumer(settings, None, [], enable_auto_commit=False)
    deadline = time.monotonic() + PARTITION_WAIT_S
    parts = consumer.partitions_for_topic(topic)
    while not parts and time.monotonic() < deadline:
        time.sleep(0.2)
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        consumer.close()
        raise kafka_io.BrokerUnavailable(f"topic {topic} does not exist; create the topics with `genre topics create`")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer


def at_end(consumer: KafkaConsumer) -> bool:
    """True once the consumer's position reached the end of every assigned partition."""
    tps = list(consumer.assignment())
    ends = consumer.end_offsets(tps)
    return all(consumer.position(tp) >= ends[tp] for tp in tps)
