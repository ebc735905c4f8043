"""Pricing journey: from the header to the plans, monthly/yearly by keyboard with HTMX, history and reload."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e


def _card(page: Page, name: str):  # one plan card, found by its heading
    return page.get_by_role("article", name=name)


def test_pricing_toggle_by_keyboard_with_history_and_reload(page: Page, base_url: str) -> None:
    page.goto("/")
    page.get_by_role("navigation", name="Account").get_by_role("link", name="Pricing").click()
    expect(page).to_have_url(f"{base_url}/pricing")
    expect(page.get_by_role("heading", level=1, name="Memberships")).to_be_visible()
    expect(page).to_have_title("Monthly memberships — Cartwright")
    expect(_card(page, "Community")).to_contain_text("$19.00 CAD / month")
    expect(_card(page, "Resident")).to_contain_text("10 meeting-room hours a month")
    trial = _card(page, "Resident").get_by_role("link", name=re.compile("^Start free trial"))
    expect(trial).to_have_attribute("href", re.compile(r"^/login\?next_url=%2Fsubscribe%2Fresident"))

    # From here on the toggle must swap the cards in place: a full page load would lose this marker.
    page.evaluate("window.__marker = 1")
    monthly = page.get_by_role("link", name="Monthly", exact=True)
    yearly = page.get_by_role("link", name="Yearly", exact=True)
    expect(monthly).to_have_attribute("aria-current", "page")
    monthly.focus()
    page.keyboard.press("Tab")
    expect(yearly).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base_url}/pricing?interval=year")
    expect(_card(page, "Community")).to_contain_text("$190.00 CAD / year")
    expect(_card(page, "Community")).to_contain_text("2 months free")
    expect(yearly).to_have_attribute("aria-current", "page")
    expect(page).to_have_title("Yearly memberships — Cartwright")
    expect(yearly).to_be_focused()  # the swap keeps the keyboard user's place
    assert page.evaluate("window.__marker") == 1

    page.go_back()
    expect(page).to_have_url(f"{base_url}/pricing")
    expect(_card(page, "Community")).to_contain_text("$19.00 CAD / month")
    expect(monthly).to_have_attribute("aria-current", "page")

    page.go_forward()
    expect(page).to_have_url(f"{base_url}/pricing?interval=year")
    expect(_card(page, "Studio")).to_contain_text("$990.00 CAD / year")

    page.reload()
    expect(_card(page, "Studio")).to_contain_text("$990.00 CAD / year")
    expect(yearly).to_have_attribute("aria-current", "page")
