"""Prometheus metrics every service exports (names are a contract with the dashboards).

All metrics carry a `service` label so one dashboard covers every stage.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The metric families of one service process, on a private registry."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("genre_messages_in", "Messages consumed", ["service", "topic"], registry=r)
        self.messages_out = Counter("genre_messages_out", "Messages produced", ["service", "topic"], registry=r)
        self.processing_seconds = Histogram(
            "genre_processing_seconds", "Time to process one message", ["service", "stage"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.errors = Counter("genre_errors", "Errors by kind", ["service", "kind"], registry=r)
        self.deadletters = Counter("genre_deadletter", "Records sent to the dead-letter topic", ["service", "topic"], registry=r)
        self.consumer_lag = Gauge(
            "genre_consumer_lag", "Records behind the partition end", ["service", "group", "topic", "partition"], registry=r
        )
        self.reconnects = Counter("genre_kafka_reconnects", "Broker connection losses recovered", ["service"], registry=r)
        self.song_seconds = Counter("genre_audio_seconds", "Seconds of audio processed", ["service"], registry=r)
        # classifier
        self.batch_size = Histogram(
            "genre_classifier_batch_size", "Chunks per predict call", ["service"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "genre_classifier_queue_wait_seconds", "Wait between arrival and predict", ["service"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.device = Gauge("genre_classifier_device", "1 for the device the model runs on", ["service", "device"], registry=r)
        self.queue_depth = Gauge(
            "genre_classifier_queue_depth", "Chunks waiting for the inference thread", ["service"], registry=r
        )
        self.backpressure = Counter(
            "genre_classifier_backpressure_pauses", "Times the consumer paused because the inference queue was full",
            ["service"], registry=r,
        )
        self.model_info = Gauge(
            "genre_classifier_model_info", "1 for the model version that new songs get", ["service", "version"], registry=r
        )
        self.model_reloads = Counter(
            "genre_classifier_model_reloads", "Model artifact reloads by result (ok, failed)", ["service", "result"],
            registry=r,
        )
        self.verdicts = Counter("genre_verdicts", "Verdicts by genre and status", ["service", "genre", "status"], registry=r)
        self.end_to_end = Histogram(
            "genre_end_to_end_seconds", "From upload to verdict", ["service"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.inflight_songs = Gauge("genre_inflight_songs", "Songs with chunks seen but no verdict", ["service"], registry=r)
        # Export the reconnect counter at 0 from the start: a labelled child exists only once
        # touched, and the dashboard's reconnect panel and the GenreKafkaReconnecting alert
        # would otherwise have no series at all on a healthy pipeline.
        self.reconnects.labels(service)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)
            logger.info("metrics on :%d/metrics", port)
