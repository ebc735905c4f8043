"""Failed-sign-in throttling in Redis, along OWASP's guidance: slow the attacker down, never lock the owner out.

- Per (account, client IP) pair: after ``login_max_failures_account`` failures that pair waits out the window
  (each failure restarts it). Other addresses, the owner's included, still sign in.
- Per client IP across accounts (credential stuffing / password spraying): ``login_max_failures_ip``.
Counting failures for addresses that have no account too means the throttle says nothing about which emails
exist. Keys hold hashes, never addresses.
"""

from __future__ import annotations

import hashlib

import structlog
from redis.asyncio import Redis

from app.lib.exceptions import RateLimitedError
from app.lib.settings import Settings

log = structlog.get_logger()


def _digest(value: str) -> str:
    return hashlib.sha256(value.lower().encode()).hexdigest()[:32]


def _key(kind: str, *values: str) -> str:
    return f"cartwright:login-failures:{kind}:{':'.join(_digest(v) for v in values)}"


class LoginThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.window = settings.login_lockout_seconds
        self.max_pair = settings.login_max_failures_account
        self.max_ip = settings.login_max_failures_ip

    async def check(self, email: str, ip: str) -> None:
        pair_key, ip_key = _key("pair", email, ip), _key("ip", ip)
        pair, client = await self.redis.mget(pair_key, ip_key)
        if int(pair or 0) >= self.max_pair or int(client or 0) >= self.max_ip:
            ttl = max(await self.redis.ttl(pair_key), await self.redis.ttl(ip_key), 60)
            minutes = -(-ttl // 60)
            log.warning("login.throttled", ip=ip, account=_digest(email))
            msg = f"Too many failed sign-in attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            raise RateLimitedError(msg)

    async def record_failure(self, email: str, ip: str) -> None:
        log.info("login.failed", ip=ip, account=_digest(email))
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in (_key("pair", email, ip), _key("ip", ip)):
                pipe.incr(key)
                pipe.expire(key, self.window)
            await pipe.execute()

    async def record_success(self, email: str, ip: str) -> None:
        await self.redis.delete(_key("pair", email, ip))
