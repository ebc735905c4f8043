"""HTTP caching for the anonymous catalog, and a full-page cache behind it (#15).

For a GET of a catalog page (``/``, ``/products``, ``/products/<slug>``, ``/pricing``) by a visitor without a
session:

* a weak ``ETag`` from the catalog version (app.domain.catalog.cache), the build (templates and static files),
  page-or-fragment, and a hash of the visitor's CSRF token (the page carries it): ``If-None-Match`` → 304;
* ``Cache-Control: public, max-age, stale-while-revalidate`` with ``Vary: HX-Request, Cookie`` — or
  ``private, no-cache`` when this very response sets the CSRF cookie (a shared cache must not keep a page whose
  token belongs to a cookie it does not hand out);
* the rendered page kept in Redis under the catalog version, with a small in-process LRU in front and one build
  per key at a time in each process (single-flight): a catalog change bumps the version and every entry is
  stale at once.

A stored page holds placeholders where the CSP nonce and the CSRF token were: each answer gets its own fresh
nonce (the one in its CSP header, app.server.security_headers) and the visitor's own token, never a replay.

Everything personal (a session, the cart, checkout, account, admin) gets ``private, no-store`` unless the handler
chose otherwise. Redis being down only turns the cache off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, cast

import structlog
from litestar import MediaType, Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.response import Template
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState
from markupsafe import Markup
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.domain.catalog.cache import CATALOG_CACHE
from app.lib import metrics
from app.lib.breaker import breaker_for
from app.lib.csp import csrf_used, mark_csrf_used, request_nonce
from app.lib.htmx import render, wants_fragment
from app.lib.settings import BASE_DIR
from app.lib.static_assets import static_assets
from app.server.auth import current_user
from app.server.static import etag_matches

log = structlog.get_logger()

CATALOG_PAGE = re.compile(r"^/(?:products(?:/[^/]+)?|pricing)?$")
PERSONAL_PREFIXES = ("/cart", "/checkout", "/account", "/admin", "/orders", "/subscriptions", "/bookings")
PUBLIC = b"public, max-age=60, stale-while-revalidate=600"
REVALIDATE = b"private, no-cache"
PERSONAL = b"private, no-store"
VARY = b"HX-Request, Cookie"
PAGE_TTL = 10 * 60  # a backstop: the version bump is what makes a page stale
PRICING_TTL = 30  # plans change through Stripe sync, which does not bump the catalog version
NONCE_MARK = b"\x00cw-nonce\x00"
TOKEN_MARK = b"\x00cw-csrf\x00"
LRU_SIZE = 256
LRU_TTL = 30  # seconds: bounds what a process may hold past a Redis entry's own expiry (/pricing)


@lru_cache(maxsize=1)
def build_id() -> str:
    """Changes with any template or static file: a deploy never answers 304 for the previous release's page."""
    digest = hashlib.sha256(static_assets().digest().encode())
    for path in sorted((BASE_DIR / "templates").rglob("*.j2")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_fragment(scope: Scope) -> bool:
    return (
        _header(scope, b"hx-request") == "true"
        and _header(scope, b"hx-boosted") != "true"
        and _header(scope, b"hx-history-restore-request") != "true"
    )


def _set(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> None:
    headers[:] = [(k, v) for k, v in headers if k.lower() != name]
    headers.append((name, value))


class _Entry:
    __slots__ = ("body", "content_type", "extra", "uses_token")

    def __init__(self, content_type: bytes, extra: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.content_type = content_type
        self.extra = extra  # headers of the handler's own worth keeping (HX-Trigger, ...)
        self.body = body
        self.uses_token = TOKEN_MARK in body

    def dumps(self) -> bytes:
        head = json.dumps([self.content_type.decode("latin-1"), [[k.decode(), v.decode()] for k, v in self.extra]])
        return head.encode() + b"\n" + self.body

    @classmethod
    def loads(cls, raw: bytes) -> _Entry:
        head, _, body = raw.partition(b"\n")
        content_type, extra = json.loads(head)
        return cls(content_type.encode("latin-1"), [(k.encode(), v.encode()) for k, v in extra], body)


class PageStore:
    """Rendered pages (or shared parts of them) in Redis under the catalog version, a small in-process LRU in
    front, and one build per key at a time in each process (single-flight against stampedes)."""

    def __init__(self) -> None:
        self._lru: OrderedDict[str, tuple[float, _Entry]] = OrderedDict()  # key -> (deadline, entry)
        self._building: dict[str, asyncio.Future[_Entry | None]] = {}

    async def lookup(self, redis: Redis | None, key: str) -> _Entry | None:
        """The stored entry, or the one another request of this process is building right now."""
        entry = await self._lookup(redis, key)
        if entry is None and (building := self._building.get(key)) is not None:
            entry = await asyncio.shield(building)
        return entry

    @asynccontextmanager
    async def building(self, key: str) -> AsyncIterator[Callable[[_Entry | None], None]]:
        """Announce a build of ``key``: requests arriving meanwhile wait for it instead of building it again."""
        future: asyncio.Future[_Entry | None] = asyncio.get_running_loop().create_future()
        self._building[key] = future

        def done(built: _Entry | None) -> None:
            if not future.done():
                future.set_result(built)

        try:
            yield done
        finally:
            self._building.pop(key, None)
            if not future.done():
                future.set_result(None)

    async def _lookup(self, redis: Redis | None, key: str) -> _Entry | None:
        if (held := self._lru.get(key)) is not None:
            if held[0] > time.monotonic():
                self._lru.move_to_end(key)
                return held[1]
            del self._lru[key]
        if redis is None:
            return None
        try:
            raw = await redis.get(key)
        except RedisError as exc:
            self._redis_failed(redis, exc)
            return None
        if raw is None:
            return None
        entry = _Entry.loads(raw if isinstance(raw, bytes) else raw.encode("latin-1"))
        self._remember(key, entry, ttl=LRU_TTL)
        return entry

    async def store(self, redis: Redis | None, key: str, entry: _Entry, *, ttl: int) -> None:
        self._remember(key, entry, ttl=min(ttl, LRU_TTL))
        if redis is None:
            return
        try:
            await redis.set(key, entry.dumps(), ex=ttl)
        except RedisError as exc:
            self._redis_failed(redis, exc)

    def _remember(self, key: str, entry: _Entry, *, ttl: float) -> None:
        self._lru[key] = (time.monotonic() + ttl, entry)
        self._lru.move_to_end(key)
        while len(self._lru) > LRU_SIZE:
            self._lru.popitem(last=False)

    @staticmethod
    def _redis_failed(redis: Redis, exc: RedisError) -> None:
        log.warning("page_cache.unavailable", error=type(exc).__name__)
        metrics.REDIS_ERRORS.labels("page_cache").inc()
        breaker_for(redis).trip()


_SCOPE_CATALOG_VERSION = "cartwright.catalog_version"


def remember_catalog_version(scope: Scope, version: bytes | str | None) -> None:
    """The catalog version as read at the start of this request (ShopSettingsMiddleware's MGET), for
    ``catalog_version`` to use instead of a GET of its own. ``None`` (missing) leaves the GET to mint one."""
    if version is not None:
        scope.setdefault("state", {})[_SCOPE_CATALOG_VERSION] = version


async def catalog_version(redis: Redis | None, scope: Scope | None = None) -> int | None:
    """The catalog version pages are cached under; None when Redis is unavailable (then nothing is cached)."""
    if redis is None or not breaker_for(redis).closed:
        return None
    known = scope.get("state", {}).get(_SCOPE_CATALOG_VERSION) if scope is not None else None
    if known is not None:
        return int(known)
    try:
        version = await redis.get(CATALOG_CACHE.version_key)
        if version is None:
            # Never 0 after a flush or a new Redis: this process's LRU may hold pages of the old "0".
            await redis.set(CATALOG_CACHE.version_key, secrets.randbelow(2**40), nx=True)
            version = await redis.get(CATALOG_CACHE.version_key)
        return int(version or 0)
    except RedisError as exc:
        PageStore._redis_failed(redis, exc)
        return None


def page_store(app: Any) -> PageStore:
    """The app's store: one per application (a test process builds many apps, each with its own database)."""
    store = app.state.get("page_store")
    if store is None:
        store = app.state["page_store"] = PageStore()
    return cast("PageStore", store)


_KEEP = frozenset({b"hx-trigger", b"hx-push-url", b"hx-retarget", b"hx-reswap", b"content-language"})


class PageCacheMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path: str = scope["path"]
        session = scope.get("session")
        anonymous = not (isinstance(session, dict) and session)
        if scope.get("method") != "GET" or not anonymous or not CATALOG_PAGE.match(path):
            await next_app(scope, receive, self._private_by_default(scope, send, personal=not anonymous))
            return
        redis: Redis | None = scope["app"].state.runtime.redis
        version = await catalog_version(redis, scope)
        if version is None:
            await next_app(scope, receive, self._private_by_default(scope, send, personal=False))
            return
        token = str(ScopeState.from_scope(scope).csrf_token or "")
        fragment = _is_fragment(scope)
        token_hash = hashlib.sha256(token.encode()).hexdigest()[:10]
        etag = f'W/"{version}-{build_id()}-{"f" if fragment else "p"}-{token_hash}"'
        if etag_matches(_header(scope, b"if-none-match"), etag):
            metrics.PAGE_CACHE.labels("not_modified").inc()
            await self._send_not_modified(scope, send, etag)
            return
        host = _header(scope, b"host") or ""
        query = scope.get("query_string", b"").decode("latin-1")
        url_hash = hashlib.sha256(f"{host}{path}?{query}|{fragment}".encode()).hexdigest()[:32]
        key = f"cartwright:pages:v{version}:b{build_id()}:{url_hash}"
        store = page_store(scope["app"])
        entry = await store.lookup(redis, key)
        if entry is not None:
            metrics.PAGE_CACHE.labels("hit").inc()
            await self._serve(scope, send, entry, etag, token)
            return
        metrics.PAGE_CACHE.labels("miss").inc()
        async with store.building(key) as done:
            built = await self._render(scope, receive, send, next_app, etag, token)
            done(built)
        if built is not None:
            await store.store(redis, key, built, ttl=PRICING_TTL if path == "/pricing" else PAGE_TTL)

    # -- HTTP caching ------------------------------------------------------------------------------------------

    def _cache_control(self, scope: Scope, token: str, uses_token: bool) -> bytes:
        cookie = scope["app"].state.csrf_cookie_name
        sets_cookie = uses_token and _cookie(scope, cookie) != token
        return REVALIDATE if sets_cookie else PUBLIC

    def _private_by_default(self, scope: Scope, send: Send, *, personal: bool) -> Send:
        path: str = scope["path"]
        personal = personal or path.startswith(PERSONAL_PREFIXES)

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                if "cache-control" not in headers and (headers.get("content-type") or "").startswith("text/html"):
                    headers["cache-control"] = (PERSONAL if personal else REVALIDATE).decode()
            await send(message)

        return wrapped

    async def _send_not_modified(self, scope: Scope, send: Send, etag: str) -> None:
        headers = [
            (b"etag", etag.encode()),
            (b"cache-control", PUBLIC),
            (b"vary", VARY),
        ]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- the page cache ----------------------------------------------------------------------------------------

    async def _serve(self, scope: Scope, send: Send, entry: _Entry, etag: str, token: str) -> None:
        body = entry.body.replace(NONCE_MARK, request_nonce(scope).encode())
        if entry.uses_token:
            body = body.replace(TOKEN_MARK, token.encode())
            mark_csrf_used(scope)
        headers = [
            (b"content-type", entry.content_type),
            (b"content-length", str(len(body)).encode()),
            *entry.extra,
            (b"etag", etag.encode()),
            (b"cache-control", self._cache_control(scope, token, entry.uses_token)),
            (b"vary", VARY),
        ]
        start: Message = {"type": "http.response.start", "status": 200, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _render(
        self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp, etag: str, token: str
    ) -> _Entry | None:
        """Render through the app, answering as it goes, and return the page to store (None: not storable)."""
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        storable = True

        async def capture(message: Message) -> None:
            nonlocal storable
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                start["status"] = message["status"]
                start["headers"] = list(headers)
                storable = message["status"] == 200 and not any(k.lower() == b"set-cookie" for k, _ in headers)
                if message["status"] == 200:
                    _set(headers, b"etag", etag.encode())
                    _set(headers, b"cache-control", self._cache_control(scope, token, csrf_used(scope)))
                    _set(headers, b"vary", VARY)
                    message["headers"] = headers
            elif message["type"] == "http.response.body" and storable:
                chunks.append(message.get("body", b""))
            await send(message)

        await next_app(scope, receive, capture)
        if not storable or not start:
            return None
        body = b"".join(chunks).replace(request_nonce(scope).encode(), NONCE_MARK)
        if token:
            body = body.replace(token.encode(), TOKEN_MARK)
        content_type = next((v for k, v in start["headers"] if k.lower() == b"content-type"), b"text/html")
        extra = [(k.lower(), v) for k, v in start["headers"] if k.lower() in _KEEP]
        return _Entry(content_type, extra, body)


# -- shared pages for signed-in visitors ----------------------------------------------------------------------------

PERSONAL_MARK = "\x00cw-personal\x00"
FLASHES_MARK = "\x00cw-flashes\x00"
# What base.html.j2 renders in place of the personal parts when a page is built to be shared.
HOLES = {"account": Markup(PERSONAL_MARK), "flashes": Markup(FLASHES_MARK)}  # noqa: S704 (constants, no input)
PERSONAL_MARK_B, FLASHES_MARK_B = PERSONAL_MARK.encode(), FLASHES_MARK.encode()
ACCOUNT_NAV = "components/_account_nav.html.j2"
FLASHES = "components/_flashes.html.j2"


async def render_shared(
    request: Request[Any, Any, Any],
    page: str,
    build: Callable[[], Awaitable[dict[str, Any]]],
    *,
    fragment: str | None = None,
    variant: str = "",
    ttl: int = PAGE_TTL,
) -> Response[bytes] | Template:
    """A catalog page for a visitor with a session (signed in, or a guest with a cart), made of parts every such
    visitor shares (#15).

    The page (or the HTMX fragment) is rendered once per URL, catalog version, build and ``variant`` (what else
    the content depends on, e.g. a member's price tier) and kept in the page store with holes where the personal
    parts go: the header's cart link and account menu, the flash messages, the CSP nonce and the CSRF token. Each
    answer fills them in for its own visitor, so nothing of one visitor ever reaches another. ``build`` (the
    queries) runs only when the page is not stored. Visitors without a session get the page cache middleware.
    """
    redis: Redis | None = request.app.state.runtime.redis
    session = request.scope.get("session")
    if not (isinstance(session, dict) and session):
        return render(request, page, await build(), fragment=fragment)  # the middleware caches the whole page
    version = await catalog_version(redis, request.scope)
    if version is None:  # Redis is down: no cache
        return render(request, page, await build(), fragment=fragment)
    is_fragment = bool(fragment) and wants_fragment(request)
    name = fragment if is_fragment and fragment else page
    url = f"{request.headers.get('host', '')}{request.url.path}?{request.url.query}|{is_fragment}|{variant}"
    key = f"cartwright:pages:v{version}:b{build_id()}:shared:{hashlib.sha256(url.encode()).hexdigest()[:32]}"
    token = str(ScopeState.from_scope(request.scope).csrf_token or "")
    nonce = request_nonce(request.scope)
    store = page_store(request.app)
    entry = await store.lookup(redis, key)
    if entry is None:
        async with store.building(key) as done:
            context = {**await build(), "is_fragment": is_fragment, "personal_holes": HOLES}
            html = _render_template(request, name, context).replace(nonce, NONCE_MARK.decode())
            if token:
                html = html.replace(token, TOKEN_MARK.decode())
            entry = _Entry(b"text/html; charset=utf-8", [], html.encode())
            done(entry)
        await store.store(redis, key, entry, ttl=ttl)
    body = entry.body
    if PERSONAL_MARK_B in body:
        body = body.replace(PERSONAL_MARK_B, _account_nav(request, session, token))
    if FLASHES_MARK_B in body:
        flashes = _render_template(request, FLASHES, {}).encode() if "_flashes" in session else b""
        body = body.replace(FLASHES_MARK_B, flashes)
    body = body.replace(NONCE_MARK, nonce.encode())
    if entry.uses_token:
        body = body.replace(TOKEN_MARK, token.encode())
        mark_csrf_used(request.scope)
    return Response(body, media_type=MediaType.HTML, headers={"Vary": "HX-Request"})


_NAVS: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()


def _account_nav(request: Request[Any, Any, Any], session: dict[str, Any], token: str) -> bytes:
    """The header's personal part, kept per process by everything it shows (most pages of a visit repeat it)."""
    user = current_user(request)
    who = (user.id, user.display_name, user.role) if user else None
    key = (who, session.get("cart_count", 0), token)
    if (html := _NAVS.get(key)) is None:
        html = _NAVS[key] = _render_template(request, ACCOUNT_NAV, {}).encode()
        if len(_NAVS) > 4 * LRU_SIZE:
            _NAVS.popitem(last=False)
    if token:
        mark_csrf_used(request.scope)  # the sign-out form carries it
    return html


def _render_template(request: Request[Any, Any, Any], name: str, context: dict[str, Any]) -> str:
    """``name`` rendered as a Template response would render it for ``request`` (its request, csrf_input, nonce)."""
    engine = request.app.template_engine
    assert engine is not None
    full = Template(template_name=name, context=context).create_template_context(request)
    return str(engine.get_template(name).render(**full))


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
