"""Back-office tables in the browser: search and sort with the URL kept in step (back/forward), CSV export of the
current filter, and an admin changing someone's role, which signs them out and lands in the audit log."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, register, sign_in, unique_email

pytestmark = pytest.mark.e2e


def test_admin_searches_sorts_exports_and_the_back_button_restores_the_table(
    page: Page, browser: Browser, base_url: str, tmp_path: Path
) -> None:
    emails = [unique_email("tables-ann"), unique_email("tables-bob")]
    shopper = browser.new_context(base_url=base_url)
    try:
        for email in emails:
            register(shopper.new_page(), email=email, password="a long and unusual passphrase", name="Table Test")
    finally:
        shopper.close()

    page.goto("/login?next_url=/admin/customers")
    sign_in(page, *ADMIN)
    expect(page.get_by_role("heading", level=1, name="Customers")).to_be_visible()

    page.get_by_label("Email or name").fill("tables-")
    expect(page).to_have_url(re.compile(r"/admin/customers\?q=tables-"))  # typing searches; the URL follows
    rows = page.locator("#admin-customers tbody tr")
    expect(rows).to_have_count(2)

    header = page.get_by_role("columnheader", name="Email", exact=True)
    header.get_by_role("link").click()  # a sortable header
    expect(header).to_have_attribute("aria-sort", "ascending")
    expect(rows.first).to_contain_text(emails[0])
    header.get_by_role("link").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    expect(rows.first).to_contain_text(emails[1])
    expect(page).to_have_url(re.compile(r"sort=-email"))

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert re.fullmatch(r"customers-\d{8}-\d{4}\.csv", download.suggested_filename)
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    table = list(csv.reader(io.StringIO(target.read_text())))
    assert table[0][0] == "email"
    assert [row[0] for row in table[1:]] == [emails[1], emails[0]]  # the filter and the order on screen

    page.get_by_role("link", name=emails[0]).click()
    expect(page.get_by_role("heading", level=1, name="Table Test")).to_be_visible()
    page.go_back()
    expect(page).to_have_url(re.compile(r"q=tables-.*sort=-email|sort=-email.*q=tables-"))
    expect(page.get_by_label("Email or name")).to_have_value("tables-")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text(emails[1])


def test_admin_makes_a_customer_support_they_are_signed_out_and_the_audit_log_says_who(
    page: Page, browser: Browser, base_url: str
) -> None:
    email = unique_email("promoted")
    person = browser.new_context(base_url=base_url)
    try:
        their_page = person.new_page()
        register(their_page, email=email, password="a long and unusual passphrase", name="Pat Promoted")

        page.goto("/login?next_url=/admin/users")
        sign_in(page, *ADMIN)
        page.get_by_label("Email or name").fill(email)
        expect(page.locator("#admin-users tbody tr")).to_have_count(1)
        page.get_by_role("link", name=email).click()
        page.get_by_label("Role", exact=True).select_option("support")
        page.get_by_role("button", name="Change role").click()
        expect(page.get_by_role("status").filter(has_text=f"{email} is now support")).to_be_visible()
        expect(page.get_by_text("Role changed from Customer to Support")).to_be_visible()

        their_page.reload()
        expect(their_page).to_have_url(re.compile(r"/login\?next_url="))  # their session ended

        page.goto("/admin/audit")
        page.get_by_label("Action", exact=True).select_option("user.role")
        entry = page.locator("#admin-audit tbody tr").filter(has_text=email)
        expect(entry).to_have_count(1)
        expect(entry).to_contain_text(ADMIN[0])
        entry.get_by_text("Before / after").click()
        expect(entry).to_contain_text("customer → support")
    finally:
        person.close()
