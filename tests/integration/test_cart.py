"""The cart as a shopper uses it: add, change, remove (HTMX and plain forms), prices re-read, merge at sign-in."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import delete, select, update

from app.db import models as m
from app.domain.cart.services import MAX_QUANTITY, CartService
from app.lib.runtime import Runtime
from tests.conftest import Factory
from tests.helpers import CSRF_COOKIE, csrf_token, post_form, select_one, sign_in, text_of, texts


async def cart_post(
    client: httpx.AsyncClient, path: str, data: dict[str, str] | None = None, *, target: str | None = ""
) -> httpx.Response:
    """Post like the page's htmx does: ``target`` is the id of the element being swapped (None: a plain post). The
    answer's fragment is the route's (the drawer's forms post to /cart/drawer/...), whatever the target says."""
    token = client.cookies.get(CSRF_COOKIE) or await csrf_token(client, "/cart")
    headers = {"x-csrftoken": token}
    if target is not None:
        headers["HX-Request"] = "true"
        if target:
            headers["HX-Target"] = target
    return await client.post(path, data=data or {}, headers=headers)


async def add(client: httpx.AsyncClient, product: m.Product, quantity: int = 1, **kwargs: Any) -> httpx.Response:
    return await cart_post(client, "/cart/items", {"product_id": str(product.id), "quantity": str(quantity)}, **kwargs)


async def set_quantity(
    client: httpx.AsyncClient, product: m.Product, quantity: int | str, **kwargs: Any
) -> httpx.Response:
    return await cart_post(client, f"/cart/items/{product.id}", {"quantity": str(quantity)}, **kwargs)


async def remove(client: httpx.AsyncClient, product: m.Product, **kwargs: Any) -> httpx.Response:
    return await cart_post(client, f"/cart/items/{product.id}/remove", **kwargs)


def badge(html: str) -> tuple[int, bool]:
    """The header badge's count (from its accessible label) and whether it is an out-of-band swap."""
    tag = select_one(html, "a#cart-badge")
    label = re.fullmatch(r"Cart, (\d+) items?", tag.attributes.get("aria-label") or "")
    assert label, tag.html
    return int(label.group(1)), tag.attributes.get("hx-swap-oob") == "true"


def status_message(html: str) -> str:
    messages = texts(html, '#cart-status[hx-swap-oob="innerHTML"] > p > span')
    assert messages, "no out-of-band status message"
    return messages[0]


async def cart_rows(runtime: Runtime, user: m.User) -> dict[UUID, int]:
    async with runtime.db() as db:
        rows = await db.scalars(select(m.CartItem).where(m.CartItem.user_id == user.id))
        return {row.product_id: row.quantity for row in rows.unique()}


async def edit_product(runtime: Runtime, product: m.Product, **values: Any) -> None:
    async with runtime.db() as db:
        await db.execute(update(m.Product).where(m.Product.id == product.id).values(**values))
        await db.commit()


async def signed_in_client(
    new_browser: Callable[..., httpx.AsyncClient], factory: Factory, email: str
) -> tuple[httpx.AsyncClient, m.User]:
    """A second browser on the same app, signed in as a new customer."""
    user = await factory.user(email=email)
    browser = new_browser()
    await sign_in(browser, email)
    return browser, user


# --- HTMX and plain forms -------------------------------------------------------------------------------------


async def test_anonymous_add_change_and_remove_with_htmx(client: httpx.AsyncClient, factory: Factory) -> None:
    maple = await factory.product(name="Maple Serif", price=3900)
    grotesk = await factory.product(name="Harbour Grotesk", price=4500)

    added = await add(client, maple)  # an "Add to cart" button: swaps nothing, answers out of band only
    assert added.status_code == 200
    assert added.headers["vary"].startswith("HX-Request")
    assert added.headers["hx-trigger"] == "cart-changed"
    assert "<html" not in added.text and 'id="cart"' not in added.text
    assert badge(added.text) == (1, True)
    assert status_message(added.text) == "Added “Maple Serif” to your cart."
    assert 'aria-live="polite"' in added.text
    await add(client, grotesk, 2)

    page = await client.get("/cart")
    assert page.status_code == 200
    assert badge(page.text) == (3, False)
    text = text_of(page.text)
    assert "Maple Serif $39.00 CAD each" in text and "Harbour Grotesk $45.00 CAD each" in text
    assert "Subtotal $129.00 CAD" in text
    assert 'href="/checkout"' in page.text
    # Each quantity field's label names its product for a screen reader ("Quantity of Maple Serif").
    assert "Quantity of Maple Serif" in texts(page.text, 'label[for^="qty-"]')
    assert "of Maple Serif" in texts(page.text, 'label[for^="qty-"] > .visually-hidden')

    changed = await set_quantity(client, maple, 4, target="cart")
    assert changed.status_code == 200
    assert changed.text.lstrip().startswith('<section id="cart"')
    assert "hx-trigger" not in changed.headers  # the cart page's own change: nothing else to refresh
    assert badge(changed.text) == (6, True)
    assert status_message(changed.text) == "Your cart has 4 of “Maple Serif”."
    assert "Subtotal $246.00 CAD" in text_of(changed.text)

    removed = await remove(client, grotesk, target="cart")
    assert removed.status_code == 200
    assert badge(removed.text) == (4, True)
    assert status_message(removed.text) == "Removed “Harbour Grotesk” from your cart."
    assert "Harbour Grotesk" not in text_of(removed.text.split('id="cart-badge"')[0])

    zero = await set_quantity(client, maple, 0, target="cart")  # 0 removes the line
    assert badge(zero.text) == (0, True)
    assert "Your cart is empty." in zero.text
    assert 'href="/products"' in zero.text
    assert "Cart, 0 items" in (await client.get("/products")).text


async def test_drawer_is_a_fragment_for_htmx_and_the_cart_page_otherwise(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    maple = await factory.product(name="Maple Serif", price=3900)
    empty = await client.get("/cart/drawer", headers={"HX-Request": "true"})
    assert empty.text.lstrip().startswith('<div id="cart-drawer-body"')
    assert "Your cart is empty." in empty.text
    await add(client, maple, 2)

    drawer = await client.get("/cart/drawer", headers={"HX-Request": "true"})
    assert drawer.status_code == 200 and "<html" not in drawer.text
    assert "2 \u00d7 $39.00 CAD" in text_of(drawer.text)  # the multiplication sign
    assert 'href="/cart"' in drawer.text and 'href="/checkout"' in drawer.text

    plain = await client.get("/cart/drawer")  # no JavaScript: the link is just the cart page
    assert "<h1>Your cart</h1>" in plain.text

    removed = await cart_post(client, f"/cart/drawer/items/{maple.id}/remove")  # the drawer's own route
    assert removed.text.lstrip().startswith('<div id="cart-drawer-body"')
    assert removed.headers["hx-trigger"] == "cart-changed"  # the cart page, if open underneath, refreshes
    assert badge(removed.text) == (0, True)


async def test_every_page_has_the_badge_drawer_and_status_region(client: httpx.AsyncClient, factory: Factory) -> None:
    product = await factory.product(name="Maple Serif", slug="maple-serif")
    for path in ("/", "/products", "/products/maple-serif", "/cart", "/login", "/no-such-page"):
        html = (await client.get(path)).text
        assert badge(html) == (0, False), path
        assert 'hx-get="/cart/drawer"' in html and 'href="/cart"' in html
        assert '<dialog id="cart-drawer"' in html and 'aria-label="Close cart"' in html
        status = select_one(html, "div#cart-status")
        assert (status.attributes.get("aria-live"), status.text(strip=True)) == ("polite", ""), path
    await add(client, product, 3)
    assert badge((await client.get("/")).text) == (3, False)


async def test_plain_form_posts_redirect_back_with_a_flash(client: httpx.AsyncClient, factory: Factory) -> None:
    maple = await factory.product(name="Maple Serif", slug="maple-serif")
    await csrf_token(client, "/products/maple-serif")
    token = client.cookies[CSRF_COOKIE]
    form = {"product_id": str(maple.id), "quantity": "2", "_csrf_token": token}

    back = await client.post(
        "/cart/items", data=form, headers={"referer": "http://testserver.local/products/maple-serif?x=1"}
    )
    assert back.status_code == 303
    assert back.headers["location"] == "/products/maple-serif?x=1"
    page = await client.get(back.headers["location"])
    assert "Added “Maple Serif” to your cart." in text_of(page.text)
    assert badge(page.text) == (2, False)

    for referer in ("", "https://evil.example/products", "http://testserver.local/cart/items"):
        response = await client.post("/cart/items", data=form, headers={"referer": referer} if referer else {})
        assert response.status_code == 303
        assert response.headers["location"] == "/cart", referer

    updated = await client.post(f"/cart/items/{maple.id}", data={"quantity": "1", "_csrf_token": token})
    assert updated.status_code == 303
    removed = await client.post(f"/cart/items/{maple.id}/remove", data={"_csrf_token": token})
    assert removed.status_code == 303
    assert "Your cart is empty." in (await client.get("/cart")).text


async def test_add_buttons_on_cards_and_product_page(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.product(name="Maple Serif", slug="maple-serif", is_featured=True)
    await factory.product(name="Bread Class", slug="bread-class", stock=3)
    await factory.product(name="Gone Edition", slug="gone-edition", stock=0)

    listing = await client.get("/products")
    assert listing.text.count('hx-post="/cart/items"') == 2
    assert listing.text.count('action="/cart/items"') == 2  # works without JavaScript too
    assert 'aria-label="Add to cart: Maple Serif">Add to cart<' in listing.text
    assert "Sold out" in texts(listing.text, "button[disabled]")
    assert 'name="_csrf_token"' in listing.text

    detail = await client.get("/products/maple-serif")
    field = select_one(detail.text, "input#add-quantity").attributes
    assert (field["name"], field["type"], field["min"], field["max"]) == ("quantity", "number", "1", str(MAX_QUANTITY))
    assert texts(detail.text, 'label[for="add-quantity"]') == ["Quantity"]
    limited = await client.get("/products/bread-class")
    assert select_one(limited.text, "input#add-quantity").attributes["max"] == "3"
    sold_out = await client.get("/products/gone-edition")
    assert "add-quantity" not in sold_out.text and "Sold out" in texts(sold_out.text, "button[disabled]")


# --- rules ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
async def test_quantities_are_capped_per_line_and_by_stock(
    client: httpx.AsyncClient, factory: Factory, signed_in: bool
) -> None:
    if signed_in:
        await factory.user(email="cap@example.com")
        await sign_in(client, "cap@example.com")
    maple = await factory.product(name="Maple Serif")
    bread = await factory.product(name="Bread Class", stock=3)

    await add(client, maple, 8)
    capped = await add(client, maple, 5)
    assert status_message(capped.text) == "You can buy up to 10 of one item, so your cart has 10 of “Maple Serif”."
    assert badge(capped.text) == (10, True)
    again = await add(client, maple)
    assert status_message(again.text) == "You can buy up to 10 of one item, so your cart has 10 of “Maple Serif”."

    limited = await add(client, bread, 5)
    assert status_message(limited.text) == "Only 3 left, so your cart has 3 of “Bread Class”."
    assert badge(limited.text) == (13, True)

    lower = await set_quantity(client, maple, 2, target="cart")
    assert badge(lower.text) == (5, True)
    higher = await set_quantity(client, maple, 500, target="cart")
    assert status_message(higher.text) == "You can buy up to 10 of one item, so your cart has 10 of “Maple Serif”."
    assert re.search(r'id="qty-[^"]+"[^>]* max="10" value="10"', higher.text)
    assert re.search(r'id="qty-[^"]+"[^>]* max="3" value="3"', higher.text)


async def test_concurrent_adds_to_a_signed_in_cart_all_count(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    user = await factory.user(email="double@example.com")
    await sign_in(client, "double@example.com")
    maple = await factory.product(name="Maple Serif")
    responses = await asyncio.gather(*(add(client, maple) for _ in range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert await cart_rows(runtime, user) == {maple.id: 3}


async def test_unavailable_lines_are_flagged_and_left_out_of_the_total(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    user = await factory.user(email="flags@example.com")
    await sign_in(client, "flags@example.com")
    buyable = await factory.product(name="Maple Serif", price=3900)
    retired = await factory.product(name="Retired Font", price=1000)
    sold_out = await factory.product(name="Bread Class", price=2000, stock=5)
    dollars = await factory.product(name="Import", price=700, currency="USD")
    deleted = await factory.product(name="Deleted", price=500)
    for product in (buyable, retired, sold_out, dollars, deleted):
        assert (await add(client, product, 2)).status_code == 200
    await edit_product(runtime, retired, is_active=False)
    await edit_product(runtime, sold_out, stock=0)
    async with runtime.db() as db:
        await db.execute(delete(m.Product).where(m.Product.id == deleted.id))
        await db.commit()

    async with runtime.db() as db:
        session: dict[str, Any] = {}
        cart = await CartService(db, session).priced(user)
    problems = {line.product.name: line.problem for line in cart.lines}
    assert problems == {
        "Maple Serif": None,
        "Retired Font": "No longer for sale",
        "Bread Class": "Sold out",
        "Import": "Priced in USD, not CAD",
    }
    assert [line.product.name for line in cart.purchasable] == ["Maple Serif"]
    assert cart.currency == "CAD"
    assert cart.subtotal == 7800
    assert cart.count == 8 and session["cart_count"] == 8
    assert cart.has_problems and not cart.is_empty

    page = await client.get("/cart")
    text = text_of(page.text)
    assert "No longer for sale — not included in your order." in text
    assert "Sold out — not included in your order." in text
    assert "Subtotal $78.00 CAD" in text
    assert "Retired Font" in text and 'href="/products/' + retired.slug not in page.text  # no link to a 404
    assert len(re.findall(r'id="qty-', page.text)) == 1  # only the buyable line's quantity can change
    assert len(re.findall(r'id="remove-', page.text)) == 4  # every line can be removed


async def test_a_line_above_the_stock_left_is_bought_at_what_is_left(factory: Factory, runtime: Runtime) -> None:
    bread = await factory.product(name="Bread Class", price=2000, stock=10)
    session: dict[str, Any] = {}
    async with runtime.db() as db:
        await CartService(db, session).add(None, bread.id, 6)
    await edit_product(runtime, bread, stock=2)
    async with runtime.db() as db:
        cart = await CartService(db, session).priced(None)
    [line] = cart.lines
    assert (line.quantity, line.problem, line.notice) == (2, None, "Only 2 left, so you can buy at most 2.")
    assert cart.purchasable == [line] and cart.subtotal == 4000
    assert session["cart_count"] == 2


async def test_prices_come_from_the_database_never_the_form(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    maple = await factory.product(name="Maple Serif", price=3900)
    response = await cart_post(
        client,
        "/cart/items",
        {"product_id": str(maple.id), "quantity": "2", "price": "1", "unit_price": "1", "currency": "USD"},
    )
    assert response.status_code == 200
    assert "Subtotal $78.00 CAD" in text_of((await client.get("/cart")).text)

    await edit_product(runtime, maple, price=4500)
    page = await client.get("/cart")
    assert "Maple Serif $45.00 CAD each" in text_of(page.text)
    assert "Subtotal $90.00 CAD" in text_of(page.text)

    user = await factory.user(email="price@example.com")
    await sign_in(client, "price@example.com")
    await edit_product(runtime, maple, price=5000)
    async with runtime.db() as db:
        cart = await CartService(db, {}).priced(user)
        assert [(line.unit_price, line.quantity) for line in cart.lines] == [(5000, 2)]
        assert cart.subtotal == 10_000


async def test_deleted_products_and_garbage_drop_out_of_a_session_cart(factory: Factory, runtime: Runtime) -> None:
    maple = await factory.product(name="Maple Serif", price=3900)
    session: dict[str, Any] = {"cart": {str(maple.id): 2, str(uuid4()): 1, "junk": 3, str(uuid4()): "x"}}
    async with runtime.db() as db:
        cart = await CartService(db, session).priced(None)
    assert [(line.product.name, line.quantity) for line in cart.lines] == [("Maple Serif", 2)]
    assert session == {"cart": {str(maple.id): 2}, "cart_count": 2}


async def test_clear_empties_the_cart_and_the_badge(factory: Factory, runtime: Runtime) -> None:
    user = await factory.user(email="clear@example.com")
    maple = await factory.product(name="Maple Serif")
    session: dict[str, Any] = {}
    async with runtime.db() as db:
        cart = CartService(db, session)
        await cart.add(user, maple.id, 2)
        await cart.add(None, maple.id, 1)
        assert session == {"cart": {str(maple.id): 1}, "cart_count": 1}
        await cart.clear(user)
        await db.commit()
        assert session == {}
        assert (await cart.priced(user)).is_empty
    assert await cart_rows(runtime, user) == {}


# --- sign-in --------------------------------------------------------------------------------------------------


async def test_sign_in_merges_the_anonymous_cart_summing_and_capping(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    user = await factory.user(email="merge@example.com", name="Mo Merge")
    maple = await factory.product(name="Maple Serif")
    grotesk = await factory.product(name="Harbour Grotesk")
    bread = await factory.product(name="Bread Class", stock=4)
    async with runtime.db() as db:
        await CartService(db, {}).add(user, maple.id, 2)
        await CartService(db, {}).add(user, bread.id, 3)
        await db.commit()

    await add(client, maple, 3)
    await add(client, grotesk, 9)
    await add(client, bread, 2)
    assert badge((await client.get("/")).text) == (14, False)

    signed_in = await sign_in(client, "merge@example.com")
    assert signed_in.headers["location"] == "/account"
    assert await cart_rows(runtime, user) == {maple.id: 5, grotesk.id: 9, bread.id: 4}
    account = await client.get("/account")
    assert "Welcome back, Mo Merge." in account.text
    assert badge(account.text) == (18, False)

    # The anonymous cart is gone from the session: signing out leaves an empty cart, and in again shows the account's.
    await post_form(client, "/logout", {})
    assert "Your cart is empty." in (await client.get("/cart")).text
    await sign_in(client, "merge@example.com")
    assert await cart_rows(runtime, user) == {maple.id: 5, grotesk.id: 9, bread.id: 4}
    assert badge((await client.get("/")).text) == (18, False)
    assert "Subtotal $180.00 CAD" in text_of((await client.get("/cart")).text)


async def test_sign_in_with_htmx_and_registration_merge_too(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    maple = await factory.product(name="Maple Serif")
    await add(client, maple, 2)
    registered = await post_form(
        client, "/register", {"email": "new@example.com", "password": "correct horse battery", "name": "Nu"}
    )
    assert registered.status_code == 200  # "check your inbox"; a new account signs in like any other
    await sign_in(client, "new@example.com")
    async with runtime.db() as db:
        user = await db.scalar(select(m.User).where(m.User.email == "new@example.com"))
    assert user is not None
    assert await cart_rows(runtime, user) == {maple.id: 2}
    assert badge((await client.get("/account")).text) == (2, False)

    other = new_browser()
    await factory.user(email="htmx@example.com")
    await add(other, maple, 1)
    response = await post_form(
        other, "/login", {"email": "htmx@example.com", "password": "correct horse battery"}, htmx=True
    )
    assert response.headers["hx-redirect"] == "/account"
    assert badge((await other.get("/account")).text) == (1, False)


async def test_password_change_keeps_the_badge(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="pw@example.com")
    await sign_in(client, "pw@example.com")
    await add(client, await factory.product(name="Maple Serif"), 2)
    changed = await post_form(
        client,
        "/account/password",
        {
            "current_password": "correct horse battery",
            "new_password": "another long passphrase",
            "new_password_confirm": "another long passphrase",
        },
    )
    assert changed.status_code == 303
    assert badge((await client.get("/account")).text) == (2, False)


# --- refusals -------------------------------------------------------------------------------------------------


async def test_posts_without_a_csrf_token_are_refused(client: httpx.AsyncClient, factory: Factory) -> None:
    maple = await factory.product(name="Maple Serif")
    await client.get("/cart")
    form = {"product_id": str(maple.id), "quantity": "1"}
    for path in ("/cart/items", f"/cart/items/{maple.id}", f"/cart/items/{maple.id}/remove"):
        plain = await client.post(path, data=form)
        assert plain.status_code == 403, path
        htmx = await client.post(path, data=form, headers={"HX-Request": "true"})
        assert htmx.status_code == 403
        assert "Your form expired. Reload the page and try again." in htmx.text
    assert badge((await client.get("/cart")).text) == (0, False)


async def test_bad_input_gets_a_clear_4xx_answer(client: httpx.AsyncClient, factory: Factory, runtime: Runtime) -> None:
    maple = await factory.product(name="Maple Serif")
    retired = await factory.product(name="Retired Font", is_active=False)
    gone = await factory.product(name="Gone Edition", stock=0)
    other = await factory.product(name="Not In Cart")
    await add(client, maple, 2)

    cases = [
        ("/cart/items", {"product_id": "not-a-uuid"}, 404, "We couldn't find that product."),
        ("/cart/items", {"product_id": str(uuid4())}, 404, "That product is no longer for sale."),
        ("/cart/items", {"product_id": str(retired.id)}, 404, "That product is no longer for sale."),
        ("/cart/items", {"product_id": str(gone.id)}, 409, "“Gone Edition” is sold out."),
        ("/cart/items", {"product_id": str(maple.id), "quantity": "two"}, 422, "whole number from 1 to 10"),
        ("/cart/items", {"product_id": str(maple.id), "quantity": "0"}, 422, "Choose a quantity from 1 to 10."),
        ("/cart/items", {"product_id": str(maple.id), "quantity": "1.5"}, 422, "whole number from 1 to 10"),
        (f"/cart/items/{maple.id}", {"quantity": ""}, 422, "whole number from 1 to 10"),
        (f"/cart/items/{maple.id}", {"quantity": "-1"}, 422, "Choose a quantity from 1 to 10."),
        (f"/cart/items/{maple.id}", {"quantity": "9" * 40}, 422, "whole number from 1 to 10"),
        (f"/cart/items/{other.id}", {"quantity": "2"}, 404, "“Not In Cart” is no longer in your cart."),
        ("/cart/items/nonsense", {"quantity": "2"}, 404, "We couldn't find that product."),
        ("/cart/items/nonsense/remove", {}, 404, "We couldn't find that product."),
    ]
    for path, data, status, message in cases:
        htmx = await cart_post(client, path, data)
        assert htmx.status_code == status, (path, data, htmx.text)
        assert badge(htmx.text) == (2, True)
        if path == "/cart/items":
            # An add button swaps nothing: the message comes in the status region, out of band.
            assert message in status_message(htmx.text)
        else:
            # The cart page's own forms: their route answers with the cart as it is, around the message.
            assert htmx.text.lstrip().startswith('<section id="cart"')
            assert any(message in error for error in texts(htmx.text, 'p.form-error[role="alert"]'))
            assert "Maple Serif" in htmx.text
        plain = await cart_post(client, path, data, target=None)
        assert plain.status_code == status
        assert "<h1>Your cart</h1>" in plain.text and message in text_of(plain.text).replace("&#39;", "'")
        assert "Traceback" not in plain.text + htmx.text
    assert badge((await client.get("/cart")).text) == (2, False)


async def test_one_customer_cannot_touch_another_customers_cart(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    ann, ann_user = await signed_in_client(new_browser, factory, "ann@example.com")
    bob, bob_user = await signed_in_client(new_browser, factory, "bob@example.com")
    maple = await factory.product(name="Maple Serif")
    await add(ann, maple, 3)

    assert "Your cart is empty." in (await bob.get("/cart")).text
    assert (await remove(bob, maple, target="cart")).status_code == 200  # removes from Bob's own (empty) cart
    assert (await set_quantity(bob, maple, 1, target="cart")).status_code == 404
    anonymous = await remove(client, maple, target="cart")
    assert anonymous.status_code == 200

    assert await cart_rows(runtime, ann_user) == {maple.id: 3}
    assert await cart_rows(runtime, bob_user) == {}
    assert badge((await ann.get("/cart")).text) == (3, False)
    await add(bob, maple, 1)
    assert await cart_rows(runtime, ann_user) == {maple.id: 3}
    assert await cart_rows(runtime, bob_user) == {maple.id: 1}
