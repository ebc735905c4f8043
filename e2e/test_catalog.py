"""Catalog journeys: browse, filter, search and paginate with HTMX and history; product pages; small screens."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from app.cli.seed_data import CATEGORIES, PRODUCTS
from app.lib.money import format_money

pytestmark = pytest.mark.e2e

SEED_BY_NAME = {p["name"]: p for p in PRODUCTS}
CATEGORY_NAMES = {c["slug"]: c["name"] for c in CATEGORIES}
# "with" appears in 17 demo products (2 pages of 12), 3 of them video courses.
SEARCH = "with"


def _cards(page: Page):  # the product cards' titles, in order
    return page.locator("#product-grid .product-card h3")


def _seed_matching(word: str, category: str = "") -> list[dict]:
    return [
        p
        for p in PRODUCTS
        if (not category or p["category"] == category)
        and (word in p["name"].lower() or word in p["description"].lower())
    ]


def test_browse_filter_search_paginate_history_and_product_page(page: Page, base_url: str) -> None:
    page.goto("/")
    expect(page).to_have_title("Cartwright — digital goods from independent makers")
    page.get_by_role("link", name="Browse all products").click()
    expect(page).to_have_url(f"{base_url}/products")
    expect(page.get_by_role("heading", level=1, name="Products")).to_be_visible()
    expect(page.locator(".result-count")).to_have_text("30 products")
    expect(_cards(page)).to_have_count(12)

    # From here on every change must be an HTMX swap: a full page load would lose this marker.
    page.evaluate("window.__marker = 1")

    # Filter by category: only the grid is swapped, the URL is pushed.
    page.get_by_label("Category").select_option(label=CATEGORY_NAMES["courses"])
    expect(page).to_have_url(re.compile(r"/products\?.*category=courses"))
    courses = [p["name"] for p in PRODUCTS if p["category"] == "courses"]
    expect(page.locator(".result-count")).to_have_text(f"{len(courses)} products")
    expect(_cards(page)).to_have_count(len(courses))
    for name in _cards(page).all_inner_texts():
        assert name in courses

    # Search within the category (typing is debounced; Tab commits it at once, as a person leaving the field).
    search = page.get_by_label("Search", exact=True)
    search.fill(SEARCH)
    search.press("Tab")
    expected = _seed_matching(SEARCH, "courses")
    expect(page).to_have_url(re.compile(rf"/products\?q={SEARCH}&category=courses"))
    expect(page.locator(".result-count")).to_have_text(f"{len(expected)} products matching “{SEARCH}”")
    expect(_cards(page)).to_have_count(len(expected))
    assert set(_cards(page).all_inner_texts()) == {p["name"] for p in expected}

    # Widen to every category: two pages of results.
    page.get_by_label("Category").select_option(label="All categories")
    matching = _seed_matching(SEARCH)
    assert len(matching) > 12
    expect(page).to_have_url(re.compile(rf"/products\?q={SEARCH}&sort=\w+$"))  # empty fields stay out of the URL
    expect(page.locator(".result-count")).to_have_text(f"{len(matching)} products matching “{SEARCH}”")
    expect(_cards(page)).to_have_count(12)
    expect(page.get_by_text("Page 1 of 2")).to_be_visible()
    first_page_url = page.url
    first_page = _cards(page).all_inner_texts()

    # Paginate.
    page.get_by_role("link", name="Next").click()
    expect(page).to_have_url(f"{base_url}/products?q={SEARCH}&page=2")
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()
    expect(_cards(page)).to_have_count(len(matching) - 12)
    second_page = _cards(page).all_inner_texts()
    assert not set(first_page) & set(second_page)
    assert set(first_page) | set(second_page) == {p["name"] for p in matching}
    assert page.evaluate("window.__marker") == 1, "the filters and pagination reloaded the whole page"

    # Back restores page 1's URL and products; forward page 2's.
    page.go_back()
    expect(page).to_have_url(first_page_url)
    expect(_cards(page)).to_have_text(first_page)
    expect(page.get_by_text("Page 1 of 2")).to_be_visible()
    page.go_forward()
    expect(page).to_have_url(f"{base_url}/products?q={SEARCH}&page=2")
    expect(_cards(page)).to_have_text(second_page)
    assert page.evaluate("window.__marker") == 1, "history navigation reloaded the whole page"

    # Open a product page.
    name = second_page[0]
    seed = SEED_BY_NAME[name]
    page.get_by_role("link", name=name, exact=True).click()
    expect(page).to_have_url(f"{base_url}/products/{seed['slug']}")
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(page).to_have_title(f"{name} | Cartwright")
    expect(page.locator(".product-info .price")).to_have_text(format_money(seed["price"], "CAD"))
    expect(page.locator(".product-description")).to_have_text(seed["description"])
    expect(page.locator("meta[property='og:title']")).to_have_attribute("content", name)
    expect(page.locator("meta[name='description']")).to_have_attribute("content", seed["summary"])
    expect(page.get_by_role("img", name=f"Cover of {name}")).to_be_visible()


def test_product_list_fits_a_360px_screen(browser: Browser, base_url: str) -> None:
    context = browser.new_context(base_url=base_url, viewport={"width": 360, "height": 740})
    try:
        page = context.new_page()
        page.goto("/products")
        expect(_cards(page)).to_have_count(12)
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= 360, f"the product list scrolls sideways on a 360px screen ({scroll_width}px wide)"
    finally:
        context.close()
