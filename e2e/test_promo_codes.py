"""Promo codes: an admin creates one in the browser; a customer applies one at checkout and pays the discounted
total, and the receipt and the order page show the discount."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, CUSTOMER, LiveServer, sign_in, wait_for_mail
from e2e.test_purchase import GUIDE, add_to_cart, continue_to_payment, expect_paid, fill_billing, pay_with
from tests.support import body_text

pytestmark = pytest.mark.e2e

MINUS = "\u2212"


def create_code(page: Page, code: str, percent: str, *, months: str = "") -> None:
    """On the admin's promo-code list: open the form, create the code, land back on the list."""
    page.goto("/admin/promo-codes")
    page.get_by_role("link", name="New promo code").click()
    page.get_by_label("Code", exact=True).fill(code)
    page.get_by_label("Percent off (for a percentage)").fill(percent)
    if months:
        page.get_by_label("Duration (for memberships)").select_option("repeating")
        page.get_by_label("Months (for a number of months)").fill(months)
    page.get_by_role("button", name="Create promo code").click()
    expect(page.get_by_text(f"Promo code {code} created.")).to_be_visible()


def sign_in_to_promo_codes(page: Page, base_url: str) -> None:
    page.goto("/admin/promo-codes")  # sends a visitor to sign in, and back here afterwards
    sign_in(page, *ADMIN)
    expect(page).to_have_url(f"{base_url}/admin/promo-codes")


def test_an_admin_creates_a_promo_code_in_the_browser(page: Page, base_url: str) -> None:
    code = f"SPRING-{secrets.token_hex(3).upper()}"
    sign_in_to_promo_codes(page, base_url)
    page.get_by_role("link", name="New promo code").click()
    # A mistake is explained next to the field, and what was typed stays.
    page.get_by_label("Code", exact=True).fill(code.lower())
    page.get_by_label("Percent off (for a percentage)").fill("150")
    page.get_by_role("button", name="Create promo code").click()
    expect(page.get_by_text("Enter a percentage from 1 to 100, like 15 or 12.5.")).to_be_visible()
    expect(page.get_by_label("Code", exact=True)).to_have_value(code.lower())
    page.get_by_label("Percent off (for a percentage)").fill("20")
    page.get_by_label("Duration (for memberships)").select_option("repeating")
    page.get_by_label("Months (for a number of months)").fill("3")
    page.get_by_role("button", name="Create promo code").click()
    expect(page.get_by_text(f"Promo code {code} created.")).to_be_visible()
    page.get_by_label("Code", exact=True).fill(code)  # the table's search box
    row = page.get_by_role("row").filter(has_text=code)
    expect(row).to_contain_text("20 % off")
    expect(row).to_contain_text("repeating (3 months)")
    expect(row).to_contain_text("Active")


def test_a_customer_applies_a_promo_code_at_checkout_and_pays_the_discounted_total(
    page: Page, browser: Browser, live_server: LiveServer, base_url: str
) -> None:
    code = f"SAVE20-{secrets.token_hex(3).upper()}"
    admin = browser.new_page(base_url=base_url)
    sign_in_to_promo_codes(admin, base_url)
    create_code(admin, code, "20")
    admin.close()

    page.goto("/login")
    sign_in(page, *CUSTOMER)
    expect(page).to_have_url(f"{base_url}/account")
    add_to_cart(page, *GUIDE)  # $15.00
    page.goto("/cart")
    page.locator("#cart-promo-code").fill("nonsense-code")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("This code can't be applied. Check it and try again.")).to_be_visible()
    page.locator("#cart-promo-code").fill(code.lower())
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#cart")).to_contain_text(f"Code {code} applied: 20 % off")
    expect(page.locator("#cart")).to_contain_text(f"{MINUS}$3.00 CAD")

    page.get_by_role("link", name="Checkout").click()
    fill_billing(page, email=None)
    summary = page.locator("#order-summary")
    expect(summary).to_contain_text(f"Discount ({code}, 20 % off)")
    expect(summary).to_contain_text("HST 13%")
    expect(summary).to_contain_text("$1.56 CAD")  # 13 % of the discounted $12.00
    expect(summary).to_contain_text("$13.56 CAD")
    continue_to_payment(page)
    expect(page.get_by_role("button", name="Pay $13.56 CAD")).to_be_enabled()
    mail_before = len(live_server.mailbox.to(CUSTOMER[0]))  # the demo customer may have older receipts
    pay_with(page, "4242 4242 4242 4242")
    number = expect_paid(page)
    expect(page.get_by_role("row", name=f"Discount ({code}) {MINUS}$3.00 CAD")).to_be_visible()

    page.get_by_role("link", name="View in your account").click()
    expect(page.get_by_role("heading", name=re.compile(f"Order #{number}"))).to_be_visible()
    expect(page.get_by_role("row", name=f"Discount ({code}) {MINUS}$3.00 CAD")).to_be_visible()

    messages = wait_for_mail(live_server.mailbox, CUSTOMER[0], count=mail_before + 1)
    [receipt] = [msg for msg in messages if f"#{number}" in str(msg["Subject"])]
    body = body_text(receipt)
    assert f"Discount ({code})" in body
    assert "$3.00 CAD" in body and "$13.56 CAD" in body


def test_a_customer_mistyping_a_code_many_times_is_asked_to_try_again_later(page: Page, base_url: str) -> None:
    """Hole 9's other half: guessing codes is rate-limited (promo_apply_session, 10 per 10 minutes)."""
    add_to_cart(page, *GUIDE)
    page.goto("/cart")
    field = page.locator("#cart-promo-code")
    for n in range(10):
        field.fill(f"guess-{n}")
        page.get_by_role("button", name="Apply").click()
        # Typed in lower case, echoed upper-cased: this waits for this try's answer, not the last one's.
        expect(field).to_have_value(f"GUESS-{n}")
        expect(page.locator("#cart")).to_contain_text("This code can't be applied.")
    field.fill("guess-10")
    page.get_by_role("button", name="Apply").click()
    expect(field).to_have_value("GUESS-10")
    expect(page.locator("#cart")).to_contain_text("Please wait a little and try again later.")
    expect(page.locator("#cart")).not_to_contain_text("This code can't be applied.")
    # Still the cart page, with the cart intact: only the code was refused.
    expect(page).to_have_url(f"{base_url}/cart")
    expect(page.locator("#cart")).to_contain_text(GUIDE[1])
