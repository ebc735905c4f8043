"""The shop's own settings (legal name, tax numbers, time zone, download defaults, ...): the snapshot every process
reads, and the in-process cache that keeps it fresh.

The values live in the database (``shop_settings``, edited at ``/admin/settings``); environment variables keep
secrets and infrastructure only. Reading the database on every use would cost a query per time conversion, so each
process keeps one snapshot and checks a version key in Redis once per request (web) or job (worker): an admin's
save writes a new random version after its commit, so every web node and worker reloads on its next request or job.
A random version (not a counter) means a Redis that lost its data never matches a snapshot taken before.

Synchronous code (``app.lib.localtime``, templates) reads :func:`current_shop_settings`; the refresh is async and
happens at the edges (the web middleware, the worker's ``before_process``), never inside a page.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.lib.breaker import breaker_for
from app.lib.settings import get_settings

log = structlog.get_logger()

VERSION_KEY = "cartwright:shop_settings:version"
# With Redis unreachable nobody can announce a change: reload from the database at most this often meanwhile.
REDIS_DOWN_RELOAD_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ShopSettings:
    """What an admin sets for the shop. Defaults are what a fresh shop (no settings row yet) runs with."""

    legal_name: str = ""
    address: str = ""  # postal address, several lines
    gst_hst_number: str = ""  # e.g. "123456789 RT0001"
    qst_number: str = ""  # e.g. "1234567890 TQ0001" (Quebec)
    support_email: str = ""
    time_zone: str = ""  # IANA name; "" = SHOP_TIME_ZONE from the environment
    receipt_footer: str = ""
    download_limit: int = 5  # for new products
    link_lifetime_hours: int = 24  # signed download links
    low_stock_threshold: int = 5
    alert_recipients: tuple[str, ...] = field(default=())  # empty: every active admin

    @property
    def zone_name(self) -> str:
        return self.time_zone or get_settings().shop_time_zone

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.zone_name)  # zoneinfo caches instances: cheap per call

    @property
    def link_lifetime(self) -> timedelta:
        return timedelta(hours=self.link_lifetime_hours)

    @property
    def seller_name(self) -> str:
        return self.legal_name or "Cartwright"


Loader = Callable[[], Awaitable[ShopSettings]]
# ``refresh(version=UNREAD)``: the caller has not read the version key; refresh reads it (one GET).
UNREAD = object()


class ShopSettingsCache:
    """One process's snapshot of the shop settings and the version it was loaded under."""

    def __init__(self) -> None:
        self._value = ShopSettings()
        self._version: str | None = None
        self._loaded_at = 0.0

    def current(self) -> ShopSettings:
        return self._value

    def set(self, value: ShopSettings, version: str | None) -> None:
        self._value, self._version, self._loaded_at = value, version, time.monotonic()

    async def refresh(self, redis: Redis | None, load: Loader, *, version: object = UNREAD) -> ShopSettings:
        """Reload through ``load`` when Redis announces another version than the one we hold (one GET otherwise).

        ``version``: the value of ``VERSION_KEY`` when the caller already read it with other keys in one round trip
        (the web middleware, #15); ``None`` if it was missing."""
        if redis is None:
            self.set(await load(), None)
            return self._value
        if not breaker_for(redis).closed:  # Redis failed a moment ago: a hung one would cost every request a timeout
            if time.monotonic() - self._loaded_at > REDIS_DOWN_RELOAD_SECONDS:
                self.set(await load(), None)
            return self._value
        try:
            if version is UNREAD:
                version = await redis.get(VERSION_KEY)
            if version is None:
                # First process after a flush or a fresh Redis: mint one, so older snapshots can never match it.
                await redis.set(VERSION_KEY, secrets.token_hex(8), nx=True)
                version = await redis.get(VERSION_KEY)
        except RedisError as exc:
            breaker_for(redis).trip()
            if time.monotonic() - self._loaded_at > REDIS_DOWN_RELOAD_SECONDS or self._version is None:
                log.warning("shop_settings.redis_unavailable", error=type(exc).__name__)
                self.set(await load(), None)
            return self._value
        token = version.decode() if isinstance(version, bytes) else str(version)
        if token != self._version:
            # Load after reading the version: a save racing with us bumps it again, and the next request reloads.
            self.set(await load(), token)
        return self._value

    def forget(self) -> None:
        """Drop the snapshot (tests, and a process that must reload on its next refresh)."""
        self.set(ShopSettings(), None)


async def announce_change(redis: Redis | None) -> None:
    """Tell every process the settings changed. Call it after the commit."""
    if redis is None:
        return
    try:
        await redis.set(VERSION_KEY, secrets.token_hex(8))
    except RedisError as exc:  # processes reload within REDIS_DOWN_RELOAD_SECONDS once they notice Redis is down
        log.error("shop_settings.announce_failed", error=type(exc).__name__)


SHOP_SETTINGS = ShopSettingsCache()


def current_shop_settings() -> ShopSettings:
    """The shop settings as this process last loaded them (refreshed per request and per job)."""
    return SHOP_SETTINGS.current()
