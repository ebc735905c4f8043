"""Worker side of the Stripe mirror of products: retry a failed sync; sweep products whose sync never ran."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import stripe
import structlog
from saq import Queue
from saq.types import Context
from sqlalchemy import select

from app.db import models as m
from app.domain.catalog.cache import invalidate_catalog
from app.domain.catalog.stock_holds import release_expired
from app.domain.catalog.stripe_sync import ProductStripeSync
from app.lib.runtime import Runtime

log = structlog.get_logger()

SYNC_JOB = "sync_product_to_stripe"
SWEEP_AFTER = timedelta(minutes=1)


async def enqueue_product_sync(queue: Queue, product_id: UUID) -> None:
    # The key makes a second enqueue while one waits a no-op.
    await queue.enqueue(
        SYNC_JOB,
        key=f"product-sync:{product_id}",
        product_id=str(product_id),
        timeout=60,
        retries=8,
        retry_delay=5.0,
        retry_backoff=True,
    )


async def sync_product_to_stripe(ctx: Context, *, product_id: str) -> dict[str, Any]:
    """Make Stripe match the product (idempotent; SAQ retries on failure)."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    async with runtime.db() as db:
        product = await db.get(m.Product, UUID(product_id))
        if product is None:
            return {"skipped": True}
        await ProductStripeSync(db, runtime.stripe).ensure(product)
        return {"stripe_product_id": product.stripe_product_id, "stripe_price_id": product.stripe_price_id}


async def sweep_unsynced_products(ctx: Context) -> dict[str, Any]:
    """Enqueue a sync for products changed over a minute ago and still not mirrored (an enqueue that failed)."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    queue = ctx["worker"].queue
    cutoff = datetime.now(UTC) - SWEEP_AFTER
    async with runtime.db() as db:
        ids = list(
            await db.scalars(
                select(m.Product.id)
                .where(m.Product.stripe_synced_at.is_(None), m.Product.updated_at < cutoff)
                .limit(200)
            )
        )
    for product_id in ids:
        await enqueue_product_sync(queue, product_id)
    return {"enqueued": len(ids)}


async def sync_now_or_later(runtime: Runtime, queue: Queue | None, product_id: UUID) -> bool:
    """Sync right after a save (the admin sees the result); on any Stripe failure leave it to the job.
    Returns whether Stripe is in sync now."""
    try:
        async with runtime.db() as db:
            product = await db.get(m.Product, product_id)
            if product is None:
                return True
            await ProductStripeSync(db, runtime.stripe).ensure(product)
    except stripe.StripeError as exc:
        log.warning("catalog.stripe_sync_deferred", product_id=str(product_id), error=type(exc).__name__)
        if queue is not None:
            try:
                await enqueue_product_sync(queue, product_id)
            except Exception as enqueue_error:
                log.warning("catalog.stripe_sync_enqueue_failed", error=type(enqueue_error).__name__)
        return False
    return True


async def release_expired_stock_holds(ctx: Context) -> dict[str, int]:
    """Cron (every minute): give back the units of stock holds whose order was not paid in time. Idempotent."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    async with runtime.db() as db:
        released = await release_expired(db)
    if released:
        await invalidate_catalog(runtime.redis)  # the shop shows "N left": N just went up
    return {"released": released}
