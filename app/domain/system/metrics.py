"""``GET /metrics``: Prometheus's scrape, open only to the monitoring network or a bearer token.

Anybody else gets a plain 404: the figures (order rates, failures, queue depth) are business data, and the
route's existence is nobody else's business either.
"""

from __future__ import annotations

import hmac
import shutil
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from saq import Queue
from saq.utils import now
from sqlalchemy import func, select

from app.db import models as m
from app.lib import metrics
from app.lib.client_ip import is_trusted_proxy
from app.lib.exceptions import NotFoundError
from app.lib.runtime import Runtime


def allowed(request: Request[Any, Any, Any], runtime: Runtime) -> bool:
    settings = runtime.settings
    token = settings.metrics_token
    sent = request.headers.get("authorization", "")
    if token and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return True
    ip = str(request.scope.get("state", {}).get("client_ip") or (request.client.host if request.client else ""))
    return bool(ip) and is_trusted_proxy(ip, settings.metrics_allow)


async def oldest_queued_age(queue: Queue) -> float:
    """Seconds the next job to run has been waiting (0 when nothing waits). SAQ dequeues from the list's head."""
    redis = queue.redis  # type: ignore[attr-defined]
    job_key = await redis.lindex(queue.namespace("queued"), 0)  # type: ignore[attr-defined]
    if job_key is None:
        return 0.0
    raw = await redis.get(job_key)
    job = queue.deserialize(raw) if raw else None
    if job is None or not job.queued:
        return 0.0
    return max(0.0, (now() - job.queued) / 1000)


def storage_free_ratio(path: Path) -> float | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.free / usage.total if usage.total else None


async def snapshot(runtime: Runtime, queue: Queue) -> dict[str, tuple[str, float]]:
    values: dict[str, tuple[str, float]] = {}
    family = list(getattr(queue, "family", {queue.name: queue}).values())
    try:
        values["cartwright_queue_jobs_queued"] = (
            "Jobs waiting, all queues",
            float(sum([await q.count("queued") for q in family])),
        )
        values["cartwright_queue_jobs_active"] = (
            "Jobs running now, all queues",
            float(sum([await q.count("active") for q in family])),
        )
        values["cartwright_queue_oldest_job_age_seconds"] = (
            "How long the longest-waiting next job has waited, any queue",
            max([await oldest_queued_age(q) for q in family]),
        )
    except Exception:
        metrics.REDIS_ERRORS.labels("metrics").inc()
    async with runtime.db() as db:
        backlog = await db.scalar(
            select(func.count()).select_from(m.EmailMessage).where(m.EmailMessage.status == m.EmailStatus.QUEUED)
        )
        failed = await db.scalar(
            select(func.count()).select_from(m.StripeEvent).where(m.StripeEvent.status == m.StripeEventStatus.FAILED)
        )
    values["cartwright_outbox_backlog"] = ("Emails written and not yet sent", float(backlog or 0))
    if runtime.settings.storage_is_local and (free := storage_free_ratio(runtime.settings.storage_dir)) is not None:
        values["cartwright_upload_disk_free_ratio"] = ("Free share of the upload disk (local storage)", free)
    values["cartwright_stripe_events_failed"] = ("Stripe events whose last attempt failed", float(failed or 0))
    return values


@get("/metrics", name="system:metrics", include_in_schema=False)
async def metrics_endpoint(request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[bytes]:
    if not allowed(request, runtime):
        raise NotFoundError()
    queue: Queue = request.app.state.queue
    body = metrics.render(await snapshot(runtime, queue))
    return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})
