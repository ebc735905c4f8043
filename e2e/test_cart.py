"""Cart journey: add from the list and a product page, badge and drawer without reloads, change, remove, sign in."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from app.cli.seed_data import PRODUCTS
from app.lib.money import format_money
from e2e.conftest import CUSTOMER, htmx_settled, sign_in

pytestmark = pytest.mark.e2e

PRICES = {p["name"]: p["price"] for p in PRODUCTS}
FONT, COURSE = "Maple Serif", "Python for Analysts"


def _money(amount: int) -> str:
    return format_money(amount, "CAD")


def test_cart_from_browsing_to_signed_in(page: Page, base_url: str) -> None:
    badge = page.locator("#cart-badge")
    status = page.locator("#cart-status")

    # Add from the product list: an HTMX post; the badge and the confirmation change without a page load.
    page.goto("/products?q=maple+serif")
    expect(badge).to_have_accessible_name("Cart, 0 items")
    page.evaluate("window.__marker = 1")
    page.get_by_role("button", name=f"Add to cart: {FONT}").click()
    expect(status).to_contain_text(f"Added “{FONT}” to your cart.")
    expect(badge).to_have_accessible_name("Cart, 1 item")
    expect(badge.locator(".badge")).to_have_text("1")
    assert page.evaluate("window.__marker") == 1, "adding to the cart reloaded the page"

    # Add two from the product page, typing the quantity and submitting with the keyboard.
    page.goto("/products/python-for-analysts")
    page.evaluate("window.__marker = 1")
    quantity = page.get_by_label("Quantity", exact=True)
    quantity.fill("2")
    quantity.press("Enter")
    expect(status).to_contain_text(f"Added “{COURSE}” to your cart.")
    expect(badge).to_have_accessible_name("Cart, 3 items")
    assert page.evaluate("window.__marker") == 1

    # The mini-cart drawer: opened from the header link with the keyboard, closed with Escape or its button.
    drawer = page.get_by_role("dialog", name="Your cart")
    expect(drawer).to_be_hidden()
    htmx_settled(page)  # the badge the add swapped in is wired up
    badge.focus()
    page.keyboard.press("Enter")
    expect(drawer).to_be_visible()
    expect(drawer.get_by_role("link", name=FONT)).to_be_visible()
    expect(drawer.get_by_text(f"2 \u00d7 {_money(PRICES[COURSE])}")).to_be_visible()
    expect(drawer.get_by_text(f"Subtotal {_money(PRICES[FONT] + 2 * PRICES[COURSE])}")).to_be_visible()
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    expect(badge).to_be_focused()
    page.keyboard.press("Enter")
    expect(drawer).to_be_visible()
    close = drawer.get_by_role("button", name="Close cart")
    expect(close).to_be_focused()
    page.keyboard.press("Enter")
    expect(drawer).to_be_hidden()
    assert page.evaluate("window.__marker") == 1, "the drawer reloaded the page"

    # The cart page: change a quantity; only the cart is swapped.
    badge.click()
    drawer.get_by_role("link", name="View cart").click()
    expect(page).to_have_url(f"{base_url}/cart")
    expect(page.get_by_role("heading", level=1, name="Your cart")).to_be_visible()
    page.evaluate("window.__marker = 1")
    course_quantity = page.get_by_label(f"Quantity of {COURSE}")
    expect(course_quantity).to_have_value("2")
    course_quantity.fill("3")
    course_quantity.press("Enter")
    expect(badge).to_have_accessible_name("Cart, 4 items")
    subtotal = page.locator(".cart-summary .cart-subtotal")
    expect(subtotal).to_have_text(f"Subtotal {_money(PRICES[FONT] + 3 * PRICES[COURSE])}")
    expect(page.get_by_label(f"Quantity of {COURSE}")).to_be_focused()  # focus survives the swap

    # Removing from the drawer over the cart page updates the page underneath too (the cart-changed event).
    badge.click()
    drawer.get_by_role("button", name=f"Remove {FONT}").click()
    expect(drawer.get_by_role("link", name=FONT)).to_have_count(0)
    expect(status).to_contain_text(f"Removed “{FONT}” from your cart.")
    expect(badge).to_have_accessible_name("Cart, 3 items")
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    expect(page.get_by_role("heading", name=FONT)).to_have_count(0)
    expect(subtotal).to_have_text(f"Subtotal {_money(3 * PRICES[COURSE])}")
    expect(page.get_by_role("region", name="Cart contents").get_by_role("link", name="Checkout")).to_have_attribute(
        "href", "/checkout"
    )
    assert page.evaluate("window.__marker") == 1, "changing the cart reloaded the page"

    # Signing in keeps what was chosen before: the anonymous cart merges into the demo customer's.
    page.get_by_role("link", name="Sign in", exact=True).click()
    sign_in(page, *CUSTOMER)
    expect(page).to_have_url(f"{base_url}/account")
    expect(badge).to_have_accessible_name("Cart, 3 items")
    page.goto("/cart")
    expect(page.get_by_label(f"Quantity of {COURSE}")).to_have_value("3")
    expect(page.get_by_role("heading", name=FONT)).to_have_count(0)

    # Leave the shared demo account's cart empty for the journeys that follow.
    page.get_by_role("button", name=f"Remove {COURSE}").click()
    expect(page.get_by_text("Your cart is empty.")).to_be_visible()
    expect(badge).to_have_accessible_name("Cart, 0 items")
    expect(page.get_by_role("link", name="Browse products")).to_have_attribute("href", re.compile(r"/products$"))
