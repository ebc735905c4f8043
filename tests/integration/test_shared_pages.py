"""Catalog pages for signed-in visitors from shared parts (#15): rendered once per catalog version and shared,
with each visitor's own header, cart count, flash messages, CSRF token and CSP nonce filled in per request. And a
session a page did not change is not written back."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from sqlalchemy import text

from app.domain.catalog.cache import invalidate_catalog
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from tests.conftest import Factory
from tests.helpers import post_form, select_one, sign_in, text_of, texts
from tests.integration.test_catalog import seed_catalog
from tests.integration.test_plans import card, seeded_plans, subscribe

SESSION = "cartwright_session"


def _token(html: str) -> str:
    match = re.search(r'"x-csrftoken": "([^"]+)"', html)
    assert match is not None, html[:300]
    return match.group(1)


def _badge(html: str) -> str:
    return select_one(html, "#cart-badge .badge").text(strip=True)


def _product_id(html: str) -> str:
    match = re.search(r'name="product_id" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


async def test_signed_in_pages_share_the_catalog_but_never_a_visitors_header_or_token(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    await seed_catalog(factory)
    await factory.user(email="ada@example.com", name="Ada Lovelace")
    await factory.user(email="grace@example.com", name="Grace Hopper", role="admin")
    ada, grace = client, new_browser()
    await sign_in(ada, "ada@example.com")
    await sign_in(grace, "grace@example.com")
    page = await ada.get("/products/maple-serif")
    added = await post_form(ada, "/cart/items", {"product_id": _product_id(page.text), "quantity": "2"})
    assert added.status_code in {200, 303}

    for path in ("/", "/products", "/products?sort=price", "/products/maple-serif"):
        first = await ada.get(path)  # stores the shared page
        assert first.status_code == 200, path
        stored = await runtime.redis.keys("cartwright:pages:*:shared:*")
        assert stored, path
        other = await grace.get(path)  # from the store
        again = await ada.get(path)
        assert other.status_code == 200 and again.status_code == 200, path
        assert "Maple Serif" in other.text and "Maple Serif" in again.text, path
        # Each sees their own header: name, admin link, cart count.
        assert "Grace Hopper" in other.text and "Ada Lovelace" not in other.text, path
        assert "Ada Lovelace" in again.text and "Grace Hopper" not in again.text, path
        assert ">Admin</a>" in other.text and ">Admin</a>" not in again.text, path
        assert _badge(again.text) == "2" and _badge(other.text) == "0", path
        # ... and their own token, which works; never the other's.
        assert _token(other.text) != _token(again.text), path
        assert _token(again.text) not in other.text and _token(other.text) not in again.text, path
        assert "\x00" not in other.text and "cw-personal" not in other.text, path
    # Grace's token from a shared page adds to her cart (the product form on it carries it too).
    detail = await grace.get("/products/maple-serif")
    assert f'value="{_token(detail.text)}"' in detail.text
    grace_adds = await post_form(
        grace, "/cart/items", {"product_id": _product_id(detail.text), "quantity": "1"}, token=_token(detail.text)
    )
    assert grace_adds.status_code in {200, 303}
    assert _badge((await grace.get("/products")).text) == "1"
    # The HTMX grid, shared too, answers each with their own token.
    grids = [await c.get("/products?q=maple", headers={"HX-Request": "true"}) for c in (ada, grace)]
    assert all("Maple Serif" in g.text and "<html" not in g.text for g in grids)
    assert _token((await ada.get("/")).text) in grids[0].text and _token(detail.text) in grids[1].text
    await grace.aclose()


def _flashes(html: str) -> list[str]:
    return texts(html, '.flash[role="status"]')


async def test_flash_messages_are_each_visitors_own_and_show_once(
    client: httpx.AsyncClient, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    await seed_catalog(factory)
    await factory.user(email="ada@example.com", name="Ada Lovelace")
    await factory.user(email="grace@example.com", name="Grace Hopper")
    grace = new_browser()
    await sign_in(client, "ada@example.com")  # queues "Welcome back" for Ada's next page
    first = await client.get("/")  # Ada's welcome, and the shared page is stored
    assert _flashes(first.text) == ["Welcome back, Ada Lovelace."]
    await sign_in(grace, "grace@example.com")
    theirs = await grace.get("/")  # from the store: Grace's own message, never Ada's
    assert _flashes(theirs.text) == ["Welcome back, Grace Hopper."]
    for browser in (client, grace):
        again = await browser.get("/")
        assert again.status_code == 200 and "Sign out" in again.text
        assert _flashes(again.text) == []  # shown once
    await grace.aclose()


async def test_a_catalog_change_shows_at_once_to_signed_in_visitors(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await seed_catalog(factory)
    await factory.user(email="reader@example.com", name="Rita Reader")
    await sign_in(client, "reader@example.com")
    assert "Maple Serif" in (await client.get("/products/maple-serif")).text
    assert "Maple Serif" in (await client.get("/products/maple-serif")).text  # from the store
    async with runtime.db() as db:
        await db.execute(text("UPDATE products SET name = 'Maple Serif Pro' WHERE slug = 'maple-serif'"))
        await db.commit()
    await invalidate_catalog(runtime.redis)
    page = await client.get("/products/maple-serif")
    assert "Maple Serif Pro" in page.text and "Rita Reader" in page.text


async def test_pricing_is_shared_only_between_members_who_see_the_same_prices(
    client: httpx.AsyncClient,
    runtime: Runtime,
    factory: Factory,
    settings: Settings,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    plans = await seeded_plans(runtime, factory, settings)
    holder = await factory.user(email="holder@example.com", name="Holly Holder")
    await factory.user(email="regular@example.com", name="Reggie Regular")
    member = await factory.user(email="member@example.com", name="Mia Member")
    await subscribe(runtime, member, plans["resident"], interval="year")
    async with runtime.db() as db:
        (await db.merge(holder)).holder_pricing = True
        await db.commit()
    regular = new_browser()
    await sign_in(client, "holder@example.com")
    await sign_in(regular, "regular@example.com")
    for _ in range(2):  # the second round from the store
        holder_page = await client.get("/pricing")
        regular_page = await regular.get("/pricing")
        assert "Your account has member pricing" in holder_page.text and "Holly Holder" in holder_page.text
        assert "$15.00 CAD / month instead of $19.00 CAD" in text_of(card(holder_page.text, "community"))
        assert "Your account has member pricing" not in regular_page.text
        assert "Reggie Regular" in regular_page.text
        community = text_of(card(regular_page.text, "community"))
        assert "$19.00 CAD / month" in community and "instead of" not in community
        assert "Your plan" not in regular_page.text and "Your plan" not in holder_page.text
    # A member sees their own plan marked; the others' pages, stored before, never say so.
    await sign_in(client, "member@example.com")
    assert "Your plan billed yearly" in text_of(card((await client.get("/pricing")).text, "resident"))
    assert "Your plan" not in (await regular.get("/pricing")).text
    await regular.aclose()


async def test_a_page_that_changes_nothing_does_not_rewrite_the_session(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await seed_catalog(factory)
    await factory.user(email="quiet@example.com")
    signed_in = await sign_in(client, "quiet@example.com")
    assert SESSION in signed_in.cookies  # sign-in rotates the session: a fresh id, written
    session_id = client.cookies[SESSION]
    assert "Welcome back" in (await client.get("/")).text  # showing the flash changes the session: written
    [key] = [k for k in await runtime.redis.keys("*") if session_id in str(k)]
    stored = await runtime.redis.get(key)
    await runtime.redis.expire(key, 1000)  # a mark: a rewrite would set the session's own TTL again
    for path in ("/products", "/", "/products/maple-serif"):
        page = await client.get(path)
        assert page.status_code == 200 and "Sign out" in page.text
        assert SESSION not in page.cookies, path  # no Set-Cookie
    assert await runtime.redis.get(key) == stored
    assert 0 < await runtime.redis.ttl(key) <= 1000
    # A page that does change it (adding to the cart) writes it, with the full idle TTL again.
    page = await client.get("/products/maple-serif")
    await post_form(client, "/cart/items", {"product_id": _product_id(page.text), "quantity": "1"})
    assert await runtime.redis.get(key) != stored
    assert await runtime.redis.ttl(key) > 1000
    # Signing out still ends it.
    assert (await post_form(client, "/logout", {})).status_code == 303
    assert await runtime.redis.get(key) is None
