"""Issue #12 "Cookies and CSRF": __Host- cookies under https, a CSRF token bound to the session, cross-site refused."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from app.lib.settings import get_settings
from tests.conftest import Factory
from tests.helpers import CSRF_COOKIE, csrf_token, post_form, sign_in

PASSWORD = "correct horse battery"


@asynccontextmanager
async def https_shop() -> AsyncIterator[httpx.AsyncClient]:
    """A second app whose BASE_URL is https, reached over https (so the client keeps and sends Secure cookies)."""
    from app.asgi import create_app

    saved = os.environ.get("BASE_URL")
    os.environ["BASE_URL"] = "https://shop.test"
    get_settings.cache_clear()
    try:
        application = create_app()
    finally:
        if saved is None:
            os.environ.pop("BASE_URL", None)
        else:
            os.environ["BASE_URL"] = saved
        get_settings.cache_clear()
    started, stopping = asyncio.Event(), asyncio.Event()

    async def host() -> None:
        async with application.lifespan():
            started.set()
            await stopping.wait()

    task = asyncio.create_task(host())
    await started.wait()
    try:
        transport = httpx.ASGITransport(app=application, client=("203.0.113.9", 443))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="https://shop.test") as client:
            yield client
    finally:
        stopping.set()
        await task


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie header by cookie name."""
    found = {}
    for key, value in response.headers.multi_items():
        if key == "set-cookie":
            found[value.split("=", 1)[0]] = value
    return found


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(wrapper_class=wrapper)


async def test_under_https_both_cookies_are_host_prefixed_and_secure(factory: Factory) -> None:
    await factory.user(email="ann@example.com")
    async with https_shop() as shop:
        page = await shop.get("/login")
        csrf = set_cookies(page)["__Host-cartwright_csrf"]
        token = shop.cookies["__Host-cartwright_csrf"]
        signed_in = await shop.post(
            "/login", data={"email": "ann@example.com", "password": PASSWORD}, headers={"x-csrftoken": token}
        )
        assert signed_in.status_code == 303, signed_in.text
        session = set_cookies(signed_in)["__Host-cartwright_session"]
    for cookie in (csrf, session):
        attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
        assert "secure" in attributes
        assert "path=/" in attributes
        assert "httponly" in attributes
        assert not any(a.startswith("domain") for a in attributes)
    assert "cartwright_session" not in set_cookies(page)  # an anonymous page view creates no session


async def test_over_http_the_cookies_have_plain_names_and_are_not_secure(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user(email="ann@example.com")
    page = await client.get("/login")
    assert "secure" not in set_cookies(page)["cartwright_csrf"].lower()
    assert "cartwright_session" not in set_cookies(page)
    signed_in = await sign_in(client, "ann@example.com")
    assert "secure" not in set_cookies(signed_in)["cartwright_session"].lower()


async def test_a_token_from_one_session_is_refused_in_another(
    app: Any, factory: Factory, logs: list[dict[str, Any]]
) -> None:
    await factory.user(email="ann@example.com")
    await factory.user(email="bob@example.com")
    transport = httpx.ASGITransport(app=app, client=("203.0.113.8", 50000))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as ann,
        httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as bob,
    ):
        await sign_in(ann, "ann@example.com")
        await sign_in(bob, "bob@example.com")
        anns = await csrf_token(ann, "/account")
        bobs = await csrf_token(bob, "/account")
        assert anns != bobs
        refused = await bob.post("/logout", headers={"x-csrftoken": anns})
        assert refused.status_code == 403
        # Even with Ann's token planted as Bob's cookie (cookie tossing), Bob's session says otherwise.
        bob.cookies.set(CSRF_COOKIE, anns, domain="testserver.local")
        tossed = await bob.post("/logout", data={"_csrf_token": anns})
        assert tossed.status_code == 403
        assert "Your form expired" in tossed.text
        denials = [e for e in logs if e.get("event") == "access_denied"]
        assert [d["reason"] for d in denials] == ["csrf", "csrf"]
        assert all(d["path"] == "/logout" and d["request_id"] and d["ip"] == "203.0.113.8" for d in denials)
        assert anns not in repr(logs)
        assert (await bob.post("/logout", headers={"x-csrftoken": bobs})).status_code == 303


