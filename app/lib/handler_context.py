"""What a Stripe event handler is given: one database session and the process's Stripe client, queue and Redis."""

from __future__ import annotations

from dataclasses import dataclass

import stripe
from redis.asyncio import Redis
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.settings import Settings


@dataclass(frozen=True, slots=True)
class HandlerContext:
    db: AsyncSession
    stripe: stripe.StripeClient
    settings: Settings
    queue: Queue | None
    redis: Redis  # caches to invalidate when a handler changes what they hold (stock, dashboard figures)
