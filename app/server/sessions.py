"""Server-side sessions in Redis, with the two things Litestar's backend lacks: id rotation and per-session lifetimes.

- ``rotate_session(request)`` marks the session; when the response goes out the old id is deleted from the store
  and the data is saved under a fresh id (call it on login and on privilege change: defeats session fixation).
- ``set_session_lifetime(request, seconds, persistent=...)`` sets how long an idle session lives; staff get
  30 minutes, customers a day, "remember me" 30 days with a persistent cookie.
- A request with ``X-Background: 1`` (a poll the page makes on its own) is not activity: the session is not saved
  and its idle TTL is not renewed.
- A response that changed nothing in the session does not rewrite it: the idle TTL (and a persistent cookie's
  Max-Age) is renewed at most once a minute, not on every page (#15: a Redis write and a Set-Cookie per page).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.types import Empty, Message, ScopeSession
from litestar.utils.dataclass import extract_dataclass_items

_ROTATE = "_rotate"
_TTL = "_ttl"
_PERSISTENT = "_persistent"
_RENEWED = "_renewed"  # when the stored session and its idle TTL were last written (epoch seconds)
SESSION_INTERNAL_KEYS = frozenset({_ROTATE, _TTL, _PERSISTENT, _RENEWED})  # bookkeeping: alone they store no session


def session_cookie_name(*, secure: bool) -> str:
    # "__Host-": the browser only accepts it Secure, Path=/ and without Domain, so no subdomain can set it.
    return "__Host-cartwright_session" if secure else "cartwright_session"


# Sent by polling elements (hx-headers): a request the browser makes on its own is not the person being active.
BACKGROUND_HEADER = "x-background"


def rotate_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    connection.session[_ROTATE] = True


def is_rotating(session: dict[str, Any]) -> bool:
    """Whether the session gets a fresh id when the response goes out (sign-in, sign-out)."""
    return bool(session.get(_ROTATE))


def end_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Sign out: drop every key and move what follows (a flash message, say) to a fresh session id."""
    connection.scope["session"] = {_ROTATE: True}


def set_session_lifetime(
    connection: ASGIConnection[Any, Any, Any, Any], seconds: int, *, persistent: bool = False
) -> None:
    connection.session[_TTL] = seconds
    connection.session[_PERSISTENT] = persistent


RENEW_AFTER = 60  # seconds: an unchanged session's idle TTL is renewed no more often (shorter TTLs: a tenth of it)
_LOADED = "cartwright_session_loaded"  # connection state: the session as it was read from the store


class RotatingSessionBackend(ServerSideSessionBackend):
    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        if session_id := connection.cookies.get(self.config.key):
            store = self.config.get_store_from_app(connection.scope["app"])
            data = await self.get(session_id, store=store)
            if data is not None:
                # A second copy to compare with when the response goes out: was anything changed?
                connection.state[_LOADED] = self.deserialize_data(data)
                return self.deserialize_data(data)
        return {}

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        store = self.config.get_store_from_app(connection.scope["app"])
        headers = MutableScopeHeaders.from_message(message)
        session_id = self.get_session_id(connection)
        cookie_params: dict[str, Any] = dict(
            extract_dataclass_items(self.config, exclude_none=True, include=Cookie.__dict__.keys())
        )
        data: dict[str, Any] = {} if scope_session is Empty else dict(cast("dict[str, Any]", scope_session))
        had_cookie = bool(connection.cookies.get(self.config.key))
        rotated = bool(data.pop(_ROTATE, False))
        if rotated and had_cookie:
            await self.delete(session_id, store=store)
            session_id = secrets.token_hex(self.config.session_id_bytes)
        if not data.keys() - {_RENEWED}:
            if had_cookie:
                await self.delete(session_id, store=store)
                headers.add(
                    "Set-Cookie",
                    Cookie(value="null", key=self.config.key, expires=0, **cookie_params).to_header(header=""),
                )
            return

        background = connection.headers.get(BACKGROUND_HEADER) == "1" or "text/event-stream" in connection.headers.get(
            "accept", ""
        )  # an EventSource (re)connecting on its own is not the person either
        if background and had_cookie and not rotated:
            # Leave the stored session and its idle TTL as they were: an open admin tab's 60-second alert poll
            # would otherwise keep a staff session alive for ever (issue #12 hole 8).
            return
        ttl = int(data.get(_TTL) or self.config.max_age)
        now = int(time.time())
        unchanged = had_cookie and not rotated and data == connection.state.get(_LOADED)
        if unchanged and now - int(data.get(_RENEWED) or 0) < min(RENEW_AFTER, ttl // 10):
            return  # nothing to write, and the idle TTL was renewed moments ago
        data[_RENEWED] = now
        await store.set(session_id, self.serialize_data(data, connection.scope), expires_in=ttl)
        # A non-persistent session gets a browser-session cookie; its server-side TTL still bounds it.
        cookie_params.pop("max_age", None)
        max_age = ttl if data.get(_PERSISTENT) else None
        headers.add(
            "Set-Cookie",
            Cookie(value=session_id, key=self.config.key, max_age=max_age, **cookie_params).to_header(header=""),
        )


@dataclass
class RotatingSessionConfig(ServerSideSessionConfig):
    _backend_class = RotatingSessionBackend


def session_config(*, secure: bool, default_ttl: int) -> ServerSideSessionConfig:
    return RotatingSessionConfig(
        key=session_cookie_name(secure=secure),
        store="sessions",
        max_age=default_ttl,
        renew_on_access=False,  # we rewrite the session (and its TTL) on every response that has one
        secure=secure,
        httponly=True,
        samesite="lax",
        exclude=["^/static/", "^/healthz$", "^/readyz$", "^/webhooks/"],
    )
