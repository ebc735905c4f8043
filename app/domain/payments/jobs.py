"""Worker side of the webhook: process one stored event; sweep events a worker never picked up."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from saq.types import Context
from sqlalchemy import or_, select

from app.db import models as m
from app.domain.payments.context import HandlerContext
from app.domain.payments.handlers import dispatch
from app.domain.payments.webhooks import enqueue_event_job
from app.lib.runtime import Runtime

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
        # SAQ cancels a handler that outlives the job's timeout (and on shutdown): say so on the row. Shielded:
        # SAQ cancels once more if the task takes over a second to stop.
        error = "CancelledError: stopped by the worker (job timeout or shutdown)"
        await asyncio.shield(_mark_failed(runtime, event_id, error, started))
        raise
    except Exception as exc:
        await _mark_failed(runtime, event_id, f"{type(exc).__name__}: {exc}", started)
        log.warning("stripe_event.failed", event_id=event_id, error=str(exc))
        raise  # SAQ retries with backoff; the row shows the error meanwhile
    async with runtime.db() as db:
        row = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == event_id))
        if row is not None:
            row.status = m.StripeEventStatus.PROCESSED.value
            row.last_error = ""
            row.processed_at = datetime.now(UTC)
            row.duration_ms = int((time.perf_counter() - started) * 1000)
            await db.commit()
    return {"processed": event_id}


async def _mark_failed(runtime: Runtime, event_id: str, error: str, started: float) -> None:
    async with runtime.db() as db:
        row = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == event_id))
        if row is not None:
            row.status = m.StripeEventStatus.FAILED.value
            row.last_error = error[:4000]
            row.duration_ms = int((time.perf_counter() - started) * 1000)
            await db.commit()


async def sweep_stripe_events(ctx: Context) -> dict[str, int]:
    """Cron: enqueue stored events no worker has finished (Redis was down, or a worker died mid-job)."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
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
    queue = ctx["worker"].queue
    for stripe_id in ids:
        await enqueue_event_job(queue, stripe_id)
    return {"requeued": len(ids)}
