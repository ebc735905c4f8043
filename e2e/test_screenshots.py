"""The README's screenshots, taken from the running shop at 1280x800 (docs/screenshots/*.png)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from e2e.conftest import ADMIN, SCREENSHOTS, images_loaded, sign_in

pytestmark = pytest.mark.e2e


def _shot(page: Page, name: str) -> None:
    images_loaded(page)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, animations="disabled", caret="hide")
    assert path.stat().st_size > 10_000, f"{path} looks empty"


def test_readme_screenshots(page: Page, base_url: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert page.viewport_size == {"width": 1280, "height": 800}

    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Things worth making, made by people who care")
    _shot(page, "home")

    page.goto("/products")
    expect(page.locator("#product-grid .product-card")).to_have_count(12)
    _shot(page, "products")

    page.goto("/products/python-for-analysts")
    expect(page.get_by_role("heading", level=1)).to_have_text("Python for Analysts")
    _shot(page, "product")

    page.goto("/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    _shot(page, "login")

    sign_in(page, *ADMIN)
    expect(page).to_have_url(f"{base_url}/admin")
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()
    _shot(page, "admin")
