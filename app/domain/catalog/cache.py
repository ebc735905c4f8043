"""The public catalog's data (plain JSON product and category views, never rendered HTML: pages carry CSRF tokens
and the visitor's header) cached in Redis. Every admin change to a product or category, and a stock change at
fulfilment, calls ``invalidate_catalog`` after its commit, so public pages show it on the very next request."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from app.lib.versioned_cache import VersionedCache

CATALOG_CACHE = VersionedCache("catalog", ttl_seconds=10 * 60)


async def cached(redis: Redis | None, name: str, params: dict[str, Any], build: Callable[[], Awaitable[Any]]) -> Any:
    """The JSON value for ``name``/``params`` (a page and its query) under the current catalog version."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return await CATALOG_CACHE.get_or_build(redis, f"{name}:{digest}", build)


async def invalidate_catalog(redis: Redis | None) -> None:
    """Make every cached catalog entry stale at once. Call it after the change's commit."""
    await CATALOG_CACHE.invalidate(redis)
