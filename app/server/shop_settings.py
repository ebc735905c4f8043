"""Refresh this process's shop-settings snapshot before each request (one Redis GET unless an admin changed them)."""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.domain.settings.services import refresh_shop_settings
from app.lib.runtime import Runtime
from app.server.logging import is_static_path


class ShopSettingsMiddleware(ASGIMiddleware):
    """Sync readers (local time, templates, download links) see a change saved on any node on their next request."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)
    should_bypass_for_scope = staticmethod(is_static_path)

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        await refresh_shop_settings(self.runtime)
        await next_app(scope, receive, send)
