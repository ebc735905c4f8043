"""Shop settings and invoices (#16 item 6, #13 item 7): an admin changes the seller's legal name, and a customer's
PDF invoice (downloaded like a browser does) names that seller. The web process renders the invoice and the worker
the receipt: both read the settings through their own cached snapshot."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect
from pypdf import PdfReader

from e2e.conftest import ADMIN, register, sign_in, unique_email
from e2e.test_purchase import BOOKS, add_to_cart, continue_to_payment, expect_paid, fill_billing, pay_with


def save_settings(page: Page, **labels: str) -> None:
    page.goto("/admin/settings")
    for label, value in labels.items():
        page.get_by_label(label, exact=True).fill(value)
    # Keyboard only: Enter in a field submits the form.
    page.get_by_label("Legal name", exact=True).press("Enter")
    expect(page.get_by_text("Settings saved.")).to_be_visible()


@pytest.fixture
def admin_page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=base_url)
    page = context.new_page()
    page.goto("/login?next_url=/admin/settings")
    sign_in(page, *ADMIN)
    expect(page.get_by_role("heading", name="Shop settings")).to_be_visible()
    yield page
    # The other journeys expect the seeded shop: clear what this one set.
    save_settings(page, **{"Legal name": "", "GST/HST registration number": ""})
    context.close()


def test_an_admin_renames_the_seller_and_the_customer_pdf_invoice_names_it(admin_page: Page, page: Page) -> None:
    legal_name = f"Maple Leaf Digital {unique_email('inc').split('@')[0]} Inc."
    save_settings(admin_page, **{"Legal name": legal_name, "GST/HST registration number": "987654321 RT0001"})
    # Bad input: the field says what is wrong and nothing is saved.
    admin_page.get_by_label("Time zone", exact=True).fill("Mars/Olympus")
    admin_page.get_by_role("button", name="Save settings").click()
    expect(admin_page.get_by_text("“Mars/Olympus” is not a time zone")).to_be_visible()
    expect(admin_page.get_by_label("Time zone", exact=True)).to_have_attribute("aria-invalid", "true")

    register(page, email=unique_email("invoice"), password="a long enough password", name="Jeanne Buyer")
    add_to_cart(page, *BOOKS)
    page.goto("/checkout")
    fill_billing(page, email=None, province="Quebec", postal="H2X 1Y4")
    continue_to_payment(page)
    pay_with(page, "4242424242424242")
    number = expect_paid(page)
    page.get_by_role("link", name="View in your account").click()
    expect(page.get_by_role("heading", name=re.compile(f"Order #{number}"))).to_be_visible()

    with page.expect_download() as download_info:
        page.get_by_role("link", name="PDF", exact=True).click()
    download = download_info.value
    assert re.fullmatch(r"invoice-INV-\d{6}\.pdf", download.suggested_filename)
    path = download.path()
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(path.read_bytes())).pages)
    assert legal_name in text
    assert "GST/HST registration number: 987654321 RT0001" in text
    assert "QST 9.975%" in text
    assert download.suggested_filename.removeprefix("invoice-").removesuffix(".pdf") in text

    page.get_by_role("link", name="Invoice", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(r"Invoice INV-\d{6}"))).to_be_visible()
    expect(page.get_by_text(legal_name)).to_be_visible()
