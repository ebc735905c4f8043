"""Cacheable at the edge (#15): fingerprinted static files, HEAD, compression, no cookies for nothing, ETags and
the full-page cache (whose pages must never replay another request's CSP nonce)."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import Callable

import brotli
import httpx
from sqlalchemy import text

from app.domain.catalog.cache import invalidate_catalog
from app.lib import metrics
from app.lib.runtime import Runtime
from app.lib.static_assets import static_url
from tests.conftest import Factory
from tests.helpers import post_form, select, sign_in
from tests.integration.test_catalog import seed_catalog

IMMUTABLE = "public, max-age=31536000, immutable"


async def test_templates_link_fingerprinted_static_files_cached_for_a_year(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    srcs = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert srcs, html[:500]
    for src in srcs:
        assert re.search(r"\.[0-9a-f]{10}\.\w+$", src), src  # every template goes through static_url
        response = await client.get(src)
        assert response.status_code == 200
        assert response.headers["cache-control"] == IMMUTABLE
        assert "set-cookie" not in response.headers
    assert static_url("vendor/htmx-2.0.11.min.js") in srcs  # vendored htmx too
    # The plain path still answers, for a few minutes only; the ETag revalidates it.
    plain = await client.get("/static/js/app.js")
    assert plain.status_code == 200 and plain.headers["cache-control"] == "public, max-age=300"
    again = await client.get("/static/js/app.js", headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert (await client.get("/static/js/app.0123456789.js")).status_code == 404  # a stale fingerprint


async def test_static_files_are_served_precompressed(client: httpx.AsyncClient) -> None:
    url = static_url("vendor/htmx-2.0.11.min.js")
    plain = await client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    async with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as gz:
        body = b"".join([chunk async for chunk in gz.aiter_raw()])
    assert gz.headers["content-encoding"] == "gzip" and gz.headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == plain.content and len(body) < len(plain.content) / 2
    async with client.stream("GET", url, headers={"Accept-Encoding": "gzip, br"}) as br:
        body = b"".join([chunk async for chunk in br.aiter_raw()])
    assert br.headers["content-encoding"] == "br"
    assert brotli.decompress(body) == plain.content
    # An image that is compressed already is sent as it is.
    png = await client.get(static_url("img/favicon.svg"), headers={"Accept-Encoding": "gzip"})
    assert png.status_code == 200


async def test_pages_are_compressed_above_a_threshold(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    async with client.stream("GET", "/products", headers={"Accept-Encoding": "gzip"}) as gz:
        body = b"".join([chunk async for chunk in gz.aiter_raw()])
    assert gz.headers["content-encoding"] == "gzip"
    assert "Maple Serif" in gzip.decompress(body).decode()
    assert "accept-encoding" in gz.headers["vary"].lower()
    async with client.stream("GET", "/products", headers={"Accept-Encoding": "br"}) as br:
        body = b"".join([chunk async for chunk in br.aiter_raw()])
    assert br.headers["content-encoding"] == "br"
    assert "Maple Serif" in brotli.decompress(body).decode()
    # A small answer is not worth it.
    health = await client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in health.headers


async def test_head_is_answered_wherever_get_is(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    for path in ("/", "/products", "/products/maple-serif", "/pricing", static_url("js/app.js"), "/healthz"):
        get = await client.get(path, headers={"Accept-Encoding": "identity"})
        head = await client.head(path, headers={"Accept-Encoding": "identity"})
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.headers["content-security-policy"]
    assert (await client.head("/no/such/page")).status_code == 404
    assert (await client.head("/products/no-such-product")).status_code == 404


# --- cookies --------------------------------------------------------------------------------------------------

CATALOG_PAGES = (
    "/",
    "/products",
    "/products?sort=price&page=2",
    "/products?q=serif",
    "/products/maple-serif",
    "/pricing",
)


async def test_anonymous_gets_set_a_cookie_only_where_a_page_renders_the_token(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await seed_catalog(factory)
    for path in ("/healthz", static_url("css/app.css"), "/static/css/app.css"):
        assert "set-cookie" not in (await client.get(path)).headers, path
    # The pricing fragment (an HTMX interval switch) holds no form: no cookie, and a shared cache may keep it.
    fragment = await client.get("/pricing?interval=year", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "set-cookie" not in fragment.headers
    assert fragment.headers["cache-control"].startswith("public, max-age=")
    # A full page carries forms (add to cart, and htmx's token header): the first one sets the cookie, once.
    first = await client.get("/products")
    assert "cartwright_csrf=" in first.headers["set-cookie"]
    assert first.headers["cache-control"] == "private, no-cache"  # no shared cache keeps a Set-Cookie page
    for path in CATALOG_PAGES:
        again = await client.get(path)
        assert again.status_code == 200, path
        assert "set-cookie" not in again.headers, path
        assert again.headers["cache-control"] == "public, max-age=60, stale-while-revalidate=600", path
        assert again.headers["vary"].startswith("HX-Request, Cookie"), path
        assert client.cookies["cartwright_csrf"] in again.text  # its own token, from the cache or not
    assert "cartwright_session" not in client.cookies  # browsing creates no session


# --- ETag and 304 ---------------------------------------------------------------------------------------------


async def test_catalog_pages_and_fragments_answer_304_until_the_catalog_changes(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await seed_catalog(factory)
    await client.get("/")  # the CSRF cookie
    for path, headers in (("/products", {}), ("/products?page=1", {"HX-Request": "true"}), ("/pricing", {})):
        page = await client.get(path, headers=headers)
        etag = page.headers["etag"]
        assert etag.startswith('W/"')
        same = await client.get(path, headers={**headers, "If-None-Match": etag})
        assert same.status_code == 304 and same.content == b"", path
        assert same.headers["etag"] == etag
        # The browser keeps the page it has, with the policy whose nonce its scripts carry.
        assert "content-security-policy" not in same.headers
    fragment = await client.get("/products", headers={"HX-Request": "true"})
    full = await client.get("/products")
    assert fragment.headers["etag"] != full.headers["etag"]  # Vary: HX-Request, and the tags say so too
    await invalidate_catalog(runtime.redis)  # what every admin change to the catalog calls
    changed = await client.get("/products", headers={"If-None-Match": full.headers["etag"]})
    assert changed.status_code == 200 and changed.headers["etag"] != full.headers["etag"]


async def test_a_catalog_change_shows_on_the_next_request_despite_the_page_cache(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await seed_catalog(factory)
    assert "Maple Serif" in (await client.get("/products")).text
    assert "Maple Serif" in (await client.get("/products")).text  # now from the cache
    async with runtime.db() as db:
        await db.execute(text("UPDATE products SET name = 'Maple Serif Pro' WHERE slug = 'maple-serif'"))
        await db.commit()
    await invalidate_catalog(runtime.redis)
    assert "Maple Serif Pro" in (await client.get("/products")).text


# --- the page cache never replays a nonce ---------------------------------------------------------------------


def _nonce(response: httpx.Response) -> str:
    match = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
    assert match is not None
    return match.group(1)


async def test_pages_from_the_cache_carry_their_own_nonce_and_the_visitors_token(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    """Reliability case 24 (the CSP): a stored page never replays another response's nonce."""
    await seed_catalog(factory)
    await client.get("/products/maple-serif")  # renders it (and stores it)
    assert await runtime.redis.keys("cartwright:pages:*")
    hits = metrics.PAGE_CACHE.labels("hit")._value.get()
    other = new_browser()
    answers = [await client.get("/products/maple-serif"), await other.get("/products/maple-serif")]
    assert metrics.PAGE_CACHE.labels("hit")._value.get() == hits + 2  # both from the cache
    nonces = [_nonce(a) for a in answers]
    assert nonces[0] != nonces[1]
    for answer, nonce in zip(answers, nonces, strict=True):
        scripts = [tag.attributes["nonce"] for tag in select(answer.text, "script[src]")]
        assert scripts and set(scripts) == {nonce}  # every script runs under this response's policy
    # Each visitor gets the token of their own cookie (the second one's set by this very response).
    assert client.cookies["cartwright_csrf"] in answers[0].text
    assert other.cookies["cartwright_csrf"] in answers[1].text
    assert client.cookies["cartwright_csrf"] not in answers[1].text
    # ... and that token works: the cached page's form adds to the cart.
    added = await post_form(other, "/cart/items", {"product_id": _product_id(answers[1].text), "quantity": "1"})
    assert added.status_code in {200, 303}
    await other.aclose()


