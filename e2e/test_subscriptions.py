"""Memberships in the browser: subscribe with the Payment Element, spend credits on a booking, switch with a
proration preview, cancel at period end and resume; subscribing through 3-D Secure."""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import stripe
from playwright.sync_api import Locator, Page, expect

from e2e.conftest import LiveServer, register, unique_email, wait_for_mail

DAY = 86_400


def next_weekday() -> str:
    day = datetime.now(UTC).astimezone(ZoneInfo("America/Toronto")).date() + timedelta(days=1)  # the shop's day
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.isoformat()


def pay_with(page: Page, number: str) -> None:
    expect(page.get_by_label("Card number")).to_be_visible()
    page.get_by_label("Card number").fill(number)
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Postal code").fill("H2X 1Y4")
    page.get_by_role("button", name="Subscribe").click()


def reload_until(page: Page, locator: Locator, *, count: int, attempts: int = 20) -> None:
    """Reload until ``count`` matches show: the page reflects a webhook the worker processes in the background."""
    for _ in range(attempts):
        try:
            expect(locator).to_have_count(count, timeout=1_000)
        except AssertionError:
            page.reload()
        else:
            return
    expect(locator).to_have_count(count)


def start_subscription(page: Page, plan: str, province: str = "Alberta") -> None:
    page.goto("/pricing")
    page.get_by_role("link", name=f"Subscribe: {plan}, monthly").click()
    expect(page.get_by_role("heading", name=plan)).to_be_visible()
    page.get_by_label("Billing province or territory").select_option(label=province)
    page.get_by_role("button", name="Continue to payment").click()
    expect(page).to_have_url(re.compile(r"/subscriptions/[0-9a-f-]{36}/pay$"))


def test_subscribe_book_with_credits_switch_cancel_and_resume(page: Page) -> None:
    register(page, email=unique_email("member"), password="a long member password", name="Mia Member")
    start_subscription(page, "Studio")
    pay_with(page, "4242 4242 4242 4242")

    # Back from Stripe: the plan shows once Stripe says it is active (the page waits for it).
    expect(page).to_have_url(re.compile(r"/account/subscription$"), timeout=20_000)
    expect(page.get_by_role("heading", name=re.compile(r"Studio\s+Active"))).to_be_visible()
    expect(page.get_by_text("$99.00 CAD per month")).to_be_visible()

    # The paid cycle's credits arrive from the invoice.paid webhook.
    page.goto("/account/credits")
    hours = page.locator('[data-credit-type="room-hours"]')
    reload_until(page, hours, count=1)
    expect(hours).to_have_text("20")

    # Spend one on a meeting room.
    page.goto(f"/bookings?day={next_weekday()}")
    room = page.locator("section.booking-resource").filter(has_text="Meeting room A")
    room.get_by_role("button", name=re.compile(r"^Book \(1 meeting-room hour\)")).first.click()
    expect(room.get_by_text("Booked by you")).to_have_count(1)
    page.goto("/account/credits")
    expect(hours).to_have_text("19")

    # Switch to yearly: the preview shows what is due now before anything changes.
    page.goto("/account/subscription")
    page.get_by_label("New plan").select_option(label="Studio — $990.00 CAD per year")
    page.get_by_role("button", name="Preview the change").click()
    preview = page.locator("#switch-preview")
    expect(preview).to_contain_text("Switch to Studio, billed yearly")
    expect(preview).to_contain_text("Due now")
    preview.get_by_role("button", name="Confirm switch").click()
    expect(page.get_by_text("You're now on Studio, billed yearly.")).to_be_visible()
    expect(page.get_by_text("$990.00 CAD per year")).to_be_visible()

    # Cancel at period end (confirmed in a dialog), then change of heart.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel at period end").click()
    expect(page.get_by_text(re.compile(r"Your plan ends on"))).to_be_visible()
    page.get_by_role("button", name="Resume my plan").click()
    expect(page.get_by_text("Welcome back: your plan will renew as usual.")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel at period end")).to_be_visible()


def test_subscribe_through_3d_secure(page: Page) -> None:
    register(page, email=unique_email("threeds-member"), password="a long member password", name="Tom Three")
    start_subscription(page, "Community")
    pay_with(page, "4000 0025 0000 3155")
    expect(page.get_by_role("heading", name="3D Secure authentication")).to_be_visible()
    page.get_by_role("button", name="Complete").click()
    expect(page).to_have_url(re.compile(r"/account/subscription$"), timeout=20_000)
    expect(page.get_by_role("heading", name=re.compile(r"Community\s+Active"))).to_be_visible()


def test_renewal_then_a_failed_renewal_recovered_by_updating_the_card(page: Page, live_server: LiveServer) -> None:
    email = unique_email("renewal")
    register(page, email=email, password="a long member password", name="Rae Renewal")
    # Test data: this customer lives on a Stripe test clock, so the journey can move a month forward.
    sc = stripe.StripeClient(
        "sk_test_cartwright_emulator",
        base_addresses={"api": live_server.stripe_url},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )
    now = int(time.time())
    clock = sc.v1.test_helpers.test_clocks.create({"frozen_time": now})
    customer = sc.v1.customers.create({"email": email, "test_clock": clock.id})
    with sqlite3.connect(live_server.var_dir / "cartwright.db") as db:
        db.execute("UPDATE users SET stripe_customer_id = ? WHERE email = ?", (customer.id, email))

    start_subscription(page, "Community")
    pay_with(page, "4242 4242 4242 4242")
    expect(page.get_by_role("heading", name=re.compile(r"Community\s+Active"))).to_be_visible(timeout=20_000)

    # A month later Stripe renews: the next cycle's day passes arrive once (last month's unused ones lapse).
    sc.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": now + 32 * DAY})
    page.goto("/account/credits")
    reload_until(page, page.locator("table").get_by_role("cell", name="Allocated", exact=True), count=2)
    expect(page.locator('[data-credit-type="day-passes"]')).to_have_text("2")

    # The card starts failing at the next renewal (Stripe's 4000 0000 0000 0341).
    failing = sc.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer.id})
    subscription = sc.v1.subscriptions.list({"customer": customer.id}).data[0]
    sc.v1.subscriptions.update(subscription.id, {"default_payment_method": failing.id})
    sc.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": now + 63 * DAY})
    mails = wait_for_mail(live_server.mailbox, email, count=2)  # the welcome, then the failed payment
    assert any("payment didn't go through" in mail["Subject"] for mail in mails)
    page.goto("/account/subscription")
    expect(page.get_by_role("alert")).to_contain_text("Your last payment failed")

    page.get_by_role("link", name="Update card and retry").click()
    expect(page.get_by_label("Card number")).to_be_visible()
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Postal code").fill("H2X 1Y4")
    page.get_by_role("button", name="Save card").click()
    expect(page.get_by_text("The payment went through and your plan is active.")).to_be_visible(timeout=20_000)
    expect(page.get_by_role("heading", name=re.compile(r"Community\s+Active"))).to_be_visible()


