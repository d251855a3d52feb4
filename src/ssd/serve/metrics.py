"""The server's Prometheus metrics (prometheus_client), in a registry of the app's own so that two apps in
one process (tests, Ray replicas) never mix their counts."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    def __init__(self, max_batch: int, queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ssd_requests", "HTTP requests answered", ["route", "method", "status"], registry=self.registry
        )
        self.errors = Counter(
            "ssd_request_errors",
            "HTTP requests answered with a 4xx or 5xx status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ssd_request_latency_seconds",
            "Time from a request's arrival to its answer",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ssd_batch_size",
            "Pictures per inference batch",
            buckets=sorted({1, 2, 4, 8, 16, 32, 64, max_batch}),
            registry=self.registry,
        )
        depth = Gauge(
            "ssd_queue_depth", "Pictures waiting for inference or inside it", registry=self.registry
        )
        depth.set_function(queue_depth)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
