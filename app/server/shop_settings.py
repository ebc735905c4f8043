"""Refresh this process's shop-settings snapshot before each request (one Redis round trip unless an admin changed
them), reading the catalog version in the same round trip for the page cache (#15)."""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.exceptions import RedisError

from app.domain.catalog.cache import CATALOG_CACHE
from app.domain.settings.services import refresh_shop_settings
from app.lib.breaker import breaker_for
from app.lib.runtime import Runtime
from app.lib.shop_settings import UNREAD, VERSION_KEY
from app.server.logging import is_static_path
from app.server.page_cache import remember_catalog_version


class ShopSettingsMiddleware(ASGIMiddleware):
    """Sync readers (local time, templates, download links) see a change saved on any node on their next request."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)
    should_bypass_for_scope = staticmethod(is_static_path)

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        version: object = UNREAD
        redis = self.runtime.redis
        if breaker_for(redis).closed:
            try:
                # Both versions in one MGET: a catalog page needs the catalog's, every request the settings'.
                version, catalog = await redis.mget(VERSION_KEY, CATALOG_CACHE.version_key)
                remember_catalog_version(scope, catalog)
            except RedisError:
                version = UNREAD  # refresh reads it again, and trips the breaker if Redis is really gone
        await refresh_shop_settings(self.runtime, version=version)
        await next_app(scope, receive, send)
