"""The live dashboard: an admin watches a customer's order arrive without reloading; support sees no money."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, SUPPORT, sign_in, unique_email
from e2e.test_purchase import BOOKS, add_to_cart, continue_to_payment, expect_paid, fill_billing, pay_with

pytestmark = pytest.mark.e2e

# The htmx SSE extension announces its connection; remember it so the test knows the stream is open.
SSE_OPEN = "document.addEventListener('htmx:sseOpen', () => { window.__sseOpen = true })"


def test_admin_sees_a_new_order_arrive_live(page: Page, browser: Browser, base_url: str) -> None:
    page.add_init_script(SSE_OPEN)
    page.goto("/login")
    sign_in(page, *ADMIN)
    expect(page).to_have_url(f"{base_url}/admin")
    page.goto("/admin?period=7d")
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()
    orders = page.locator('[data-kpi="orders"] .kpi-value')
    before = int(orders.inner_text().replace(",", ""))
    expect(page.get_by_role("img", name=re.compile("Revenue per day"))).to_be_visible()
    page.wait_for_function("window.__sseOpen === true")
    page.evaluate("window.__noReload = true")

    email = unique_email("live")
    customer = browser.new_context(base_url=base_url)
    try:
        shopper = customer.new_page()
        add_to_cart(shopper, *BOOKS)
        shopper.goto("/checkout")
        fill_billing(shopper, email=email)
        continue_to_payment(shopper)
        pay_with(shopper, "4242 4242 4242 4242")
        number = expect_paid(shopper)
    finally:
        customer.close()

    feed = page.locator("#activity-feed")
    expect(feed.locator("li").first).to_contain_text(f"Order #{number} paid", timeout=20_000)
    expect(feed.locator("li").first).to_contain_text(email)
    expect(orders).to_have_text(f"{before + 1:,}", timeout=20_000)
    assert page.evaluate("window.__noReload") is True  # the same page, never reloaded

    # The range is in the URL: a preset pushes it, Back returns to the previous range.
    page.get_by_role("link", name="Last 30 days").click()
    expect(page).to_have_url(f"{base_url}/admin?period=30d")
    expect(page.get_by_role("link", name="Last 30 days")).to_have_attribute("aria-current", "true")
    page.go_back()
    expect(page).to_have_url(f"{base_url}/admin?period=7d")
    expect(page.get_by_role("link", name="Last 7 days")).to_have_attribute("aria-current", "true")


def test_support_sees_the_limited_dashboard(page: Page, base_url: str) -> None:
    page.goto("/login")
    sign_in(page, *SUPPORT)
    expect(page).to_have_url(f"{base_url}/admin")
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()
    figures = page.locator("#analytics-figures")
    expect(figures.locator(".kpi-label").first).to_be_visible()
    labels = figures.locator(".kpi-label").all_inner_texts()
    for label in ("Orders", "New customers", "Paying subscribers", "Payment success rate", "Refund rate"):
        assert label in labels
    for hidden in ("Gross revenue", "Net revenue", "MRR", "ARR", "Average order value"):
        assert hidden not in labels
    expect(page.get_by_role("img", name=re.compile("Revenue per day"))).to_have_count(0)
    expect(page.get_by_role("img", name=re.compile("Orders per day"))).to_be_visible()
    page.get_by_text("Show as table").first.click()
    expect(page.get_by_role("table").first).to_be_visible()
    expect(figures).not_to_contain_text("$")
