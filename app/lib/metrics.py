"""Every figure the shop exports to Prometheus, defined once, and how ``/metrics`` renders them.

Process model: granian runs several web workers and SAQ runs in its own process. With
``PROMETHEUS_MULTIPROC_DIR`` set (the Docker image and ``cartwright dev`` set it, before anything imports
prometheus_client) every process writes its samples to files there and ``/metrics`` sums them, whichever web
worker answers the scrape. Without it (tests, a single process) the default in-process registry is used.

State that is not per process (queue depth, the oldest queued job, the outbox backlog) is read at scrape time by
the ``/metrics`` handler and rendered next to the process samples (:func:`render`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

# Before prometheus_client is imported: it picks its file-backed values when the directory is named, and writes
# there at the first sample, so the directory must exist (a fresh /tmp in a container, var/metrics in dev).
if _dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(_dir).mkdir(parents=True, exist_ok=True)

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Request latency: our pages answer in milliseconds; the tail targets are 15-20 ms; timeouts are seconds.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter("cartwright_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "cartwright_http_request_duration_seconds",
    "Time to answer an HTTP request (to the end of the body), by route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "cartwright_http_requests_in_flight", "HTTP requests being answered now", multiprocess_mode="livesum"
)
PAYMENTS = Counter(
    "cartwright_payments_total",
    "Order payment outcomes as Stripe reports them (reason: the decline code, or the error code)",
    ["outcome", "reason"],
)
CHECKOUT_STEPS = Counter(
    "cartwright_checkout_steps_total",
    "Checkout funnel: cart_add, checkout_view, order_placed, pay_page, paid",
    ["step"],
)
WEBHOOKS_RECEIVED = Counter(
    "cartwright_webhooks_received_total",
    "Stripe webhook deliveries (stored, duplicate, ignored, bad_signature)",
    ["result"],
)
STRIPE_EVENT_LAG = Histogram(
    "cartwright_stripe_event_lag_seconds",
    "From Stripe creating an event to our worker finishing it",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600),
)
STRIPE_EVENTS_PROCESSED = Counter(
    "cartwright_stripe_events_processed_total", "Stripe events handled by the worker", ["type", "result"]
)
JOB_DURATION = Histogram(
    "cartwright_job_duration_seconds",
    "SAQ job run time by function and final status",
    ["function", "status"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SYNC_RUNS = Counter("cartwright_sync_runs_total", "Full re-syncs from Stripe, by outcome", ["status"])
PAGE_CACHE = Counter(
    "cartwright_page_cache_total", "Anonymous catalog pages: hit, miss, not_modified (a 304)", ["result"]
)
REDIS_ERRORS = Counter("cartwright_redis_errors_total", "Redis calls that failed, by where", ["where"])
DB_POOL_IN_USE = Gauge(
    "cartwright_db_pool_connections_in_use",
    "Database connections checked out of this process's pool",
    multiprocess_mode="livesum",
)

ROUTE_UNMATCHED = "unmatched"  # a 404 for a path no route has: one label, not one per probed URL


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


class _Snapshot(Collector):
    """Gauges read at scrape time (queue depth, oldest job, outbox backlog), rendered as given."""

    def __init__(self, values: Mapping[str, tuple[str, float]]) -> None:
        self.values = values

    def collect(self) -> Iterator[Metric]:
        for name, (documentation, value) in self.values.items():
            yield GaugeMetricFamily(name, documentation, value=value)


def render(snapshot: Mapping[str, tuple[str, float]]) -> bytes:
    """The exposition text: every process's samples plus ``snapshot`` (name -> (help, value))."""
    registry = REGISTRY
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    extra = CollectorRegistry()
    extra.register(_Snapshot(snapshot))
    return generate_latest(registry) + generate_latest(extra)


def serve_worker_metrics(port: int, address: str = "0.0.0.0") -> bool:  # noqa: S104 (inside the container)
    """A worker container has no web server: serve its processes' samples on ``port``. False if another worker
    process of this container already does (they share the directory, so one server shows them all)."""
    registry = REGISTRY
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(port, address, registry)
    except OSError:
        return False
    return True


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges (in-flight requests, pool use) so they stop counting."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
