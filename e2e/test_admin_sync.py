"""An admin repairs the shop's mirror of Stripe in one click and reads what the sync found."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from e2e.conftest import ADMIN, LiveServer, sign_in

pytestmark = pytest.mark.e2e


def emulator(live_server: LiveServer, path: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{live_server.stripe_url}/_emulator/{path}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_admin_presses_sync_now_watches_progress_and_reads_the_report(
    page: Page, base_url: str, live_server: LiveServer
) -> None:
    # A Stripe account with history the shop never saw, and a Stripe that rate-limits every other request (the
    # sync backs off and carries on; it also keeps the run slow enough to watch).
    emulator(live_server, "seed_history", {"customers": 250, "invoices_per_customer": 1, "email_prefix": "e2e-sync"})
    emulator(live_server, "chaos", {"rate_limit_every": 2})
    try:
        page.goto("/login")
        sign_in(page, *ADMIN)
        page.get_by_role("navigation", name="Admin").get_by_role("link", name="Stripe sync").click()
        expect(page.get_by_role("heading", level=1, name="Stripe sync")).to_be_visible()
        page.get_by_role("button", name="Sync now").click()

        expect(page).to_have_url(re.compile(rf"{re.escape(base_url)}/admin/sync/runs/[0-9a-f-]+$"))
        expect(page.get_by_role("status").filter(has_text="Sync started.")).to_be_visible()
        progress = page.locator("#sync-progress")
        # Live: the current resource's bar is moving, and the counts grow without a reload.
        expect(progress.get_by_text("in progress")).to_be_visible()
        expect(progress.get_by_role("button", name="Cancel sync")).to_be_visible()
        expect(progress.locator(".status")).to_have_text("succeeded", timeout=120_000)

        # The report: counts per resource, divergences, no errors, and the run in the list.
        customers = progress.locator("tr[data-resource=customers]")
        expect(customers.get_by_role("cell").nth(1)).to_have_text(re.compile(r"^2\d\d$"))  # objects seen
        expect(progress.get_by_role("heading", name="Divergences")).to_be_visible()
        expect(progress.get_by_role("button", name="Cancel sync")).to_have_count(0)
        page.get_by_role("link", name="← Stripe sync").click()
        expect(page.locator("#sync-runs tbody tr").first).to_contain_text("succeeded")
        expect(page.locator("#sync-status")).to_contain_text("succeeded")
    finally:
        emulator(live_server, "chaos", {})
