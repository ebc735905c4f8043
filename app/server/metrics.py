"""Request metrics: count, latency by route template and status, requests in flight, database pool use."""

from __future__ import annotations

import time
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lib import metrics
from app.lib.redact import loggable_path

METRICS_PATH = "/metrics"


def _skip(scope: Scope) -> bool:
    # Static files are the CDN's business, and a scrape must not count itself.
    path: str = scope["path"]
    return path.startswith("/static/") or path == METRICS_PATH


class RequestMetricsMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    should_bypass_for_scope = staticmethod(_skip)

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.HTTP_IN_FLIGHT.inc()
        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            metrics.HTTP_IN_FLIGHT.dec()
            template = scope.get("path_template")  # set once Litestar matched a route
            route = loggable_path("", template) if template else metrics.ROUTE_UNMATCHED
            method = str(scope.get("method", ""))
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - start)
            checked_out = getattr(self.engine.pool, "checkedout", None)
            if callable(checked_out):
                metrics.DB_POOL_IN_USE.set(checked_out())


async def count_unrouted(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook: the router's own answers (404 for an unknown path, 405) never reach the middleware
    above, which runs inside a matched route; count them under one label, never one per probed URL."""
    routed = cast("dict[str, Any]", scope).get("route_handler") is not None  # set by the router on a match
    if message["type"] == "http.response.start" and not routed and not _skip(scope):
        method = str(scope.get("method", ""))
        metrics.HTTP_REQUESTS.labels(method, metrics.ROUTE_UNMATCHED, str(message["status"])).inc()