async def test_signing_in_mints_a_fresh_token(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="ann@example.com")
    before = await csrf_token(client)
    await sign_in(client, "ann@example.com")
    after = client.cookies[CSRF_COOKIE]
    assert after != before
    assert (await client.post("/logout", headers={"x-csrftoken": before})).status_code == 403
    assert (await csrf_token(client, "/account")) == after  # the page carries the session's token
    assert (await client.post("/logout", headers={"x-csrftoken": after})).status_code == 303


async def test_an_anonymous_token_keeps_working_when_the_cart_starts_a_session(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    product = await factory.product(name="Atlas", price=900)
    token = await csrf_token(client, "/")
    assert "cartwright_session" not in client.cookies
    data = {"product_id": str(product.id), "quantity": "1"}
    first = await client.post("/cart/items", data=data, headers={"x-csrftoken": token, "HX-Request": "true"})
    assert first.status_code == 200
    assert "cartwright_session" in client.cookies
    # The page's hx-headers still hold the anonymous token: the new session adopted it.
    again = await client.post("/cart/items", data=data, headers={"x-csrftoken": token, "HX-Request": "true"})
    assert again.status_code == 200


@pytest.mark.parametrize("site", ["same-origin", "same-site", "none", None])
async def test_same_site_requests_pass(client: httpx.AsyncClient, factory: Factory, site: str | None) -> None:
    await factory.user(email="ann@example.com")
    token = await csrf_token(client)
    headers = {"x-csrftoken": token, **({"sec-fetch-site": site} if site else {})}
    response = await client.post("/login", data={"email": "ann@example.com", "password": PASSWORD}, headers=headers)
    assert response.status_code == 303


async def test_cross_site_unsafe_requests_are_refused_with_a_clear_page(
    client: httpx.AsyncClient, factory: Factory, logs: list[dict[str, Any]]
) -> None:
    await factory.user(email="ann@example.com")
    token = await csrf_token(client)
    response = await client.post(
        "/login",
        data={"email": "ann@example.com", "password": PASSWORD},
        headers={"x-csrftoken": token, "sec-fetch-site": "cross-site"},
    )
    assert response.status_code == 403
    assert "came from another website" in response.text
    [denied] = [e for e in logs if e.get("event") == "access_denied"]
    assert denied["reason"] == "cross_site"
    # Stripe's webhook (signed, not a browser) and the health checks are exempt.
    webhook = await client.post("/webhooks/stripe", content=b"{}", headers={"sec-fetch-site": "cross-site"})
    assert webhook.status_code == 400  # refused by its signature check, not by this one
    assert (await client.get("/healthz", headers={"sec-fetch-site": "cross-site"})).status_code == 200


async def test_plain_forms_still_post_with_the_hidden_field(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="ann@example.com")
    page = await client.get("/login")
    assert f'name="_csrf_token" value="{client.cookies[CSRF_COOKIE]}"' in page.text
    response = await post_form(client, "/login", {"email": "ann@example.com", "password": PASSWORD})
    assert response.status_code == 303


async def test_a_big_form_without_the_header_token_is_refused_before_it_is_read(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    """The security review: upload routes take bodies of any size, and the middleware read the whole form to look
    for the token before refusing. Now a body over 1 MiB must carry the token in the header (htmx sends it)."""
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    token = await csrf_token(client, "/admin")
    with capture_logs() as logs:
        refused = await client.post(
            "/admin/products/00000000-0000-7000-8000-000000000000/file",
            data={"_csrf_token": token},
            files={"file": ("big.bin", b"x" * (2 * 1024 * 1024), "application/octet-stream")},
        )
    assert refused.status_code == 403
    [denied] = [e for e in logs if e.get("event") == "access_denied"]
    assert denied["reason"] == "csrf" and denied["token_sent"] is False  # refused without looking into the body
    # A small form still finds its token in the field; a big one with the header passes the check.
    assert (await post_form(client, "/logout", {})).status_code == 303
