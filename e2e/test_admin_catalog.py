"""Catalog management in the browser: the admin creates a product with a cover and a file; a customer buys it and
downloads exactly that file (the first leg of the back office's main journey)."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, LiveServer, images_loaded, sign_in, unique_email
from e2e.test_purchase import continue_to_payment, expect_paid, fill_billing, pay_with

pytestmark = pytest.mark.e2e


def cover_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1600, 1000), (30, 110, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def create_product(staff: Page, *, name: str, price: str, summary: str) -> None:
    """From the products table: a new product with a name, a price and a summary, saved."""
    staff.goto("/admin/products")
    staff.get_by_role("link", name="New product").click()
    staff.get_by_label("Name", exact=True).fill(name)
    staff.get_by_label("Price (CAD)").fill(price)
    staff.get_by_label("Summary").fill(summary)
    staff.get_by_role("button", name="Create product").click()
    expect(staff.get_by_role("heading", level=1, name=name)).to_be_visible()


def upload_product_file(staff: Page, filename: str, content: bytes) -> None:
    """On a product's page: upload the file its buyers download."""
    staff.get_by_label(re.compile(r"^Upload the file")).set_input_files(
        {"name": filename, "mimeType": "application/pdf", "buffer": content}
    )
    staff.get_by_role("button", name="Upload file").click()
    expect(staff.locator("#current-file")).to_contain_text(filename)


def test_admin_creates_a_product_with_a_cover_and_a_file_and_a_customer_buys_and_downloads_it(
    page: Page, browser: Browser, live_server: LiveServer, products_to_archive: list[str]
) -> None:
    run = os.urandom(3).hex()
    name = f"Letterpress Handbook {run}"
    products_to_archive.append(name)
    slug = f"letterpress-handbook-{run}"
    content = b"%PDF-1.7\n" + os.urandom(256 * 1024) + b"\n%%EOF\n"

    admin = browser.new_context(base_url=live_server.base_url)
    try:
        staff = admin.new_page()
        staff.goto("/login?next_url=/admin/products")
        sign_in(staff, *ADMIN)
        expect(staff.get_by_role("heading", level=1, name="Products")).to_be_visible()
        staff.get_by_role("link", name="New product").click()

        # A mistake first: the form comes back with the error next to the field and what was typed kept.
        staff.get_by_label("Name", exact=True).fill(name)
        staff.get_by_label("Price (CAD)").fill("12.345")
        staff.get_by_label("Summary").fill("Setting type by hand, step by step.")
        staff.get_by_role("button", name="Create product").click()
        expect(staff.get_by_text("Enter a price such as 12.50 (at most two decimals).")).to_be_visible()
        expect(staff.get_by_label("Summary")).to_have_value("Setting type by hand, step by step.")

        staff.get_by_label("Price (CAD)").fill("18.50")
        staff.get_by_label("Description (Markdown)").fill("## What's inside\n\n**Forty** illustrated pages.")
        staff.get_by_label("Category").select_option(index=1)
        staff.get_by_role("button", name="Create product").click()
        expect(staff.get_by_role("heading", level=1, name=name)).to_be_visible()
        expect(staff.get_by_label("Slug (web address)")).to_have_value(slug)

        staff.get_by_label(re.compile(r"^New cover")).set_input_files(
            {"name": "cover.png", "mimeType": "image/png", "buffer": cover_png()}
        )
        staff.get_by_role("button", name="Upload cover").click()
        expect(staff.get_by_role("status").filter(has_text="Cover uploaded.")).to_be_visible()
        expect(staff.get_by_alt_text(f"Current cover of {name}")).to_have_attribute(
            "src", re.compile(r"^/media/covers/.+/400\.webp$")
        )

        upload_product_file(staff, "letterpress.pdf", content)
        digest = hashlib.sha256(content).hexdigest()
        expect(staff.locator("#current-file")).to_contain_text(f"letterpress.pdf · 0.3 MB · sha256 {digest[:12]}")
    finally:
        admin.close()

    # The customer finds it in the shop at once, with its thumbnail and its rendered description.
    page.goto("/products")
    card = page.locator(".product-card").filter(has_text=name)
    expect(card.locator("img")).to_have_attribute("src", re.compile(r"/media/covers/.+/400\.webp$"))
    card.get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1, name=name)).to_be_visible()
    expect(page.get_by_role("heading", level=2, name="What's inside")).to_be_visible()
    expect(page.locator(".price-large")).to_have_text("$18.50 CAD")
    images_loaded(page)

    page.get_by_role("button", name=f"Add to cart: {name}").click()
    expect(page.locator("#cart-badge .badge")).to_have_text("1")
    page.goto("/checkout")
    fill_billing(page, email=unique_email("buyer"))
    continue_to_payment(page)
    pay_with(page, "4242 4242 4242 4242")
    expect_paid(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download").first.click()
    assert download.value.suggested_filename == "letterpress.pdf"
    assert Path(download.value.path()).read_bytes() == content