def test_subscribe_through_stripe_hosted_checkout(page: Page) -> None:
    register(page, email=unique_email("hosted-member"), password="a long member password", name="Hal Hosted")
    page.goto("/pricing")
    page.get_by_role("link", name="Subscribe: Community, monthly").click()
    page.get_by_label("Billing province or territory").select_option(label="Alberta")
    page.get_by_role("button", name="Pay on Stripe's checkout page instead").click()
    expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
    expect(page.get_by_text("Test mode")).to_be_visible()
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Postal code").fill("H2X 1Y4")
    page.get_by_role("button", name=re.compile(r"^(Pay|Subscribe)")).click()
    expect(page).to_have_url(re.compile(r"/account/subscription$"), timeout=20_000)
    expect(page.get_by_role("heading", name=re.compile(r"Community\s+Active"))).to_be_visible()


def test_a_trial_without_a_card_pauses_and_adding_a_card_resumes_it(page: Page, live_server: LiveServer) -> None:
    """Issue #13 item 8 (catalogue S4): the trial ends with no card, the member is told and resumes with one."""
    email = unique_email("trialist")
    register(page, email=email, password="a long member password", name="Tia Trialist")
    sc = stripe.StripeClient(
        "sk_test_cartwright_emulator",
        base_addresses={"api": live_server.stripe_url},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )
    now = int(time.time())
    clock = sc.v1.test_helpers.test_clocks.create({"frozen_time": now})
    customer = sc.v1.customers.create({"email": email, "test_clock": clock.id})
    with sqlite3.connect(live_server.var_dir / "cartwright.db") as db:
        db.execute("UPDATE users SET stripe_customer_id = ? WHERE email = ?", (customer.id, email))

    page.goto("/pricing")
    page.get_by_role("link", name="Start free trial: Resident, monthly").click()
    page.get_by_label("Billing province or territory").select_option(label="Alberta")
    page.get_by_role("button", name="Start your 14-day free trial").click()
    expect(page).to_have_url(re.compile(r"/account/subscription$"))
    expect(page.get_by_role("heading", name=re.compile(r"Resident\s+Free trial"))).to_be_visible()

    # Two weeks pass with no card on file: Stripe pauses the membership and the member hears of it.
    sc.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": now + 15 * DAY})
    mails = wait_for_mail(live_server.mailbox, email, count=2)  # the welcome, then the pause
    assert mails[-1]["Subject"] == "Your Cartwright trial has ended: add a card to continue"
    page.goto("/account/subscription")
    reload_until(page, page.get_by_role("heading", name=re.compile(r"Resident\s+Paused")), count=1)
    expect(page.get_by_role("alert")).to_contain_text("Your free trial has ended and your membership is paused.")

    page.get_by_role("link", name="Add a card and resume").click()
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Postal code").fill("H2X 1Y4")
    page.get_by_role("button", name="Save card").click()
    expect(page.get_by_text("Your membership is active again.")).to_be_visible(timeout=20_000)
    expect(page.get_by_role("heading", name=re.compile(r"Resident\s+Active"))).to_be_visible()
