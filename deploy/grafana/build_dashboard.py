#!/usr/bin/env python3
"""Generate deploy/grafana/dashboards/genre-pipeline.json (run after editing PANELS).

The PromQL uses only the metric names of shared/metrics.py (and Prometheus' `up`) and no
Grafana template variables, so every expression can also be evaluated as it stands
through Prometheus' HTTP API (tests/unit/test_deploy_manifests.py checks the names and
that the JSON is this script's output).

    python deploy/grafana/build_dashboard.py          # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "genre-pipeline.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
STAGES = 'job=~"chunker|extractor|classifier"'


def q(expr: str, legend: str) -> dict:
    return {"expr": expr, "legendFormat": legend}


def quantiles(metric: str, by: str, legend: str) -> list[dict]:
    grp = f"{by}, le" if by else "le"
    return [
        q(f"histogram_quantile({p}, sum by ({grp}) (rate({metric}_bucket[5m])))", f"{legend} p{int(p * 100)}")
        for p in (0.5, 0.95, 0.99)
    ]


# (row title, [(panel title, panel type, unit, description, [targets])])
PANELS: list[tuple[str, list[tuple[str, str, str, str, list[dict]]]]] = [
    ("Throughput", [
        ("Throughput per stage", "timeseries", "ops",
         "Songs taken by the chunker, chunks it produced, feature vectors the extractor produced and verdicts the classifier produced, per second.",
         [
             q('sum(rate(genre_messages_in_total{service="chunker"}[1m]))', "songs/s"),
             q('sum(rate(genre_messages_out_total{service="chunker"}[1m]))', "chunks/s"),
             q('sum(rate(genre_messages_out_total{service="extractor"}[1m]))', "features/s"),
             q("sum(rate(genre_verdicts_total[1m]))", "verdicts/s"),
         ]),
        ("Messages in / out by service and topic", "timeseries", "ops", "Consumed and produced records per second.",
         [
             q("sum by (service, topic) (rate(genre_messages_in_total[1m]))", "in {{service}} <- {{topic}}"),
             q("sum by (service, topic) (rate(genre_messages_out_total[1m]))", "out {{service}} -> {{topic}}"),
         ]),
        ("Audio processed (x real time)", "timeseries", "none", "Seconds of audio processed per second, per stage.",
         [q("sum by (service) (rate(genre_audio_seconds_total[1m]))", "{{service}}")]),
        ("Instances up", "stat", "none", "Scrape targets up per stage (extractor replicas included).",
         [q(f"sum by (job) (up{{{STAGES}}})", "{{job}}")]),
    ]),
    ("Consumer lag", [
        ("Consumer lag by group and topic", "timeseries", "short", "Records behind the partition ends; the extractor's lag on the chunk topic drives KEDA.",
         [q("sum by (group, topic) (genre_consumer_lag)", "{{group}} / {{topic}}")]),
        ("Consumer lag by partition", "timeseries", "short", "Per-partition lag: one hot partition means a skewed key or a stuck consumer.",
         [q("max by (group, topic, partition) (genre_consumer_lag)", "{{group}} {{topic}}[{{partition}}]")]),
    ]),
    ("Latency", [
        ("Processing latency per stage (p50/p95/p99)", "timeseries", "s", "Time to process one message, per service and stage.",
         quantiles("genre_processing_seconds", "service, stage", "{{service}}/{{stage}}")),
        ("Mean processing time per stage", "timeseries", "s", "",
         [q("sum by (service, stage) (rate(genre_processing_seconds_sum[5m])) / sum by (service, stage) (rate(genre_processing_seconds_count[5m]))",
            "{{service}}/{{stage}}")]),
        ("End-to-end latency, upload to verdict (p50/p95/p99)", "timeseries", "s", "",
         quantiles("genre_end_to_end_seconds", "", "end-to-end")),
        ("Songs in flight", "timeseries", "short", "Songs with chunks seen but no verdict yet.",
         [q("sum(genre_inflight_songs)", "in flight")]),
    ]),
    ("Classifier", [
        ("Batch size", "timeseries", "short", "Chunks per predict call.",
         quantiles("genre_classifier_batch_size", "", "batch")
         + [q("sum(rate(genre_classifier_batch_size_sum[5m])) / sum(rate(genre_classifier_batch_size_count[5m]))", "mean")]),
        ("Queue wait before predict (p50/p95/p99)", "timeseries", "s", "",
         quantiles("genre_classifier_queue_wait_seconds", "", "wait")),
        ("Classifier pods by device", "stat", "none", "1 per classifier pod, on the device its model runs on (CPU or GPU).",
         [q("sum by (device) (genre_classifier_device)", "{{device}}")]),
    ]),
    ("Errors", [
        ("Errors by service and kind", "timeseries", "ops", "",
         [q("sum by (service, kind) (rate(genre_errors_total[5m]))", "{{service}} {{kind}}")]),
        ("Dead-letter rate", "timeseries", "ops", "Records sent to the dead-letter topic per second, by the stage and the topic they came from.",
         [q("sum by (service, topic) (rate(genre_deadletter_total[5m]))", "{{service}} <- {{topic}}")]),
        ("Kafka reconnects (15 min)", "timeseries", "short", "",
         [q("sum by (service) (increase(genre_kafka_reconnects_total[15m]))", "{{service}}")]),
    ]),
    ("Verdicts", [
        ("Verdicts by genre", "timeseries", "ops", "Successful verdicts per second by genre.",
         [q('sum by (genre) (rate(genre_verdicts_total{status="ok"}[5m]))', "{{genre}}")]),
        ("Verdicts by genre (last hour)", "bargauge", "short", "",
         [q('sum by (genre) (increase(genre_verdicts_total{status="ok"}[1h]))', "{{genre}}")]),
        ("Verdicts by status", "timeseries", "ops", "ok vs error verdicts per second.",
         [q("sum by (status) (rate(genre_verdicts_total[5m]))", "{{status}}")]),
    ]),
]


def build() -> dict:
    panels: list[dict] = []
    pid = 1
    y = 0
    for row_title, row_panels in PANELS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        for i, (title, kind, unit, desc, targets) in enumerate(row_panels):
            w = 12
            panel = {
                "id": pid,
                "type": kind,
                "title": title,
                "description": desc,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": w, "x": (i % 2) * w, "y": y + (i // 2) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}}
                if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
                "targets": [dict(t, refId=chr(ord("A") + k), datasource=DATASOURCE) for k, t in enumerate(targets)],
            }
            panels.append(panel)
            pid += 1
        y += ((len(row_panels) + 1) // 2) * 8
    return {
        "uid": "genre-pipeline",
        "title": "Genre pipeline",
        "description": "Throughput, lag, latency, classifier batching, errors and verdicts of the genre recognition pipeline.",
        "tags": ["genre", "kafka"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT}")
