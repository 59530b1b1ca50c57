"""What reading feature records costs with kafka-python against a C client (librdkafka).

    python bench/kafka_clients.py [--chunks 6000] [--rounds 2]

The classifier's CPU per chunk is predict plus the Kafka fetch path plus message decoding
(bench/classifier.py prints it). This measures the fetch path and the decode alone: the
same --chunks feature records (real features of generated audio, ~125 KB each, songs of 7
chunks, 12 partitions) are pre-produced once, then drained by a fresh consumer group with
kafka-python (the project's client, with shared.kafka_io's settings and patches) and with
confluent-kafka (librdkafka, the same fetch sizes), alternately, --rounds times each. Each
drain decodes every record with shared.schemas.decode, as the classifier does. Printed: the
rate and the CPU per record of this process and of the broker (a LocalBroker started here,
or GENRE_KAFKA_BOOTSTRAP if it answers; the broker's CPU only for the LocalBroker).

confluent-kafka is an optional benchmark extra (pip install confluent-kafka), never a
runtime dependency.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402
from shared.broker import external_or_local  # noqa: E402


def drain_kafka_python(settings: Any, topic: str, n: int) -> int:
    from shared import kafka_io
    from shared.schemas import Features, decode

    consumer = kafka_io.make_consumer(settings, f"bench-kp-{uuid.uuid4().hex[:8]}", [topic], max_poll_records=64)
    got = 0
    try:
        while got < n:
            for records in consumer.poll(timeout_ms=1000, max_records=64).values():
                for rec in records:
                    decode(rec.value, Features)
                    got += 1
    finally:
        consumer.close()
    return got


def drain_librdkafka(settings: Any, topic: str, n: int) -> int:
    from confluent_kafka import Consumer

    from shared import kafka_io
    from shared.schemas import Features, decode

    consumer = Consumer({
        "bootstrap.servers": settings.bootstrap_servers, "group.id": f"bench-rd-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "fetch.max.bytes": kafka_io.FETCH_MAX_BYTES, "max.partition.fetch.bytes": kafka_io.MAX_RECORD_BYTES,
    })
    consumer.subscribe([topic])
    got = 0
    try:
        while got < n:
            for msg in consumer.consume(num_messages=64, timeout=1.0):
                if msg.error() is None:
                    decode(msg.value(), Features)
                    got += 1
    finally:
        consumer.close()
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=6000, help="feature records to pre-produce and drain")
    ap.add_argument("--rounds", type=int, default=2, help="drains per client, alternating")
    args = ap.parse_args()
    try:
        import confluent_kafka
    except ImportError:
        print("confluent-kafka is not installed (pip install confluent-kafka): only kafka-python is measured")
        confluent_kafka = None

    from classifier import chunk_bank, features_message

    bank = chunk_bank()
    with tempfile.TemporaryDirectory(prefix="genre-bench-clients-") as tmp:
        bootstrap, broker = external_or_local(Path(tmp))
        settings, _env, _port = harness.service_settings(bootstrap, "classifier", 1, partitions=12)
        topic = settings.topic_features
        try:
            n = args.chunks
            secs = harness.pre_produce(settings, topic, n,
                                       lambda song, i, last, k: features_message(song, i, last, bank[k % len(bank)], "x"))
            size = len(features_message("x" * 13, 0, False, bank[0], "x"))
            print(f"pre-produced {n} feature records of {size / 1000:.0f} KB in {secs:.1f} s; "
                  f"kafka-python {__import__('kafka').__version__}"
                  + (f", confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})"
                     if confluent_kafka else ""))
            clients: dict[str, Callable[[Any, str, int], int]] = {"kafka-python": drain_kafka_python}
            if confluent_kafka:
                clients["librdkafka"] = drain_librdkafka
            pids = harness.process_pids("", None, broker, "this process")
            for r in range(args.rounds):
                for name, drain in clients.items():
                    sampler = harness.CpuSampler(pids).start()
                    t0 = time.time()
                    got = drain(settings, topic, n)
                    t1 = time.time()
                    time.sleep(0.1)
                    sampler.stop()
                    cpu = {k: sampler.used(k, t0, t1) for k in sampler.pids}
                    costs = ", ".join(f"{k} {1000 * v / got:.3f} ms" for k, v in cpu.items() if v is not None)
                    print(f"round {r + 1} {name:<13} {got} records in {t1 - t0:5.2f} s = {got / (t1 - t0):6.0f}/s; "
                          f"CPU per record (fetch + decode): {costs}")
        finally:
            harness.tear_down(None, settings, broker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
