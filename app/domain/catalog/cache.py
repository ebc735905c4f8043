"""The public catalog's data cached in Redis under a versioned key, invalidated by bumping the version.

Keys look like ``cartwright:catalog:v<version>:<page>:<hash of the query>``. Every admin change to a product or
category, and a stock change at fulfilment, calls ``invalidate_catalog`` (an ``INCR`` of the version) after its
commit: the next request reads under the new version, so public pages show the change on the very next request,
and the old entries simply expire (the TTL is only a backstop). What is cached is plain JSON (product and category
views), never rendered HTML: pages carry CSRF tokens and the visitor's header.

Redis being down never breaks the shop: reads fall through to the database and invalidation is logged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger()

VERSION_KEY = "cartwright:catalog:version"
TTL_SECONDS = 10 * 60


def _key(version: int, name: str, params: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return f"cartwright:catalog:v{version}:{name}:{digest}"


async def cached(redis: Redis | None, name: str, params: dict[str, Any], build: Callable[[], Awaitable[Any]]) -> Any:
    """The JSON value for ``name``/``params`` under the current version, built (and stored) when missing."""
    if redis is None:
        return await build()
    try:
        version = int(await redis.get(VERSION_KEY) or 0)
        key = _key(version, name, params)
        raw = await redis.get(key)
    except RedisError as exc:
        log.warning("catalog_cache.unavailable", error=type(exc).__name__)
        return await build()
    if raw is not None:
        return json.loads(raw)
    value = await build()
    try:
        await redis.set(key, json.dumps(value, default=str), ex=TTL_SECONDS)
    except RedisError as exc:
        log.warning("catalog_cache.unavailable", error=type(exc).__name__)
    return value


async def invalidate_catalog(redis: Redis | None) -> None:
    """Make every cached catalog entry stale at once. Call it after the change's commit."""
    if redis is None:
        return
    try:
        await redis.incr(VERSION_KEY)
    except RedisError as exc:  # the TTL still bounds how long a stale page can be served
        log.error("catalog_cache.invalidate_failed", error=type(exc).__name__)
