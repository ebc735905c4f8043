"""The rate-limit table and its Redis sliding windows: every limit the shop enforces is a row in ``POLICIES``.

Like the permission table, nothing else decides: a controller names the rows it needs
(``await enforce(request, "forgot_password_ip", "forgot_password_email", email=email)``) before any write or Stripe
call, and a refused request raises :class:`RateLimitedError` (429 with ``Retry-After``, see ``app.server.errors``).

Each row counts one scope (the client IP, the signed-in account, an email address, the cart's session, an order)
in a sliding log: a Redis sorted set of request times per key. One Lua script checks every row a request names
and, only if all allow it, records the request in all of them: one round trip, atomic across web workers, and a
refused request is not counted (a client that keeps hammering is held to the limit, not locked out for ever).
Keys hold an HMAC of the scope value, never an email address or IP in clear.

Overrides come from ``RATE_LIMITS`` (``name=limit/seconds,...``); ``RATE_LIMITS_ENABLED=false`` turns every check
off. If Redis is unreachable a check lets the request through and logs it: a shop that takes no orders while
Redis restarts is worse than a few minutes without limits.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from litestar import Request
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.lib import metrics
from app.lib.breaker import breaker_for
from app.lib.client_ip import client_ip
from app.lib.email_address import normalise_email
from app.lib.exceptions import RateLimitedError
from app.lib.settings import Settings

log = structlog.get_logger()

KEY_PREFIX = "cartwright:rl"
SESSION_RATE_KEY = "rate_limit_id"
MESSAGE = "You've tried that too many times. Please wait a little and try again later."


class Scope(StrEnum):
    IP = "ip"  # the client address (app.lib.client_ip: X-Forwarded-For only from TRUSTED_PROXIES)
    ACCOUNT = "account"  # the signed-in user
    SESSION = "session"  # the signed-in user, else this browser session
    EMAIL = "email"  # an address typed into a form (case-insensitive)
    ORDER = "order"  # one order


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    scope: Scope
    limit: int  # requests allowed ...
    window: int  # ... in any sliding window of this many seconds
    what: str  # what is counted, for docs/security.md


_DEFAULTS = (
    Policy("login_ip", Scope.IP, 30, 600, "sign-in attempts (failures also meet the per-account throttle)"),
    Policy("register_ip", Scope.IP, 10, 3600, "registrations"),
    Policy("register_email", Scope.EMAIL, 3, 3600, "sign-ups with one address (each emails its owner), from any IP"),
    Policy("verify_resend_account", Scope.ACCOUNT, 3, 3600, "confirmation emails re-sent to one account"),
    Policy("forgot_password_ip", Scope.IP, 10, 3600, "password-reset requests"),
    Policy("forgot_password_email", Scope.EMAIL, 3, 3600, "password-reset emails to one address, from any IP"),
    Policy("password_change_account", Scope.ACCOUNT, 5, 900, "password changes (each checks the current one)"),
    Policy("promo_apply_ip", Scope.IP, 30, 600, "promo codes tried"),
    Policy("promo_apply_session", Scope.SESSION, 10, 600, "promo codes tried by one account or browser session"),
    Policy("place_order_ip", Scope.IP, 10, 600, "orders placed"),
    Policy("payment_intent_ip", Scope.IP, 5, 600, "PaymentIntents created (orders, booking holds, memberships)"),
    Policy("pay_order", Scope.ORDER, 10, 600, "payment-page loads of one unpaid order (each asks Stripe)"),
    Policy("download_resend_ip", Scope.IP, 10, 3600, "download-link resend requests"),
    Policy("csp_report_ip", Scope.IP, 60, 60, "CSP violation reports"),
    Policy("unsafe_ip", Scope.IP, 120, 60, "POST/PUT/PATCH/DELETE requests of any kind (not the Stripe webhook)"),
)
POLICIES: dict[str, Policy] = {p.name: p for p in _DEFAULTS}

# KEYS: one sorted set per row. ARGV: now (ms), a unique member, then limit and window (ms) per key.
# Returns {0, 0} when recorded, else {milliseconds until the request would be allowed, index of the refusing row}.
_SLIDING_LOG = """
local now = tonumber(ARGV[1])
local wait, refused = 0, 0
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    -- allowed again once all but limit - 1 of the entries have left the window
    local entry = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local until_free = tonumber(entry[2]) + window - now
    if until_free > wait then wait, refused = until_free, i end
  end
