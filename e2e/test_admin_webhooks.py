"""An admin finds a failed Stripe event in the webhook log, replays it once the cause is fixed, sees it processed."""

from __future__ import annotations

import json
import re
import sqlite3
from uuid import UUID

import pytest
import stripe
from playwright.sync_api import Page, expect
from redis import Redis

from app.lib import queues
from app.lib.embedded_redis import resolve_redis_url
from e2e.conftest import ADMIN, LiveServer, sign_in, unique_email, wait_until
from e2e.test_purchase import GUIDE, add_to_cart, continue_to_payment, fill_billing

pytestmark = pytest.mark.e2e


def stripe_client(live_server: LiveServer) -> stripe.StripeClient:
    url = live_server.stripe_url
    return stripe.StripeClient(
        api_key="sk_test_cartwright_e2e",
        base_addresses={"api": url, "files": url, "connect": url, "meter_events": url},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )


def event_status(db_path: str, intent_id: str) -> str | None:
    with sqlite3.connect(db_path) as db:
        row = db.execute(
            "SELECT status FROM stripe_events WHERE type = 'payment_intent.succeeded' AND object_id = ?", (intent_id,)
        ).fetchone()
    return None if row is None else str(row[0])


def saq_job_status(live_server: LiveServer, key: str) -> str:
    """The status SAQ stores for the Stripe event job under ``key`` ("" when there is none): on the payments queue
    (app/lib/queues.py routes ``process_stripe_event`` there)."""
    url = resolve_redis_url(live_server.env.get("REDIS_URL", ""), live_server.var_dir)
    client = Redis.from_url(url)
    try:
        raw = client.get(f"saq:job:{queues.PAYMENTS}:{key}")
    finally:
        client.close()
    return str(json.loads(raw)["status"]) if raw else ""


def test_admin_replays_a_failed_event_and_sees_it_processed(page: Page, live_server: LiveServer) -> None:
    db_path = str(live_server.var_dir / "cartwright.db")
    # A guest's order, up to the pay page (which gives it its PaymentIntent)...
    add_to_cart(page, *GUIDE)
    page.goto("/checkout")
    fill_billing(page, email=unique_email("webhook"), province="Alberta", postal="T2P 1J9")
    first_intent = continue_to_payment(page)
    match = re.search(r"/orders/([0-9a-f-]{36})/pay", page.url)
    assert match
    order_id = UUID(match.group(1))
    page.context.clear_cookies()

    # ...paid at Stripe through another PaymentIntent for the same order that our database does not know yet:
    # the webhook's handler fails for real (no local order carries that PaymentIntent).
    client = stripe_client(live_server)
    amount = client.v1.payment_intents.retrieve(first_intent).amount
    second = client.v1.payment_intents.create(
        {"amount": amount, "currency": "cad", "metadata": {"order_id": str(order_id)}}
    )
    client.v1.payment_intents.confirm(
        second.id, {"payment_method": "pm_card_visa", "return_url": f"{live_server.base_url}/return"}
    )
    wait_until(lambda: event_status(db_path, second.id) == "failed", timeout=30, what="the event to fail")
    # SAQ retries the job on its own for about a minute (6 attempts): the admin's replay comes after that.
    event_id = (
        sqlite3.connect(db_path)
        .execute(
            "SELECT stripe_id FROM stripe_events WHERE object_id = ? AND type = 'payment_intent.succeeded'",
            (second.id,),
        )
        .fetchone()[0]
    )
    wait_until(
        lambda: saq_job_status(live_server, f"stripe-event:{event_id}") in {"complete", "failed", "aborted"},
        timeout=150,
        what="SAQ to give up retrying the event",
        interval=0.5,
    )

    page.goto("/login")
    sign_in(page, *ADMIN)
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Stripe events").click()
    expect(page.get_by_role("heading", level=1, name="Stripe events")).to_be_visible()
    expect(page.get_by_role("heading", name="Webhook health")).to_be_visible()
    page.get_by_label("Status").select_option("failed")
    expect(page).to_have_url(re.compile(r"status=failed"))
    row = page.get_by_role("row").filter(has_text=second.id)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Failed")
    expect(row).to_contain_text("UnknownOrderError")
    row.get_by_role("link", name="payment_intent.succeeded").click()

    expect(page.locator("#event-status")).to_have_text("Failed")
    expect(page.locator(".event-error")).to_contain_text("no local order carries")
    expect(page.locator("#event-payload")).to_contain_text(f'"order_id": "{order_id}"')

    # The cause is fixed (the order is linked to the PaymentIntent that paid it), then the admin replays.
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE orders SET payment_intent_id = ? WHERE id = ?", (second.id, order_id.bytes))
        db.execute("UPDATE payments SET payment_intent_id = ? WHERE order_id = ?", (second.id, order_id.bytes))
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status").filter(has_text="Replay queued")).to_be_visible()
    expect(page.locator("#event-status")).to_have_text("Processed", timeout=60_000)  # the summary polls itself
    page.reload()
    expect(page.get_by_role("link", name=re.compile(r"^#\d+$"))).to_be_visible()  # the order it paid
    expect(page.get_by_text("Replayed payment_intent.succeeded")).to_be_visible()
