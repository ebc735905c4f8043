"""Is Stripe talking to us? The webhook health card and the admin alert banner.

Both read a handful of cheap aggregates over ``stripe_events`` (and ``orders`` for the silence rule). The banner is
on every admin page, so its answer is cached in Redis for ``ALERT_CACHE_SECONDS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.lib.settings import Settings

log = structlog.get_logger()

ALERT_CACHE_KEY = "cartwright:webhooks:alert"
ALERT_CACHE_SECONDS = 30
CATCH_UP_RESULT_KEY = "cartwright:stripe-catch-up:last"
# "Oldest unprocessed" on the card counts events still received/processing after this long.
STUCK_AFTER = timedelta(minutes=5)

_S = m.StripeEventStatus


@dataclass(frozen=True, slots=True)
class WebhookHealth:
    now: datetime
    last_received_at: datetime | None  # newest event delivered by the webhook itself
    last_any_at: datetime | None  # newest event from any source (webhook, catch-up, sync)
    events_last_hour: int
    processed_24h: int
    failed_24h: int
    oldest_unprocessed_at: datetime | None
    unprocessed_count: int
    last_catch_up: dict[str, Any] | None

    @property
    def failure_rate(self) -> float | None:
        done = self.processed_24h + self.failed_24h
        return self.failed_24h / done if done else None

    def ago(self, then: datetime | None) -> str:
        return ago(then, self.now)


def ago(then: datetime | None, now: datetime) -> str:
    """ "3 min ago", "2 h ago", "5 days ago": the card's relative times."""
    if then is None:
        return "never"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


async def _newest_received(db: AsyncSession, *, source: str | None = None) -> datetime | None:
    # Ordered by the UUIDv7 primary key, which grows with insertion time: an index walk, not a table scan.
    stmt = select(m.StripeEvent.received_at).order_by(m.StripeEvent.id.desc()).limit(1)
    if source is not None:
        stmt = stmt.where(m.StripeEvent.source == source)
    value: datetime | None = await db.scalar(stmt)
    return value


async def _counts_since(db: AsyncSession, since: datetime) -> dict[str, int]:
    rows = await db.execute(
        select(m.StripeEvent.status, func.count())
        .where(m.StripeEvent.received_at >= since)
        .group_by(m.StripeEvent.status)
    )
    return {str(status): int(count) for status, count in rows}


async def webhook_health(
    db: AsyncSession, redis: Redis | None, settings: Settings, *, now: datetime | None = None
) -> WebhookHealth:
    """The health card's figures: last event, events in the last hour, 24 h failure rate, oldest unprocessed."""
    now = now or datetime.now(UTC)
    last_hour = await _counts_since(db, now - timedelta(hours=1))
    day = await _counts_since(db, now - timedelta(hours=24))
    stuck = (
        m.StripeEvent.status.in_([_S.RECEIVED.value, _S.PROCESSING.value]),
        m.StripeEvent.received_at < now - STUCK_AFTER,
    )
    oldest = await db.scalar(select(func.min(m.StripeEvent.received_at)).where(*stuck))
    unprocessed = await db.scalar(select(func.count()).select_from(m.StripeEvent).where(*stuck)) or 0
    return WebhookHealth(
        now=now,
        last_received_at=await _newest_received(db, source="webhook"),
        last_any_at=await _newest_received(db),
        events_last_hour=sum(last_hour.values()),
        processed_24h=day.get(_S.PROCESSED.value, 0),
        failed_24h=day.get(_S.FAILED.value, 0),
        oldest_unprocessed_at=oldest,
        unprocessed_count=int(unprocessed),
        last_catch_up=await last_catch_up(redis),
    )


async def last_catch_up(redis: Redis | None) -> dict[str, Any] | None:
    if redis is None:
        return None
    try:
        raw = await redis.get(CATCH_UP_RESULT_KEY)
    except Exception:
        return None
    if not raw:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


async def compute_alert(db: AsyncSession, settings: Settings, *, now: datetime | None = None) -> str:
    """The banner's text, or "" when all is well.

    * Silence: no event from the webhook for ``webhook_silence_alert_minutes`` while orders were placed in that
      window (payments are happening, so Stripe should be talking).
    * Failures: more than ``webhook_failure_alert_rate`` of the last hour's finished events failed, once at least
      ``webhook_failure_alert_min_sample`` events finished.
    """
    now = now or datetime.now(UTC)
    window = timedelta(minutes=settings.webhook_silence_alert_minutes)
    last = await _newest_received(db, source="webhook")
    if last is None or last < now - window:
        orders = (
            await db.scalar(select(func.count()).select_from(m.Order).where(m.Order.created_at >= now - window)) or 0
        )
        if orders:
            silent = settings.webhook_silence_alert_minutes if last is None else int((now - last).total_seconds() // 60)
            plural = "s were" if orders != 1 else " was"
            return f"No Stripe event for {silent} minutes while {orders} order{plural} placed."
    counts = await _counts_since(db, now - timedelta(hours=1))
    failed = counts.get(_S.FAILED.value, 0)
    done = failed + counts.get(_S.PROCESSED.value, 0)
    if done >= settings.webhook_failure_alert_min_sample and failed / done > settings.webhook_failure_alert_rate:
        return f"Webhook failure rate {failed / done:.0%} in the last hour ({failed} of {done} events failed)."
    return ""


async def cached_alert(db: AsyncSession, redis: Redis | None, settings: Settings) -> str:
    """``compute_alert`` through a ~30 s Redis cache: every admin page asks for it."""
    if redis is not None:
        try:
            cached = await redis.get(ALERT_CACHE_KEY)
        except Exception:
            cached = None
        if cached is not None:
            return cached.decode() if isinstance(cached, bytes) else str(cached)
    message = await compute_alert(db, settings)
    if redis is not None:
        try:
            await redis.set(ALERT_CACHE_KEY, message, ex=ALERT_CACHE_SECONDS)
        except Exception:
            log.warning("webhook_alert.cache_failed")
    return message