end
if refused > 0 then return {math.ceil(wait), refused} end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 + 2 * i]))
end
return {0, 0}
"""


def configured_policies(settings: Settings) -> dict[str, Policy]:
    """The table with ``RATE_LIMITS`` applied; an unknown name is a start-up error, not a silent no-op."""
    policies = dict(POLICIES)
    for name, limit, window in settings.rate_limits:
        if name not in policies:
            known = ", ".join(sorted(POLICIES))
            raise ValueError(f"RATE_LIMITS names an unknown policy {name!r}; the policies are: {known}")
        base = policies[name]
        policies[name] = Policy(name, base.scope, limit, window, base.what)
    return policies


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds, >= 1 when refused
    policy: str = ""  # the row that refused


class RateLimiter:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.enabled = settings.rate_limits_enabled
        self.policies = configured_policies(settings)
        self._secret = settings.secret_key.encode()
        self._script = redis.register_script(_SLIDING_LOG)

    def key(self, policy: Policy, value: str) -> str:
        digest = hmac.new(self._secret, value.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]
        return f"{KEY_PREFIX}:{policy.name}:{digest}"

    async def hit(self, checks: Mapping[str, str], *, now: float | None = None) -> Decision:
        """Count one request against each ``{policy name: scope value}`` unless one of them is full.

        ``now`` (seconds since the epoch) is for tests of the window; the app passes nothing.
        """
        if not self.enabled or not checks:
            return Decision(allowed=True)
        rows = [(self.policies[name], value) for name, value in checks.items()]
        now_ms = int((time.time() if now is None else now) * 1000)
        args: list[Any] = [now_ms, f"{now_ms}-{secrets.token_hex(6)}"]
        for policy, _ in rows:
            args += [policy.limit, policy.window * 1000]
        if not breaker_for(self.redis).closed:
            return Decision(allowed=True)  # Redis failed a moment ago: don't make every request wait for it again
        try:
            wait_ms, refused = await self._script(keys=[self.key(p, v) for p, v in rows], args=args)
        except RedisError as exc:
            log.warning("rate_limit.unavailable", error=type(exc).__name__)
            metrics.REDIS_ERRORS.labels("rate_limit").inc()
            breaker_for(self.redis).trip()
            return Decision(allowed=True)
        if not refused:
            return Decision(allowed=True)
        return Decision(
            allowed=False, retry_after=max(1, math.ceil(int(wait_ms) / 1000)), policy=rows[refused - 1][0].name
        )


def request_ip(request: Request[Any, Any, Any], settings: Settings) -> str:
    return client_ip(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        settings.trusted_proxies,
    )


def _account_id(request: Request[Any, Any, Any]) -> str | None:
    user_id = getattr(request.scope.get("user"), "id", None)
    return str(user_id) if user_id is not None else None


def _session_id(request: Request[Any, Any, Any]) -> str:
    """The account when signed in, else a random id kept in this browser's session (set on first use)."""
    account = _account_id(request)
    if account is not None:
        return f"account:{account}"
    session = request.scope.get("session")
    if not isinstance(session, dict):
        return ""
    rate_id = session.get(SESSION_RATE_KEY)
    if not isinstance(rate_id, str):
        rate_id = session[SESSION_RATE_KEY] = secrets.token_hex(12)
    return f"session:{rate_id}"


def limiter_for(request: Request[Any, Any, Any]) -> RateLimiter:
    limiter: RateLimiter = request.app.state.runtime.rate_limiter
    return limiter


async def enforce(
    request: Request[Any, Any, Any], *policies: str, email: str | None = None, order: object | None = None
) -> None:
    """Count this request against ``policies``; raise :class:`RateLimitedError` (and log it) when one is full.

    Call it before any write or Stripe call, so a refused request leaves nothing half-done. A row whose scope has
    no value here (no account, an empty email) is skipped: the IP rows still hold.
    """
    limiter = limiter_for(request)
    if not limiter.enabled:
        return
    settings: Settings = request.app.state.runtime.settings
    ip = request_ip(request, settings)
    values: dict[Scope, str | None] = {
        Scope.IP: ip,
        Scope.ACCOUNT: _account_id(request),
        Scope.EMAIL: normalise_email(email) if email and email.strip() else None,  # as accounts are looked up
        Scope.ORDER: str(order) if order is not None else None,
    }
    checks: dict[str, str] = {}
    for name in policies:
        scope = limiter.policies[name].scope
        value = _session_id(request) if scope is Scope.SESSION else values[scope]
        if value:
            checks[name] = value
    decision = await limiter.hit(checks)
    if not decision.allowed:
        # A fresh logger each time (not the cached module one): rare, and tests can capture it.
        structlog.get_logger("cartwright.ratelimit").warning(
            "rate_limit.hit",
            policy=decision.policy,
            ip=ip,
            account=_account_id(request),
            # The route's template (/reset-password/{token:str}), never the path or query: they may carry tokens.
            path=request.scope.get("path_template") or request.url.path,
            retry_after=decision.retry_after,
        )
        raise RateLimitedError(MESSAGE, retry_after=decision.retry_after)


async def enforce_csp_report(request: Request[Any, Any, Any]) -> None:
    """For the CSP report endpoint: a browser (or a script) flooding reports gets 429 before anything is parsed."""
    await enforce(request, "csp_report_ip")
