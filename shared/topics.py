"""Every Kafka topic of the pipeline, created by code with explicit settings.

The broker runs with ``auto.create.topics.enable=false`` and the clients with
``allow_auto_create_topics=False``: a topic exists because `ensure_topics` made it, with
the partitions, retention and size limits below, never with broker defaults.

Sizes: only the chunk and feature topics carry large values (a 30 s chunk at 22,050 Hz
is a median 1.4 MB in schema v2, 2.65 MB as v1 float32; features ~0.85 MB), so only they
accept up to ``MAX_MESSAGE_BYTES`` (3 MiB: v1 chunks still arrive during an upgrade) +
64 KiB of record overhead. `genre produce` never sends a whole song: it stores the file in
the shared blob store and sends a small reference (claim check), so the songs topic keeps
Kafka's 1 MiB limit, whatever the song's size.

Raw audio: ``audio`` (genre.audio) lets any Kafka client submit a song as one record whose
value is the audio file itself (`shared/audio_ingest.py`: header ``filename`` required,
``song-id`` optional, key the client's id). It accepts ``GENRE_AUDIO_MAX_BYTES`` (16 MiB)
+ 64 KiB of record overhead; the broker refuses a larger record to its producer
(MESSAGE_TOO_LARGE), and a value over the setting that still fits is a dead letter.
Larger songs go by claim check. The chunker reads ``audio`` and ``songs`` in one group.

Keys: everything about one song (from the songs topic on) is keyed by its song id, so its chunks stay ordered in
one partition, and ``verdicts`` is compacted: the latest verdict per song id survives.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from shared import kafka_io
from shared.audio_ingest import audio_topic_max_bytes
from shared.kafka_io import MAX_RECORD_BYTES
from shared.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
WORK_RETENTION_MS = 7 * DAY_MS
DEADLETTER_RETENTION_MS = 30 * DAY_MS


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The pipeline's topics, in flow order, with the settings they are created with."""
    p, rf = settings.partitions, settings.replication_factor

    def work(max_bytes: int) -> dict[str, str]:
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(WORK_RETENTION_MS),
            "max.message.bytes": str(max_bytes),
        }

    return [
        TopicSpec(settings.topic_songs, p, rf, work(DEFAULT_MAX_MESSAGE_BYTES),
                  "song references (claim check to the blob store), key song id"),
        TopicSpec(settings.topic_audio, p, rf, work(audio_topic_max_bytes(settings)),
                  "raw audio files from any client (header filename, optional song-id), key client id"),
        TopicSpec(settings.topic_chunks, p, rf, work(MAX_RECORD_BYTES),
                  "30 s decoded audio chunks, key song id"),
        TopicSpec(settings.topic_features, p, rf, work(MAX_RECORD_BYTES),
                  "MFCC + spectral contrast per chunk, key song id"),
        TopicSpec(settings.topic_predictions, p, rf, work(DEFAULT_MAX_MESSAGE_BYTES),
                  "per-chunk class probabilities, key song id"),
        TopicSpec(settings.topic_verdicts, p, rf, {
            "cleanup.policy": "compact",
            "max.message.bytes": str(DEFAULT_MAX_MESSAGE_BYTES),
            "min.compaction.lag.ms": "0",
            "segment.ms": str(DAY_MS),
        }, "one verdict per song id (compacted)"),
        TopicSpec(settings.topic_deadletter, p, rf, {
            "cleanup.policy": "delete",
            "retention.ms": str(DEADLETTER_RETENTION_MS),
            "max.message.bytes": str(DEFAULT_MAX_MESSAGE_BYTES),
        }, "records that did not decode or failed, with the reason"),
    ]


TOPIC_SPECS = topic_specs
"""Alias: ``TOPIC_SPECS(settings)``."""


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    partitions_increased: dict[str, tuple[int, int]] = field(default_factory=dict)
    """topic -> (before, after)"""
    partitions_short: dict[str, tuple[int, int]] = field(default_factory=dict)
    """topic -> (actual, wanted), when increasing was not allowed"""
    config_drift: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    """topic -> {key: (actual, wanted)} for existing topics whose configs differ"""
    configs_fixed: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = [f"{t}: {a} partitions, {w} configured (not increased)" for t, (a, w) in self.partitions_short.items()]
        for t, diffs in self.config_drift.items():
            if t not in self.configs_fixed:
                out += [f"{t}: {k}={a} but {w} configured" for k, (a, w) in diffs.items()]
        return out

    def lines(self) -> list[str]:
        out = [f"created {t}" for t in self.created] + [f"exists  {t}" for t in self.existing]
        out += [f"{t}: partitions increased {b} -> {a}" for t, (b, a) in self.partitions_increased.items()]
        out += [f"{t}: configs updated to the spec" for t in self.configs_fixed]
        return out + [f"WARNING {p}" for p in self.problems]


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    counts = {}
    for t in admin.describe_topics(names):
        if t.get("error_code", 0) == 0 and t.get("partitions"):
            counts[t["name"]] = len(t["partitions"])
    return counts


