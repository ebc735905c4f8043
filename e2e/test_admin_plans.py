"""Plans in the browser (#16 item 1): the admin creates a plan (after a mistake the form shows next to the field),
it is on the pricing page, and a customer subscribes to it and pays with the Payment Element."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, LiveServer, register, sign_in, unique_email
from e2e.test_subscriptions import pay_with

pytestmark = pytest.mark.e2e


def archive_plan(browser: Browser, base_url: str, name: str) -> None:
    """Take the journey's plan off the pricing page again, so the other journeys find the demo plans as seeded."""
    context = browser.new_context(base_url=base_url)
    try:
        staff = context.new_page()
        staff.goto("/login?next_url=/admin/plans")
        sign_in(staff, *ADMIN)
        staff.get_by_role("link", name=name).click()
        staff.once("dialog", lambda dialog: dialog.accept())
        staff.get_by_role("button", name=f"Archive {name}").click()
        expect(staff.get_by_role("heading", level=1, name="Plans")).to_be_visible()
    finally:
        context.close()


def test_admin_creates_a_plan_and_a_customer_subscribes_to_it(
    page: Page, browser: Browser, live_server: LiveServer
) -> None:
    name = f"Atelier {os.urandom(3).hex()}"
    admin = browser.new_context(base_url=live_server.base_url)
    created = False
    try:
        staff = admin.new_page()
        staff.goto("/login?next_url=/admin/plans")
        sign_in(staff, *ADMIN)
        expect(staff.get_by_role("heading", level=1, name="Plans")).to_be_visible()
        staff.get_by_role("link", name="New plan").click()

        # A mistake first: the error shows next to the field, and what was typed is kept.
        staff.get_by_label("Name", exact=True).fill(name)
        staff.get_by_label("Description").fill("A bench in the print shop")
        staff.get_by_label("Features").fill("Bench in the print shop\nTwo room hours a month")
        staff.get_by_label("Monthly price", exact=True).fill("twenty")
        staff.get_by_label("Meeting-room hours").fill("2")
        staff.get_by_label("Order on the pricing page").fill("90")
        staff.get_by_role("button", name="Create plan").click()
        expect(staff.get_by_text("Enter an amount such as 49.00, or leave it empty.")).to_be_visible()
        expect(staff.get_by_label("Description")).to_have_value("A bench in the print shop")

        staff.get_by_label("Monthly price", exact=True).fill("25.00")
        staff.get_by_role("button", name="Create plan").click()
        expect(staff.get_by_role("heading", level=1, name=name)).to_be_visible()
        created = True
        expect(staff.get_by_role("status").filter(has_text="it is on the pricing page now")).to_be_visible()
        expect(staff.get_by_label("Monthly price", exact=True)).to_have_value("25.00")
        expect(staff.get_by_text("Every subscriber pays a current price.")).to_be_visible()
        # The plan's page fits a phone: nothing scrolls sideways at 390 px.
        staff.set_viewport_size({"width": 390, "height": 844})
        staff.reload()
        expect(staff.get_by_role("heading", level=1, name=name)).to_be_visible()
        assert staff.evaluate("document.documentElement.scrollWidth") <= 390

        # A customer finds it on the pricing page and subscribes.
        register(page, email=unique_email("atelier"), password="a long atelier password", name="Ada Atelier")
        page.goto("/pricing")
        card = page.locator("article").filter(has_text=name)
        expect(card.get_by_text("Bench in the print shop", exact=True)).to_be_visible()
        expect(card.get_by_text("2 meeting-room hours")).to_be_visible()
        card.get_by_role("link", name=f"Subscribe: {name}, monthly").click()
        expect(page.get_by_role("heading", name=name)).to_be_visible()
        page.get_by_label("Billing province or territory").select_option(label="Alberta")
        page.get_by_role("button", name="Continue to payment").click()
        expect(page).to_have_url(re.compile(r"/subscriptions/[0-9a-f-]{36}/pay$"))
        pay_with(page, "4242 4242 4242 4242")
        expect(page).to_have_url(re.compile(r"/account/subscription$"), timeout=20_000)
        expect(page.get_by_role("heading", name=re.compile(rf"{name}\s+Active"))).to_be_visible()
        expect(page.get_by_text("$25.00 CAD per month")).to_be_visible()
    finally:
        admin.close()
        if created:
            archive_plan(browser, live_server.base_url, name)
