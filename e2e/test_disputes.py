"""Disputes: a customer pays with Stripe's dispute card, the bank disputes it; the customer's download is suspended and
the admin sees the dispute on the order page with the link to answer it in Stripe (catalogue R3, A6)."""

from __future__ import annotations

import json
import re
import urllib.request

from playwright.sync_api import Page, expect

from e2e.conftest import ADMIN, LiveServer, register, sign_in, sign_out, unique_email, wait_for_mail
from e2e.test_purchase import (
    GUIDE,
    add_to_cart,
    continue_to_payment,
    emulator_control,
    expect_paid,
    fill_billing,
    pay_with,
)


def dispute_of(live_server: LiveServer, intent: str) -> str:
    """The dispute Stripe opened on the PaymentIntent (as the Dashboard would show it)."""
    request = urllib.request.Request(
        f"{live_server.stripe_url}/v1/disputes?payment_intent={intent}",
        headers={"Authorization": "Bearer sk_test_e2e"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        (dispute,) = json.loads(response.read())["data"]
        return str(dispute["id"])


def test_a_disputed_payment_suspends_the_download_and_the_admin_sees_the_dispute(
    page: Page, live_server: LiveServer
) -> None:
    admin_mail = len(live_server.mailbox.to(ADMIN[0]))
    email = unique_email("disputed")
    register(page, email=email, password="a long enough password")
    add_to_cart(page, *GUIDE)
    page.goto("/checkout")
    fill_billing(page, email=None, province="Alberta", postal="T2P 1J9")
    intent = continue_to_payment(page)
    pay_with(page, "4000 0000 0000 0259")  # Stripe's dispute card: paid, then disputed as fraudulent at once
    number = expect_paid(page)
    page.get_by_role("link", name="View in your account").click()
    order_page = page.url
    order_id = order_page.rstrip("/").rsplit("/", 1)[1]

    # The admins hear of it by email, with the evidence due date and where to answer.
    mails = wait_for_mail(live_server.mailbox, ADMIN[0], count=admin_mail + 1)
    assert any(m["Subject"].startswith(f"Dispute on order #{number}") for m in mails)

    # The customer: the order says the payment is disputed and the download is suspended.
    page.goto(order_page)
    notice = page.locator("#dispute-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("This payment is disputed with your bank.")
    expect(page.get_by_role("heading", name=re.compile(r"Order #\d+"))).to_contain_text("Disputed")
    expect(page.get_by_role("link", name="Download")).to_have_count(0)
    expect(page.get_by_text("Suspended: payment disputed")).to_be_visible()
    page.goto("/account/downloads")
    expect(page.locator(".download").first).to_contain_text("Suspended")

    # The admin: the order page shows the dispute and links to respond in Stripe's Dashboard.
    sign_out(page)
    page.goto(f"/admin/orders/{order_id}")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    sign_in(page, *ADMIN)  # back to the order page it asked for
    expect(page.get_by_role("heading", level=1, name=re.compile(rf"Order #{number}"))).to_be_visible()
    disputes = page.locator("#order-disputes")
    expect(disputes.get_by_role("heading", name="Disputes")).to_be_visible()
    expect(disputes).to_contain_text("Fraudulent")
    expect(disputes).to_contain_text("needs response")
    expect(disputes).to_contain_text("$15.75 CAD")  # the order total, GST included
    respond = disputes.get_by_role("link", name=re.compile("Respond in Stripe"))
    expect(respond).to_have_attribute("href", f"https://dashboard.stripe.com/test/payments/{intent}")
    expect(page.locator("form#refund-form")).to_have_count(0)  # a charged-back payment cannot be refunded on top

    # The bank decides for the shop: the page says so.
    emulator_control(live_server, f"disputes/{dispute_of(live_server, intent)}/settle")
    wait_for_mail(live_server.mailbox, ADMIN[0], count=admin_mail + 2)
    page.reload()
    expect(page.locator("#order-disputes")).to_contain_text("won")
    expect(page.locator(".timeline")).to_contain_text("Dispute won")
