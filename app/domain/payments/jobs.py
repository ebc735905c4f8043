"""Worker side of the webhook: process one stored event; sweep events a worker never picked up."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from saq.types import Context
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.payments.catch_up import catch_up
from app.domain.payments.handlers import dispatch
from app.domain.payments.webhooks import enqueue_event_job
from app.lib import metrics
from app.lib.handler_context import HandlerContext
from app.lib.runtime import Runtime
from app.lib.settings import Settings

log = structlog.get_logger()

# An event still `received` this long after arriving was never enqueued (Redis was down); one `processing` this
# long is from a worker that died mid-job (SAQ's own sweep retries those too; this is the backstop).
SWEEP_RECEIVED_AFTER = timedelta(seconds=30)
SWEEP_PROCESSING_AFTER = timedelta(minutes=5)


async def process_stripe_event(ctx: Context, *, event_id: str) -> dict[str, Any]:
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    queue = ctx["worker"].queue
    async with runtime.db() as db:
        row = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == event_id))
        if row is None or row.status in {m.StripeEventStatus.PROCESSED, m.StripeEventStatus.IGNORED}:
            return {"skipped": True}
        row.status = m.StripeEventStatus.PROCESSING.value
        row.attempts += 1
        payload = row.payload
        await db.commit()
    started = time.perf_counter()
    try:
        async with runtime.db() as db:
            await dispatch(HandlerContext(db, runtime.stripe, runtime.settings, queue, runtime.redis), payload)
    except asyncio.CancelledError:
        if getattr(ctx["worker"], "stopping", lambda: False)():
            # A shutdown past its grace period: SAQ puts the job back on the queue and the next worker runs it
            # (the handler's writes roll back with its transaction), so the event has not failed.
            log.warning("stripe_event.requeued_on_shutdown", event_id=event_id)
            raise
        # SAQ cancels a handler that outlives the job's timeout: say so on the row. Shielded:
        # SAQ cancels once more if the task takes over a second to stop.
        error = "CancelledError: stopped by the worker (job timeout or shutdown)"
        await asyncio.shield(_mark_failed(runtime, event_id, error, started))
        raise
    except Exception as exc:
        await _mark_failed(runtime, event_id, f"{type(exc).__name__}: {exc}", started)
        log.warning("stripe_event.failed", event_id=event_id, error=str(exc))
        metrics.STRIPE_EVENTS_PROCESSED.labels(str(payload.get("type", "")), "failed").inc()
        raise  # SAQ retries with backoff; the row shows the error meanwhile
    async with runtime.db() as db:
        row = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == event_id))
        if row is not None:
            row.status = m.StripeEventStatus.PROCESSED.value
            row.last_error = ""
            row.processed_at = datetime.now(UTC)
            row.duration_ms = int((time.perf_counter() - started) * 1000)
            await db.commit()
    metrics.STRIPE_EVENTS_PROCESSED.labels(str(payload.get("type", "")), "processed").inc()
    if created := int(payload.get("created") or 0):  # Stripe's clock to ours: delivery, queue and handling
        metrics.STRIPE_EVENT_LAG.observe(max(0.0, time.time() - created))
    return {"processed": event_id}


async def _mark_failed(runtime: Runtime, event_id: str, error: str, started: float) -> None:
    async with runtime.db() as db:
        row = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == event_id))
        if row is not None:
            row.status = m.StripeEventStatus.FAILED.value
            row.last_error = error[:4000]
            row.duration_ms = int((time.perf_counter() - started) * 1000)
            await db.commit()


def retry_backoff(attempts: int, base_seconds: int) -> timedelta:
    """How long a failed event waits after its last attempt before the sweeper tries it again.

    Exponential in the attempts made so far (base, 2 x base, 4 x base, …), capped at six hours: a transient failure
    (Stripe unreachable, a row another transaction had not committed yet) heals within minutes, a persistent one
    stops hammering and ends in `failed` for an admin.
    """
    # Capped in whole seconds before building the timedelta: with a high STRIPE_EVENT_MAX_ATTEMPTS the uncapped
    # wait (60 s x 2^48) is beyond timedelta's range, and the OverflowError would stop the whole sweep.
    seconds = base_seconds * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, int(MAX_RETRY_BACKOFF.total_seconds())))


MAX_RETRY_BACKOFF = timedelta(hours=6)


async def sweep_stripe_events(ctx: Context) -> dict[str, int]:
    """Cron: enqueue stored events no worker has finished (Redis was down, or a worker died mid-job), and retry
    failed events whose backoff has passed while they have attempts left."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    queue = ctx["worker"].queue
    now = datetime.now(UTC)
    async with runtime.db() as db:
        ids = list(
            await db.scalars(
                select(m.StripeEvent.stripe_id)
                .where(
                    or_(
                        (m.StripeEvent.status == m.StripeEventStatus.RECEIVED.value)
                        & (m.StripeEvent.received_at < now - SWEEP_RECEIVED_AFTER),
                        (m.StripeEvent.status == m.StripeEventStatus.PROCESSING.value)
                        & (m.StripeEvent.updated_at < now - SWEEP_PROCESSING_AFTER),
                    )
                )
                .order_by(m.StripeEvent.received_at)
                .limit(500)
            )
        )
        due = await failed_events_due(db, runtime.settings, now)
    for stripe_id in ids:
        await enqueue_event_job(queue, stripe_id)
    retried = 0
    for stripe_id in due:
        # One attempt per sweep: the backoff is ours, not SAQ's. A job still scheduled for SAQ's own retry keeps
        # its key, so this enqueue is a no-op for it.
        retried += await enqueue_event_job(queue, stripe_id, retries=1)
    return {"requeued": len(ids), "retried": retried}


async def failed_events_due(db: AsyncSession, settings: Settings, now: datetime) -> list[str]:
    """Failed events with attempts left whose backoff (from their last attempt) has passed, oldest first."""
    base = settings.stripe_event_retry_base_seconds
    rows = await db.execute(
        select(m.StripeEvent.stripe_id, m.StripeEvent.attempts, m.StripeEvent.updated_at)
        .where(
            m.StripeEvent.status == m.StripeEventStatus.FAILED.value,
            m.StripeEvent.attempts < settings.stripe_event_max_attempts,
            # The shortest backoff, in SQL; the per-row one below.
            m.StripeEvent.updated_at < now - timedelta(seconds=base),
        )
        .order_by(m.StripeEvent.updated_at)
        .limit(500)
    )
    return [stripe_id for stripe_id, attempts, last in rows if last + retry_backoff(attempts, base) <= now]


async def stripe_catch_up(ctx: Context) -> dict[str, Any]:
    """Cron (every 5 minutes): store and process the Stripe events whose webhook never arrived."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    result = await catch_up(runtime, ctx["worker"].queue)
    return {"ran": result.ran, "pages": result.pages, "stored": result.stored, "complete": result.complete}