def describe_topic_configs(admin: KafkaAdminClient, names: list[str], keys: list[str] | None = None) -> dict[str, dict[str, str | None]]:
    """{topic: {key: value}} of the effective configs (defaults included)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, n, None) for n in names]
    raw = admin.describe_configs(resources, config_filter="all")
    out: dict[str, dict[str, str | None]] = {}
    by_name = raw.get("topic", {}) if isinstance(raw, dict) else {}
    for name in names:
        entries = by_name.get(name, {})
        vals: dict[str, str | None] = {}
        for key, data in entries.items():
            if keys is None or key in keys:
                vals[key] = data.get("value") if isinstance(data, dict) else data
        out[name] = vals
    return out


def ensure_topics(settings: Settings, *, specs: list[TopicSpec] | None = None,
                  increase_partitions: bool = True, fix_configs: bool = False,
                  admin: KafkaAdminClient | None = None, timeout: float = 30.0) -> TopicReport:
    """Create every topic that is missing (idempotent; TopicAlreadyExists is fine).

    For topics that exist: fewer partitions than configured are increased (or only
    reported with ``increase_partitions=False``; partitions are never reduced), and
    configs that differ from the spec are reported (or set with ``fix_configs=True``).
    Returns once every topic has a leader for each partition."""
    specs = specs if specs is not None else topic_specs(settings)
    own_admin = admin is None
    admin = admin or kafka_io.make_admin(settings)
    report = TopicReport()
    try:
        with kafka_io.kafka_errors(settings):
            names = [s.name for s in specs]
            present = set(admin.list_topics())
            missing = [s for s in specs if s.name not in present]
            if missing:
                result = admin.create_topics(
                    {s.name: {"num_partitions": s.partitions, "replication_factor": s.replication_factor,
                              "configs": dict(s.configs)} for s in missing},
                    timeout_ms=int(timeout * 1000), raise_errors=False,
                )
                for t in result.get("topics", []):
                    code = t.get("error_code", 0)
                    if code == 0:
                        report.created.append(t["name"])
                    elif code == TopicAlreadyExistsError.errno:
                        present.add(t["name"])  # a concurrent creator won the race
                    else:
                        raise KafkaError(f"creating topic {t['name']} failed: error {code} {t.get('error_message') or ''}")
            existing = [s for s in specs if s.name in present]
            report.existing = [s.name for s in existing]
            if existing:
                _check_existing(admin, existing, report, increase_partitions, fix_configs, timeout)
            admin.wait_for_topics(names, timeout_ms=int(timeout * 1000))
    finally:
        if own_admin:
            admin.close()
    for line in report.lines():
        log.info("topics: %s", line)
    return report


def _check_existing(admin: KafkaAdminClient, specs: list[TopicSpec], report: TopicReport,
                    increase_partitions: bool, fix_configs: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while True:  # a topic created a moment ago may not be in the metadata yet
        counts = _partition_counts(admin, [s.name for s in specs])
        if all(s.name in counts for s in specs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    grow = {s.name: s.partitions for s in specs if s.name in counts and counts[s.name] < s.partitions}
    if grow:
        if increase_partitions:
            admin.create_partitions(grow, timeout_ms=int(timeout * 1000))
            report.partitions_increased = {t: (counts[t], n) for t, n in grow.items()}
            _wait_until(lambda: all(_partition_counts(admin, list(grow)).get(t, 0) >= n for t, n in grow.items()),
                        deadline, f"the new partitions of {sorted(grow)}")
        else:
            report.partitions_short = {t: (counts[t], n) for t, n in grow.items()}
    keys = sorted({k for s in specs for k in s.configs})
    actual = describe_topic_configs(admin, [s.name for s in specs], keys)
    to_fix = []
    for s in specs:
        diffs = {k: (actual.get(s.name, {}).get(k), v) for k, v in s.configs.items()
                 if actual.get(s.name, {}).get(k) != v}
        if diffs:
            report.config_drift[s.name] = diffs
            if fix_configs:
                to_fix.append(ConfigResource(ConfigResourceType.TOPIC, s.name, {k: w for k, (_a, w) in diffs.items()}))
    if to_fix:
        wanted = {r.name: dict(r.configs) for r in to_fix}
        result = admin.alter_configs(to_fix)
        _raise_alter_errors(result)
        report.configs_fixed = [r.name for r in to_fix]

        def applied() -> bool:
            now = describe_topic_configs(admin, list(wanted), keys)
            return all(now.get(t, {}).get(k) == v for t, kv in wanted.items() for k, v in kv.items())

        _wait_until(applied, deadline, f"the config changes of {sorted(wanted)}")


def _wait_until(predicate: Any, deadline: float, what: str) -> None:
    """Metadata reaches the broker's cache a moment after the controller accepted it."""
    while not predicate():
        if time.monotonic() > deadline:
            raise KafkaError(f"timed out waiting for {what} to become visible")
        time.sleep(0.1)


def _raise_alter_errors(result: Any) -> None:
    for by_name in (result or {}).values() if isinstance(result, dict) else ():
        for name, res in (by_name or {}).items():
            if res != "OK":  # kafka-python 3: "OK" or the error's text
                raise KafkaError(f"altering the configs of {name} failed: {res}")


def list_topics(settings: Settings, *, include_internal: bool = False) -> list[dict[str, Any]]:
    """[{name, partitions, configs (the keys our specs set)}] for the topics on the broker."""
    keys = sorted({k for s in topic_specs(settings) for k in s.configs} | {"retention.ms"})
    admin = kafka_io.make_admin(settings)
    try:
        with kafka_io.kafka_errors(settings):
            names = sorted(n for n in admin.list_topics() if include_internal or not n.startswith("__"))
            counts = _partition_counts(admin, names) if names else {}
            configs = describe_topic_configs(admin, names, keys) if names else {}
    finally:
        admin.close()
    return [{"name": n, "partitions": counts.get(n, 0), "configs": configs.get(n, {})} for n in names]