def _product_id(html: str) -> str:
    match = re.search(r'name="product_id" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


# --- personal pages -------------------------------------------------------------------------------------------


async def test_anything_personal_is_private_no_store(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    await factory.user(email="reader@example.com")
    await sign_in(client, "reader@example.com")
    for path in ("/", "/products", "/products/maple-serif", "/pricing", "/account", "/cart"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert page.headers["cache-control"] == "private, no-store", path
        assert "etag" not in page.headers, path
    # A signed-in page is never the anonymous one from the cache.
    assert "Sign out" in (await client.get("/products")).text


async def test_a_stampede_on_a_cold_page_renders_it_once(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    await client.get("/")  # the CSRF cookie, and the catalog version
    misses, hits = metrics.PAGE_CACHE.labels("miss")._value.get(), metrics.PAGE_CACHE.labels("hit")._value.get()
    pages = await asyncio.gather(*(client.get("/products?sort=price") for _ in range(8)))
    assert all(p.status_code == 200 and "Maple Serif" in p.text for p in pages)
    assert metrics.PAGE_CACHE.labels("miss")._value.get() == misses + 1  # one render; seven waited for it
    assert metrics.PAGE_CACHE.labels("hit")._value.get() == hits + 7
    assert len({_nonce(p) for p in pages}) == 8
