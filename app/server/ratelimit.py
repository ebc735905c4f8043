"""The general per-IP ceiling on unsafe requests (POST/PUT/PATCH/DELETE), the ``unsafe_ip`` row of the table.

Reads cost nothing here: GET and HEAD pass straight through, so the hot path stays free of Redis. Stripe's
webhook (Stripe retries from a handful of addresses; the signature is its guard) and the health checks are exempt.
"""

from __future__ import annotations

from litestar import Request
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.lib.ratelimit import enforce

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# /csp-report has a row of its own (csp_report_ip): browser reports must not use up a visitor's general ceiling.
EXEMPT_PATHS = ("/webhooks/stripe", "/healthz", "/readyz", "/static/", "/csp-report")


def _exempt(scope: Scope) -> bool:
    return scope.get("method") not in UNSAFE_METHODS or scope["path"].startswith(EXEMPT_PATHS)


class UnsafeRequestLimitMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    should_bypass_for_scope = staticmethod(_exempt)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        # Raised before the handler runs: Litestar's exception handling answers 429 with Retry-After.
        await enforce(Request(scope), "unsafe_ip")
        await next_app(scope, receive, send)
