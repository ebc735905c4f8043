"""The back office's main journey, across four browsers: an admin creates a product with a file; a customer buys
it; the admin's open dashboard shows the order live; support refunds part of it; the customer sees the refund."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, SUPPORT, register, sign_in, unique_email, wait_for_mail
from e2e.test_admin_catalog import create_product, upload_product_file
from e2e.test_admin_dashboard import SSE_OPEN
from e2e.test_purchase import continue_to_payment, expect_paid, fill_billing, pay_with
from tests.support import Mailbox, body_text

pytestmark = pytest.mark.e2e


def test_product_to_purchase_to_live_dashboard_to_partial_refund_seen_by_the_customer(
    page: Page, browser: Browser, base_url: str, mailbox: Mailbox, products_to_archive: list[str]
) -> None:
    run = os.urandom(3).hex()
    name = f"Bookbinding Basics {run}"
    products_to_archive.append(name)
    content = b"%PDF-1.7\n" + os.urandom(64 * 1024) + b"\n%%EOF\n"

    # The admin adds the product, then keeps the dashboard open (the page this test drives).
    page.add_init_script(SSE_OPEN)
    page.goto("/login?next_url=/admin/products")
    sign_in(page, *ADMIN)
    expect(page.get_by_role("heading", level=1, name="Products")).to_be_visible()
    create_product(page, name=name, price="24.00", summary="Sew your first book.")
    upload_product_file(page, "bookbinding.pdf", content)
    page.goto("/admin?period=7d")
    page.wait_for_function("window.__sseOpen === true")
    page.evaluate("window.__noReload = true")

    # A customer with an account buys it (Ontario: 13 % HST, so $27.12).
    email = unique_email("binder")
    customer = browser.new_context(base_url=base_url)
    shopper = customer.new_page()
    register(shopper, email=email, password="a long and unusual passphrase", name="Bea Binder")
    shopper.goto("/products?q=" + run)
    shopper.get_by_role("button", name=f"Add to cart: {name}").click()
    expect(shopper.locator("#cart-badge .badge")).to_have_text("1")
    shopper.goto("/checkout")
    fill_billing(shopper, email=None)
    continue_to_payment(shopper)
    pay_with(shopper, "4242 4242 4242 4242")
    number = expect_paid(shopper)

    # The dashboard shows it without a reload.
    feed = page.locator("#activity-feed")
    expect(feed.locator("li").first).to_contain_text(f"Order #{number} paid", timeout=20_000)
    expect(feed.locator("li").first).to_contain_text(email)
    assert page.evaluate("window.__noReload") is True

    # Support finds the order and refunds $10 of it, through the confirmation dialog.
    support = browser.new_context(base_url=base_url)
    try:
        desk = support.new_page()
        desk.goto("/login?next_url=/admin/orders")
        sign_in(desk, *SUPPORT)
        desk.get_by_label("Order number or email").fill(f"#{number}")
        expect(desk.locator("#admin-orders tbody tr")).to_have_count(1)
        desk.get_by_role("link", name=f"#{number}").click()
        expect(desk.get_by_role("heading", level=1, name=f"Order #{number}")).to_be_visible()
        desk.get_by_label("Amount (CAD)").fill("10.00")
        desk.get_by_label("Reason", exact=True).fill("Two chapters missing their diagrams")
        dialogs: list[str] = []
        desk.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
        desk.get_by_role("button", name="Refund…").click()
        expect(desk.get_by_role("status").filter(has_text="Refund requested")).to_be_visible()
        assert dialogs == [f"Refund $10.00 CAD on order #{number}?"]
        # Stripe confirms through its webhook; the refund notice to the customer is sent from that same update.
        [*_, notice] = wait_for_mail(mailbox, email, count=3)  # welcome, receipt, refund notice
        assert "$10.00 CAD" in body_text(notice)
        desk.reload()
        expect(desk.locator("#order-refunds")).to_contain_text("$10.00 CAD")
        expect(desk.get_by_text("Partly refunded").first).to_be_visible()
    finally:
        support.close()

    # The admin's feed shows the refund too, still without a reload.
    expect(feed.locator("li").first).to_contain_text(re.compile(r"[Rr]efund"), timeout=20_000)
    assert page.evaluate("window.__noReload") is True

    # The customer sees it on the order; the download still works (a partial refund keeps it).
    shopper.goto("/account/orders")
    shopper.get_by_role("link", name=f"#{number}").click()
    expect(shopper.get_by_text("Partly refunded").first).to_be_visible()
    expect(shopper.locator("main")).to_contain_text("$10.00 CAD")
    with shopper.expect_download() as download:
        shopper.get_by_role("link", name="Download").first.click()
    assert download.value.suggested_filename == "bookbinding.pdf"
    customer.close()
