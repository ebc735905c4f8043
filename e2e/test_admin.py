"""The back office door: customers are refused, visitors are sent to sign in and brought back."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import (
    ADMIN,
    CUSTOMER,
    register,
    request_password_reset,
    sign_in,
    sign_out,
    unique_email,
    wait_for_mail,
)
from tests.support import Mailbox

pytestmark = pytest.mark.e2e


def test_a_customer_gets_the_403_page(page: Page, base_url: str) -> None:
    page.goto("/login")
    sign_in(page, *CUSTOMER)
    expect(page).to_have_url(f"{base_url}/account")

    response = page.goto("/admin")
    assert response is not None
    assert response.status == 403
    expect(page).to_have_url(f"{base_url}/admin")
    expect(page.get_by_role("heading", level=1)).to_have_text("You don't have access to that page")
    expect(page).to_have_title("You don't have access to that page — Cartwright")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)  # no way in from the header either
    expect(page.get_by_role("link", name="Go to the shop")).to_be_visible()


def test_visitor_signs_in_as_admin_and_lands_back_on_admin(
    page: Page, browser: Browser, base_url: str, mailbox: Mailbox
) -> None:
    # Something for the outbox: a new customer (welcome email) who then asks for a password reset.
    email = unique_email("outbox")
    customer = browser.new_context(base_url=base_url)
    try:
        other = customer.new_page()
        register(other, email=email, password="a long and unusual passphrase", name="Olive Outbox")
        sign_out(other)
        request_password_reset(other, email)
    finally:
        customer.close()
    wait_for_mail(mailbox, email, count=2)

    page.goto("/admin")
    expect(page).to_have_url(f"{base_url}/login?next_url=%2Fadmin")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    sign_in(page, *ADMIN)

    expect(page).to_have_url(f"{base_url}/admin")
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Welcome back, Ada Admin.")
    admin_nav = page.get_by_role("navigation", name="Admin")
    expect(admin_nav.get_by_role("link", name="Dashboard")).to_have_attribute("aria-current", "page")

    admin_nav.get_by_role("link", name="Email outbox").click()
    expect(page).to_have_url(f"{base_url}/admin/emails")
    expect(page.get_by_role("heading", level=1, name="Email outbox")).to_be_visible()
    rows = page.get_by_role("row").filter(has_text=email)
    expect(rows).to_have_count(2)
    welcome = rows.filter(has_text="Welcome to Cartwright, Olive Outbox")
    reset = rows.filter(has_text="Reset your Cartwright password")
    expect(welcome.get_by_role("cell").nth(3)).to_have_text("welcome")
    expect(reset.get_by_role("cell").nth(3)).to_have_text("password reset")
    # The outbox is one of the back office tables: filter by kind, the URL follows.
    page.get_by_label("Kind").select_option("password_reset")
    expect(page).to_have_url(re.compile(r"/admin/emails\?kind=password_reset&sort=-created$"))  # no empty fields
    expect(page.get_by_role("row").filter(has_text=email)).to_have_count(1)

    # And one message opens.
    reset.get_by_role("link", name="Reset your Cartwright password").click()
    expect(page.get_by_role("heading", level=1, name="Reset your Cartwright password")).to_be_visible()
    # Its reset link is masked: staff read what was sent, not the customer's working link (docs/security.md).
    expect(page.locator(".email-text")).to_contain_text("Choose a new password here")
    expect(page.locator(".email-text")).to_contain_text("[link hidden")
    expect(page.locator(".email-text")).not_to_contain_text("/reset-password/")
