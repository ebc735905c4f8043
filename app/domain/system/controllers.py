"""Liveness and readiness probes for load balancers and the Docker HEALTHCHECK; the CSP violation reports."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from sqlalchemy import text

from app.domain.system import csp_reports
from app.lib.client_ip import client_ip
from app.lib.ratelimit import enforce_csp_report
from app.lib.runtime import Runtime


@get("/healthz", name="system:health", media_type=MediaType.TEXT, sync_to_thread=False)
def healthz() -> str:
    return "ok"


@get("/readyz", name="system:ready", media_type=MediaType.JSON)
async def readyz(runtime: NamedDependency[Runtime]) -> Response[dict[str, str]]:
    """Can this process take traffic? 200 while the database answers (within two seconds): it can then take
    Stripe's webhooks and serve the catalog, so a load balancer keeps it in rotation even with Redis down;
    ``"service": "degraded"`` then says sign-in and carts are out. 503 when the database does not answer."""

    async def database() -> None:
        async with runtime.db() as db:
            await db.execute(text("SELECT 1"))

    async def redis() -> None:
        await runtime.redis.ping()

    checks: dict[str, str] = {}
    for name, probe in (("database", database), ("redis", redis)):
        try:
            await asyncio.wait_for(probe(), timeout=2)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
    database_ok = checks["database"] == "ok"
    checks["webhooks"] = "ok" if database_ok else "unavailable"
    checks["service"] = "full" if database_ok and checks["redis"] == "ok" else "degraded"
    return Response(checks, status_code=200 if database_ok else 503)


@post("/csp-report", name="system:csp_report")
async def csp_report(request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[Any]:
    """Where browsers report what the Content-Security-Policy blocked (``report-uri``/``report-to``).

    Public and CSRF-exempt (a browser sends it, without our token); rate-limited per IP (``csp_report_ip``) before
    anything is read; at most 8 KiB, logged and counted.
    """
    await enforce_csp_report(request)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in csp_reports.CONTENT_TYPES:
        return Response("Send a CSP report (application/csp-report or application/reports+json).", status_code=415)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > csp_reports.MAX_REPORT_BYTES:
        return Response("That report is too large.", status_code=413)
    body = b""
    async for chunk in request.stream():  # a lying or absent Content-Length is cut off here
        body += chunk
        if len(body) > csp_reports.MAX_REPORT_BYTES:
            return Response("That report is too large.", status_code=413)
    try:
        violations = csp_reports.parse_reports(body, content_type)
    except csp_reports.ReportError:
        return Response("That is not a CSP report.", status_code=400)
    peer = request.client.host if request.client else None
    ip = client_ip(peer, request.headers.get("x-forwarded-for"), runtime.settings.trusted_proxies)
    await csp_reports.record(runtime.redis, violations, client_ip=ip)
    return Response(b"", status_code=204)
