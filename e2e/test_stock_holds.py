"""Limited stock held at checkout (#13 item 5): the buyer who placed the order first holds the last unit; a second
buyer with it in the cart is told someone else is checking it out, and cannot order it."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, LiveServer, sign_in
from e2e.test_purchase import add_to_cart, continue_to_payment, fill_billing

pytestmark = pytest.mark.e2e


def test_the_last_unit_is_held_for_the_buyer_who_ordered_first(
    page: Page, browser: Browser, live_server: LiveServer, products_to_archive: list[str]
) -> None:
    run = os.urandom(3).hex()
    name = f"Numbered Print {run}"
    products_to_archive.append(name)
    admin = browser.new_context(base_url=live_server.base_url)
    try:
        staff = admin.new_page()
        staff.goto("/login?next_url=/admin/products")
        sign_in(staff, *ADMIN)
        staff.get_by_role("link", name="New product").click()
        staff.get_by_label("Name", exact=True).fill(name)
        staff.get_by_label("Price (CAD)").fill("30.00")
        staff.get_by_label("Summary").fill("One numbered print, the last of the edition.")
        staff.get_by_label("Stock").fill("1")
        staff.get_by_label("Category").select_option(index=1)
        staff.get_by_role("button", name="Create product").click()
        expect(staff.get_by_role("heading", level=1, name=name)).to_be_visible()
    finally:
        admin.close()
    slug = f"numbered-print-{run}"

    second = browser.new_context(base_url=live_server.base_url)
    try:
        other = second.new_page()
        add_to_cart(other, slug, name)  # Bob puts it in his cart first...
        add_to_cart(page, slug, name)
        page.goto("/checkout")
        fill_billing(page, email="ann-holds@example.com")
        continue_to_payment(page)  # ...but Ann places her order first: the unit is held for her

        other.goto(f"/products/{slug}")
        expect(other.get_by_role("button", name="Sold out")).to_be_disabled()
        other.goto("/cart")
        expect(
            other.get_by_text("Another buyer is checking out the last one; it may be back in a few minutes")
        ).to_be_visible()
    finally:
        second.close()
