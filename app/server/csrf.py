"""CSRF: a token bound to the session, and unsafe requests from other sites refused.

Litestar's own CSRF middleware is a double-submit cookie: any token that matches the cookie passes, so whoever can
plant a cookie (a sibling subdomain, a network attacker on plain http) can plant a matching token too. Here:

* Once a browser has a session, its token lives **in the session** (server side) and only that one passes: a token
  minted for one session fails in every other, whatever cookie comes with it. Signing in or out (a session
  rotation) mints a fresh one; the page reloads then anyway.
* A visitor without a session (nothing in the cart, not signed in) is checked against the token cookie, as before:
  no anonymous GET creates a session. When a session appears, it adopts the token the page already carries.
* Any unsafe request that the browser says comes from another site (``Sec-Fetch-Site: cross-site``) is refused
  before the token is even looked at.

Templates keep ``csrf_input`` and ``csrf_token()`` (Litestar reads the token this middleware puts on the scope);
HTMX sends it in the ``X-CSRFToken`` header (``hx-headers`` on ``<body>``), plain forms in ``_csrf_token``.
"""

from __future__ import annotations

import secrets
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from app.lib.csp import csrf_used
from app.server.logging import log_denial
from app.server.sessions import SESSION_INTERNAL_KEYS, is_rotating

SESSION_KEY = "_csrf"
# The biggest form we read to find the token in a field; bigger bodies (uploads) must send the header.
FORM_TOKEN_MAX_BYTES = 1024 * 1024
HEADER = "x-csrftoken"
FORM_FIELD = "_csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_FAILED = "CSRF token verification failed"
CROSS_SITE = "Cross-site request refused"
_TOKEN_BYTES = 32


def cookie_name(*, secure: bool) -> str:
    # "__Host-": the browser only accepts it Secure, Path=/ and without Domain, so no subdomain can set it.
    return "__Host-cartwright_csrf" if secure else "cartwright_csrf"


def _well_formed(token: object) -> bool:
    return isinstance(token, str) and 32 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()


class CSRFMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, *, secure: bool, exempt: tuple[str, ...]) -> None:
        """``exempt``: paths that take no form posts from our pages; one ending in ``/`` exempts what is under it."""
        self.secure = secure
        self.cookie = cookie_name(secure=secure)
        exact = frozenset(path for path in exempt if not path.endswith("/"))
        prefixes = tuple(path for path in exempt if path.endswith("/"))

        # By the request's path, not the route's (Litestar's exclude_path_pattern matches route paths from 3.0 on).
        def bypass(scope: Scope) -> bool:
            path: str = scope["path"]
            return path in exact or path.startswith(prefixes)

        self.should_bypass_for_scope = bypass

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request: Request[Any, Any, Any] = Request(scope, receive)
        session = scope.get("session")
        bound = session.get(SESSION_KEY) if isinstance(session, dict) else None
        cookie = request.cookies.get(self.cookie)
        expected: str | None = bound if _well_formed(bound) else (cookie if _well_formed(cookie) else None)
        if request.method not in SAFE_METHODS:
            if request.headers.get("sec-fetch-site") == "cross-site":
                log_denial(scope, "cross_site", status=403)
                raise PermissionDeniedException(CROSS_SITE)
            sent = request.headers.get(HEADER)
            if not sent and request.content_type[0] in {
                RequestEncodingType.URL_ENCODED,
                RequestEncodingType.MULTI_PART,
            }:
                length = request.headers.get("content-length", "")
                if not expected or not length.isdigit() or int(length) > FORM_TOKEN_MAX_BYTES:
                    # Reading the form means buffering the body (upload routes take gigabytes): never for a request
                    # that cannot pass, or a big one. Our uploads go through htmx, which sends the header.
                    log_denial(scope, "csrf", status=403, token_sent=False, session_bound=bound is not None)
                    raise PermissionDeniedException(CSRF_FAILED)
                # Parsed once and cached on the scope: the handler reads the same form.
                sent = (await request.form()).get(FORM_FIELD)
            if not expected or not isinstance(sent, str) or not secrets.compare_digest(sent, expected):
                log_denial(scope, "csrf", status=403, token_sent=bool(sent), session_bound=bound is not None)
                raise PermissionDeniedException(CSRF_FAILED)
        token = expected or secrets.token_urlsafe(_TOKEN_BYTES)
        ScopeState.from_scope(scope).csrf_token = token

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                final, held = self._bind(scope, token)
                headers = MutableScopeHeaders.from_message(message)
                # The cookie only where a page rendered the token (a form, htmx's header: app.lib.templating), or
                # when the token changed or is now held by a session: an image, a JSON answer or a page without a
                # form sets nothing (cacheable, and no cookie for nothing).
                if final != cookie and (csrf_used(scope) or held or final != token):
                    headers.add("set-cookie", self._cookie(final))
            await send(message)

        await next_app(scope, receive, send_wrapper)

    def _bind(self, scope: Scope, token: str) -> tuple[str, bool]:
        """The token from now on, and whether the session holds it: the session about to be stored adopts the
        page's token; a rotating session (sign-in, sign-out) gets a fresh one."""
        session = scope.get("session")
        if not isinstance(session, dict):
            return token, False
        stored = any(key not in SESSION_INTERNAL_KEYS and key != SESSION_KEY for key in session)
        if is_rotating(session):
            token = secrets.token_urlsafe(_TOKEN_BYTES)
        elif _well_formed(session.get(SESSION_KEY)):
            token = str(session[SESSION_KEY])
        if stored:
            session[SESSION_KEY] = token
        else:
            session.pop(SESSION_KEY, None)  # an emptied session is deleted, not kept alive by its token
        return token, stored

    def _cookie(self, token: str) -> str:
        return Cookie(
            key=self.cookie, value=token, path="/", secure=self.secure, httponly=True, samesite="lax"
        ).to_header(header="")
