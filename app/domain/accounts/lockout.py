"""Failed-sign-in throttling in Redis, along OWASP's guidance: slow the attacker down, never lock the owner out.

- Per (account, client IP) pair: from ``login_max_failures_account`` failures on, that pair must wait, and each
  further failure after a wait doubles it (15 min, 30 min, 1 h, … capped at a day). Other addresses, the owner's
  included, still sign in.
- Per client IP across accounts (credential stuffing / password spraying): ``login_max_failures_ip``.
- Per account across every IP (a distributed guess): at ``login_alert_failures`` within an hour the owner is
  emailed, once, with a way to reset the password; a password reset lifts every wait on the account.
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

# A pair's failure count outlives its waits, so the next failure after a wait doubles it.
PAIR_MEMORY_SECONDS = 24 * 60 * 60
MAX_WAIT_SECONDS = 24 * 60 * 60


def _digest(value: str) -> str:
    return hashlib.sha256(value.lower().encode()).hexdigest()[:32]


def _key(kind: str, *values: str) -> str:
    return f"cartwright:login-failures:{kind}:{':'.join(_digest(v) for v in values)}"


def pair_wait(failures: int, *, threshold: int, base_seconds: int) -> int:
    """How long a pair waits after its ``failures``-th failure: none below the threshold, then doubling."""
    if failures < threshold:
        return 0
    return min(base_seconds * (1 << min(failures - threshold, 16)), MAX_WAIT_SECONDS)


class LoginThrottle:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.window = settings.login_lockout_seconds
        self.max_pair = settings.login_max_failures_account
        self.max_ip = settings.login_max_failures_ip
        self.alert_at = settings.login_alert_failures

    async def check(self, email: str, ip: str) -> None:
        blocked_key, ip_key = _key("blocked", email, ip), _key("ip", ip)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.ttl(blocked_key)
            pipe.get(ip_key)
            pipe.ttl(ip_key)
            blocked_ttl, client, ip_ttl = await pipe.execute()
        waits = [int(blocked_ttl)] if int(blocked_ttl) > 0 else []
        if int(client or 0) >= self.max_ip:
            waits.append(max(int(ip_ttl), 1))
        if waits:
            wait = max(waits)
            minutes = -(-wait // 60)
            log.warning("login.throttled", ip=ip, account=_digest(email), wait_seconds=wait)
            msg = f"Too many failed sign-in attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            raise RateLimitedError(msg, retry_after=wait)

    async def record_failure(self, email: str, ip: str) -> bool:
        """Count a failure; True exactly once per window, when the account's failures across all IPs reach the
        alert threshold (the caller emails the owner)."""
        log.info("login.failed", ip=ip, account=_digest(email))
        pair_key, ip_key, account_key = _key("pair", email, ip), _key("ip", ip), _key("account", email)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(pair_key)
            pipe.expire(pair_key, PAIR_MEMORY_SECONDS)
            pipe.incr(ip_key)
            pipe.expire(ip_key, self.window)
            pipe.incr(account_key)
            pipe.expire(account_key, 3600, nx=True)  # an hour from the first failure
            # The pairs of this account, so a password reset can lift every wait.
            pipe.sadd(_key("pairs", email), _digest(ip))
            pipe.expire(_key("pairs", email), PAIR_MEMORY_SECONDS)
            pair_failures, _, _, _, account_failures, *_ = await pipe.execute()
        if wait := pair_wait(int(pair_failures), threshold=self.max_pair, base_seconds=self.window):
            await self.redis.set(_key("blocked", email, ip), 1, ex=wait)
        return int(account_failures) == self.alert_at

    async def record_success(self, email: str, ip: str) -> None:
        await self.redis.delete(_key("pair", email, ip), _key("blocked", email, ip))

    async def clear_account(self, email: str) -> None:
        """After a password reset: every pair's count and wait, and the account's count, are gone."""
        prefix = "cartwright:login-failures"
        ips = await self.redis.smembers(_key("pairs", email))
        account = _digest(email)
        members = [ip.decode() if isinstance(ip, bytes) else str(ip) for ip in ips]
        keys = [f"{prefix}:{kind}:{account}:{ip}" for ip in members for kind in ("pair", "blocked")]
        await self.redis.delete(*keys, _key("account", email), _key("pairs", email))
