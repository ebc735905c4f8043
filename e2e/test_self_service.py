"""Issue #16 item 8: a customer downloads their data and closes their account; they can no longer sign in,
and their order stays in the back office without their name or email."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, register, sign_in, unique_email
from e2e.test_purchase import GUIDE, add_to_cart, continue_to_payment, expect_paid, fill_billing, pay_with

pytestmark = pytest.mark.e2e

PASSWORD = "a long leaving passphrase"


def test_a_customer_exports_their_data_closes_the_account_and_the_order_stays_anonymised(
    page: Page, browser: Browser, base_url: str
) -> None:
    email = unique_email("leaver")
    register(page, email=email, password=PASSWORD, name="Lee Leaver")
    add_to_cart(page, *GUIDE)
    page.goto("/checkout")
    fill_billing(page, email=None)
    continue_to_payment(page)
    pay_with(page, "4242 4242 4242 4242")
    number = expect_paid(page)

    page.goto("/account")
    page.get_by_role("link", name="Profile, sign-ins and data").click()
    expect(page.get_by_role("heading", level=1, name="Profile, sign-ins and data")).to_be_visible()
    expect(page.locator(".device-list")).to_contain_text("this device")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download my data").click()
    archive = zipfile.ZipFile(io.BytesIO(download_info.value.path().read_bytes()))
    orders = json.loads(archive.read("orders.json"))
    assert [str(o["number"]) for o in orders] == [number]

    page.get_by_role("link", name="Close my account").click()
    page.get_by_label("Your password, to confirm").fill("not my password")
    page.get_by_role("button", name="Close my account for good").click()
    expect(page.locator("#f-password-error")).to_have_text("That is not your current password.")
    page.get_by_label("Your password, to confirm").fill(PASSWORD)
    page.get_by_role("button", name="Close my account for good").click()
    expect(page).to_have_url(f"{base_url}/")
    expect(page.get_by_role("status")).to_have_text("Your account is closed. Thank you for shopping with us.")

    page.goto("/login")
    sign_in(page, email, PASSWORD)
    expect(page.locator("#login-form").get_by_role("alert")).to_have_text("Email or password is incorrect.")

    staff = browser.new_context(base_url=base_url).new_page()
    staff.goto("/login?next_url=/admin/orders")
    sign_in(staff, *ADMIN)
    staff.get_by_label("Search").fill(number)
    row = staff.locator("table tbody tr").filter(has_text=f"#{number}")
    expect(row).to_have_count(1)
    expect(row).not_to_contain_text(email)
    expect(row).to_contain_text(re.compile(r"deleted-[0-9a-f]+@invalid"))
    staff.context.close()
