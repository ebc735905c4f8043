"""Issue #12 in the browser: stored script injection into the back office (hole 1) is gone, under the CSP.

Every journey runs under the Content-Security-Policy (e2e/conftest.py fails any test on a violation); this file
holds the attack itself.
"""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from e2e.conftest import ADMIN, LiveServer, register, sign_in, unique_email

pytestmark = pytest.mark.e2e

# Registered by a client that skips the form's type=email check. Inside the old
# onsubmit="return confirm('Disable … ')" the browser decoded &#39; back to a quote and ran the rest.
EVIL_EMAIL = "x');document.title='pwned';('@e.co"


def test_hole_1_disabling_an_account_with_a_script_in_its_email_shows_the_email_and_runs_nothing(
    page: Page, browser: Browser, live_server: LiveServer
) -> None:
    email = unique_email("hole1")
    customer = browser.new_context(base_url=live_server.base_url)
    try:
        register(customer.new_page(), email=email, password="a long and unusual passphrase", name="Mallory")
    finally:
        customer.close()
    with sqlite3.connect(live_server.var_dir / "cartwright.db") as db:  # stored as a lax client would store it
        db.execute("UPDATE users SET email = ? WHERE email = ?", (EVIL_EMAIL, email))
        (raw_id,) = db.execute("SELECT id FROM users WHERE email = ?", (EVIL_EMAIL,)).fetchone()
    user_id = uuid.UUID(bytes=raw_id) if isinstance(raw_id, bytes) else uuid.UUID(str(raw_id))

    page.goto(f"/login?next_url=/admin/users/{user_id}")
    sign_in(page, *ADMIN)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Mallory")
    title = page.title()

    messages: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.dismiss()  # cancel: the account stays enabled

    page.once("dialog", dismiss)
    page.get_by_role("button", name="Disable account").click()
    expect(page.get_by_role("button", name="Disable account")).to_be_visible()
    assert messages == [f"Disable {EVIL_EMAIL} and sign them out everywhere?"]
    assert page.title() == title != "pwned"
