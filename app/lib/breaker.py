"""A circuit breaker for Redis's optional uses (caches, rate limits): after a failure, skip Redis for a while.

A hung Redis costs each call its whole socket timeout; a page that asks Redis twice (cache version, then the
value) would wait twice per request. Once a call fails, these callers go straight to the database for
``cooldown`` seconds, then try Redis again. Sessions do not use it: a signed-in visitor without Redis gets a clear
503 (app/server/errors.py), and is back the moment Redis answers.
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

from redis.asyncio import Redis


class Breaker:
    def __init__(self, cooldown: float = 5.0) -> None:
        self.cooldown = cooldown
        self._open_until = 0.0

    @property
    def closed(self) -> bool:
        """True when Redis may be tried."""
        return time.monotonic() >= self._open_until

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.cooldown


_breakers: WeakKeyDictionary[Redis, Breaker] = WeakKeyDictionary()


def breaker_for(redis: Redis) -> Breaker:
    """The breaker of one Redis client: every optional caller of that client shares what its last failure taught
    (one client per process in the app; a test's own runtime has its own)."""
    breaker = _breakers.get(redis)
    if breaker is None:
        breaker = _breakers[redis] = Breaker()
    return breaker
