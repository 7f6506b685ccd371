"""Prometheus metrics of one app, through `prometheus_client` in a registry of its own.

A registry per app, not the library's global one: tests and tools build several apps in one process,
and each must count only its own requests.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format generate_latest writes


class Metrics:
    """Request counters, a latency histogram, queue gauges and the loaded model's identity.

    Args:
        gauges: name -> (help, function returning the current value), read at scrape time.
        info: labels of ``kronedge_model_info``.
    """

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]], info: dict[str, str]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("kronedge_requests", "HTTP requests by route, method and status.",
                                ("route", "method", "status"), registry=r)
        self.errors = Counter("kronedge_errors", "Requests answered with an error, by error code.", ("code",), registry=r)
        self.duration = Histogram("kronedge_request_duration_seconds", "Time from request to response.",
                                  buckets=LATENCY_BUCKETS_S, registry=r)
        self.inputs = Counter("kronedge_inputs", "Texts or pairs classified.", registry=r)
        self.rejected = Counter("kronedge_overload_rejections", "503 answers by reason (queue_full, predicted_wait, "
                                "expired, shutting_down).", ("reason",), registry=r)
        self.started = time.time()
        for name, (help_text, read) in gauges.items():
            Gauge(name, help_text, registry=r).set_function(read)
        Gauge("kronedge_uptime_seconds", "Seconds since start.", registry=r).set_function(lambda: time.time() - self.started)
        Info("kronedge_model", "The loaded model.", registry=r).info(info)

    def observe(self, route: str, method: str, status: int, seconds: float, n_inputs: int, code: Optional[str]) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if code:
            self.errors.labels(code).inc()
        self.duration.observe(seconds)
        if n_inputs:
            self.inputs.inc(n_inputs)

    def render(self) -> bytes:
        return generate_latest(self.registry)
