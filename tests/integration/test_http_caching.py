"""Cacheable at the edge (#15): fingerprinted static files, HEAD, compression, no cookies for nothing, ETags and
the full-page cache (whose pages must never replay another request's CSP nonce)."""

from __future__ import annotations

import gzip
import re

import brotli
import httpx

from app.lib.static_assets import static_url
from tests.conftest import Factory
from tests.integration.test_catalog import seed_catalog

IMMUTABLE = "public, max-age=31536000, immutable"


def raw(response: httpx.Response) -> bytes:
    """The bytes as they travelled (httpx decodes Content-Encoding on .content)."""
    return b"".join(response.iter_raw()) if not response.is_stream_consumed else response.content


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
