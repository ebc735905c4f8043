"""JSON values cached in Redis under a versioned key, all made stale at once by bumping the version.

Keys look like ``cartwright:<namespace>:v<version>:s<schema>:<name>``. A change that affects the cached values
calls ``invalidate`` (an ``INCR`` of the version) after its commit: the next read uses the new version and the
old entries are never read again; they expire on their own (the TTL is only a backstop for what nothing
announces). The version is read before building, so an invalidation racing with a build leaves the result under
the old version, where nobody reads it. ``schema`` changes with the cached value's shape, so a deploy never
reads what the previous release wrote.

Redis being down never breaks a page: reads fall through to ``build`` and a lost invalidation is logged.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.lib import metrics
from app.lib.breaker import breaker_for

log = structlog.get_logger()


class VersionedCache:
    def __init__(self, namespace: str, *, ttl_seconds: int, schema: int = 1) -> None:
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        self.schema = schema
        self.version_key = f"cartwright:{namespace}:version"

    async def get_or_build(self, redis: Redis | None, name: str, build: Callable[[], Awaitable[Any]]) -> Any:
        """The JSON value stored for ``name`` under the current version, built (and stored) when missing."""
        if redis is None or not breaker_for(redis).closed:
            return await build()
        try:
            version = int(await redis.get(self.version_key) or 0)
            key = f"cartwright:{self.namespace}:v{version}:s{self.schema}:{name}"
            raw = await redis.get(key)
        except RedisError as exc:
            log.warning("cache.unavailable", cache=self.namespace, error=type(exc).__name__)
            metrics.REDIS_ERRORS.labels("cache").inc()
            breaker_for(redis).trip()
            return await build()
        if raw is not None:
            return json.loads(raw)
        value = await build()
        try:
            await redis.set(key, json.dumps(value, default=str, separators=(",", ":")), ex=self.ttl_seconds)
        except RedisError as exc:
            log.warning("cache.store_failed", cache=self.namespace, error=type(exc).__name__)
            metrics.REDIS_ERRORS.labels("cache").inc()
            breaker_for(redis).trip()
        return value

    async def invalidate(self, redis: Redis | None) -> None:
        """Make every cached value stale at once. Call it after the change's commit."""
        if redis is None:
            return
        try:
            # A missing version (a new or flushed Redis) starts at a random number, not at 1: a process may still
            # hold values of the old "1" in memory (the page cache's LRU, app/server/page_cache.py).
            async with redis.pipeline(transaction=True) as pipe:
                pipe.set(self.version_key, secrets.randbelow(2**40), nx=True)
                pipe.incr(self.version_key)
                await pipe.execute()
        except RedisError as exc:  # the TTL still bounds how long a stale value can be served
            log.error("cache.invalidate_failed", cache=self.namespace, error=type(exc).__name__)
            metrics.REDIS_ERRORS.labels("cache").inc()
