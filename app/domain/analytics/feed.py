"""The live activity feed: what a change looks like as a feed item, and announcing changes after their commit
(bump the dashboard cache's version, publish the items on the live feed's channel of Litestar Channels).

Called from the one place each change happens: order paid and refunds (``app/domain/orders/fulfilment.py``),
subscriptions and invoices mirrored (``app/domain/subscriptions/services.py`` and ``events.py``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import structlog
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Queue
from saq.queue.redis import RedisQueue

from app.db import models as m
from app.domain.analytics import cache

log = structlog.get_logger()


def channel(redis: Redis) -> str:
    """The live feed's channel on ``redis``. Pub/Sub channels are server-wide, not per database, so the name
    carries the database number: two shops (staging and production, or two test runs) on one Redis server with
    different databases would otherwise show each other's orders on their dashboards."""
    return f"cartwright:analytics:db{redis.connection_pool.connection_kwargs.get('db', 0)}"


def redis_of(queue: Queue | None) -> Redis | None:
    """The Redis behind the job queue: services that hold a queue reach the cache and the channel through it."""
    return queue.redis if isinstance(queue, RedisQueue) else None


async def announce(redis: Redis | None, items: list[dict[str, Any]] | None = None) -> None:
    """After a commit that changed figures: invalidate the cached dashboards, then push ``items`` to open ones.

    Never raises: a payment or a mirror is not undone because Redis hiccupped (the cache expires on its own).
    """
    if redis is None:
        return
    await cache.invalidate(redis)
    if not items:
        return
    backend = RedisChannelsPubSubBackend(redis=redis)
    try:
        for item in items:
            await backend.publish(json.dumps(item).encode(), [channel(redis)])
    except RedisError:
        log.warning("analytics.publish_failed", exc_info=True)


def _item(kind: str, at: datetime, title: str, who: str, amount: int, currency: str, order_id: str) -> dict[str, Any]:
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    return {
        "kind": kind,  # order | refund | subscription
        "at": at.isoformat(),
        "when": at.strftime("%b %d, %H:%M UTC"),
        "title": title,
        "who": who,
        "amount": amount,  # removed before it reaches a viewer without money access
        "currency": currency,
        "order_id": order_id,
    }


def order_item(order: m.Order) -> dict[str, Any]:
    at = order.paid_at or order.created_at
    return _item("order", at, f"Order #{order.number} paid", order.email, order.total, order.currency, str(order.id))


def refund_item(refund: m.Refund, number: int) -> dict[str, Any]:
    title = f"Refund on order #{number}"
    return _item("refund", refund.created_at, title, "", -refund.amount, refund.currency, str(refund.order_id))


MOVEMENT_TITLES = {
    "new": "New subscriber",
    "expansion": "Subscription upgraded",
    "contraction": "Subscription downgraded",
    "churn": "Subscription ended",
    "reactivation": "Subscriber came back",
}


def movement_item(kind: str, delta: int, currency: str, email: str, at: datetime) -> dict[str, Any]:
    return _item("subscription", at, MOVEMENT_TITLES.get(kind, kind), email, delta, currency, "")
