"""The dashboard's Redis cache: one entry per range and access level, made stale by every event that changes a
figure (``invalidate``, called after that event's commit)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from app.lib.versioned_cache import VersionedCache

# TTL: a backstop for what no hook announces (a customer registering, credits spent on a booking): at worst this
# old. Bump the schema when the cached value's shape changes.
ANALYTICS_CACHE = VersionedCache("analytics", ttl_seconds=300, schema=2)  # 2: Stripe fees


async def invalidate(redis: Redis | None) -> None:
    """Make every cached dashboard stale. Called after the commit of each change the figures depend on."""
    await ANALYTICS_CACHE.invalidate(redis)


async def cached(redis: Redis, parts: tuple[str, ...], compute: Callable[[], Awaitable[dict[str, Any]]]) -> Any:
    """The cached JSON value for ``parts`` under the current version, computing and storing it when missing."""
    return await ANALYTICS_CACHE.get_or_build(redis, ":".join(parts), compute)
