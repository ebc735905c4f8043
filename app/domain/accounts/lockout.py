"""Failed-login counters in Redis, per account and per client IP, with a lockout window.

Counting failures for addresses that have no account too means the lockout says nothing about which emails exist.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from app.lib.exceptions import RateLimitedError
from app.lib.settings import Settings


def _key(kind: str, value: str) -> str:
    # Hash so the keyspace holds no email addresses.
    return f"cartwright:login-failures:{kind}:{hashlib.sha256(value.lower().encode()).hexdigest()[:32]}"


class LoginThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.window = settings.login_lockout_seconds
        self.max_account = settings.login_max_failures_account
        self.max_ip = settings.login_max_failures_ip

    async def check(self, email: str, ip: str) -> None:
        account, client = await self.redis.mget(_key("account", email), _key("ip", ip))
        if int(account or 0) >= self.max_account or int(client or 0) >= self.max_ip:
            ttl = max(await self.redis.ttl(_key("account", email)), await self.redis.ttl(_key("ip", ip)), 60)
            minutes = -(-ttl // 60)
            msg = f"Too many failed sign-in attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            raise RateLimitedError(msg)

    async def record_failure(self, email: str, ip: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in (_key("account", email), _key("ip", ip)):
                pipe.incr(key)
                pipe.expire(key, self.window)  # each failure extends the window: backoff while attacks continue
            await pipe.execute()

    async def record_success(self, email: str) -> None:
        await self.redis.delete(_key("account", email))
