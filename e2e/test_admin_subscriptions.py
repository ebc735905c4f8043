"""Support cancels a member's subscription from the back office (#16 item 5); the member sees it on their account."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import SUPPORT, register, sign_in, unique_email
from e2e.test_subscriptions import pay_with, start_subscription

pytestmark = pytest.mark.e2e


def test_support_cancels_a_subscription_and_the_member_sees_it(page: Page, browser: Browser, base_url: str) -> None:
    email = unique_email("member")
    register(page, email=email, password="a long member password", name="Cora Cancel")
    start_subscription(page, "Studio")
    pay_with(page, "4242 4242 4242 4242")
    expect(page).to_have_url(re.compile(r"/account/subscription$"), timeout=20_000)
    expect(page.get_by_role("heading", name=re.compile(r"Studio\s+Active"))).to_be_visible()

    context = browser.new_context(base_url=base_url)
    try:
        support = context.new_page()
        support.goto("/admin/subscriptions")
        sign_in(support, *SUPPORT)
        expect(support).to_have_url(f"{base_url}/admin/subscriptions")
        support.get_by_label("Member email or Stripe id").fill(email)
        support.get_by_role("link", name=email).click()
        expect(support.get_by_role("heading", level=1, name="Subscription of Cora Cancel")).to_be_visible()
        expect(support.get_by_role("button", name="Apply code")).to_have_count(0)  # admins only
        expect(support.get_by_role("button", name="Pause collection")).to_be_visible()
        support.set_viewport_size({"width": 390, "height": 844})  # the rest happens on a phone: the page fits it
        assert support.evaluate("document.documentElement.scrollWidth") <= 390

        support.once("dialog", lambda dialog: dialog.accept())  # hx-confirm: the browser asks first
        support.get_by_role("button", name="Cancel now").click()
        expect(support.get_by_text("Subscription canceled: the member's access ended now.")).to_be_visible()
        expect(support.locator("#subscription-facts")).to_contain_text("Canceled")
        expect(support.get_by_role("button", name="Cancel now")).to_have_count(0)
    finally:
        context.close()

    page.goto("/account/subscription")
    expect(page.get_by_text("You don't have a plan right now")).to_be_visible()
