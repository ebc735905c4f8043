"""Liveness and readiness probes for load balancers and the Docker HEALTHCHECK."""

from __future__ import annotations

import asyncio

from litestar import MediaType, Response, get
from litestar.di import NamedDependency
from sqlalchemy import text

from app.lib.runtime import Runtime


@get("/healthz", name="system:health", media_type=MediaType.TEXT, sync_to_thread=False)
def healthz() -> str:
    return "ok"


@get("/readyz", name="system:ready", media_type=MediaType.JSON)
async def readyz(runtime: NamedDependency[Runtime]) -> Response[dict[str, str]]:
    """200 when the database and Redis both answer within two seconds, else 503 with what failed."""

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
    ready = all(v == "ok" for v in checks.values())
    return Response(checks, status_code=200 if ready else 503)
