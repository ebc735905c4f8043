"""The dashboard's Redis cache: one key per range and access level, under a version that every event which
changes a figure bumps (``invalidate``). Old versions are never read again and expire on their own."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger()

VERSION_KEY = "cartwright:analytics:version"
KEY_PREFIX = "cartwright:analytics:v"
# Change when the cached value's shape changes: a deploy never reads what the previous release wrote.
SCHEMA = 1
# A backstop for what no hook announces (a customer registering, credits spent on a booking): at worst this old.
TTL_SECONDS = 300


async def invalidate(redis: Redis | None) -> None:
    """Make every cached dashboard stale. Called after the commit of each change the figures depend on."""
    if redis is None:
        return
    try:
        await redis.incr(VERSION_KEY)
    except RedisError:
        # The cache entries expire after TTL_SECONDS anyway; a lost bump must not fail a payment or a mirror.
        log.warning("analytics.invalidate_failed", exc_info=True)


async def cached(redis: Redis, parts: tuple[str, ...], compute: Callable[[], Awaitable[dict[str, Any]]]) -> Any:
    """The cached JSON value for ``parts`` under the current version, computing and storing it when missing.

    The version is read before computing: an invalidation racing with the computation leaves the result under
    the old version, where nobody reads it again.
    """
    try:
        version = int(await redis.get(VERSION_KEY) or 0)
        key = f"{KEY_PREFIX}{version}:s{SCHEMA}:{':'.join(parts)}"
        raw = await redis.get(key)
    except RedisError:
        log.warning("analytics.cache_unavailable", exc_info=True)
        return await compute()
    if raw is not None:
        return json.loads(raw)
    value = await compute()
    try:
        await redis.set(key, json.dumps(value, separators=(",", ":")), ex=TTL_SECONDS)
    except RedisError:
        log.warning("analytics.cache_store_failed", exc_info=True)
    return value
