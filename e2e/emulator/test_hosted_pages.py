"""Hosted Checkout, Billing Portal and confirmSetup in a real browser."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import stripe
from playwright.sync_api import expect

from e2e.emulator.conftest import Shop


def test_confirm_setup_saves_card(shop: Shop, secret_client: stripe.StripeClient) -> None:
    cus = secret_client.v1.customers.create()
    si = secret_client.v1.setup_intents.create(
        params={"customer": cus.id, "automatic_payment_methods": {"enabled": True}}
    )
    page = shop.open(str(si.client_secret))
    shop.fill_card("4242424242424242")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(re.compile("^" + re.escape(shop.url) + r"/return\?"))
    query = parse_qs(urlsplit(page.url).query)
    assert query["setup_intent"] == [si.id] and query["redirect_status"] == ["succeeded"]
    saved = secret_client.v1.payment_methods.list(params={"customer": cus.id}).data
    assert [pm.card.last4 for pm in saved if pm.card] == ["4242"]


def test_hosted_checkout_in_browser(shop: Shop, secret_client: stripe.StripeClient) -> None:
    price = secret_client.v1.prices.create(
        params={"currency": "usd", "unit_amount": 1500, "product_data": {"name": "Guidebook"}}
    )
    session = secret_client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": shop.url + "/return?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": shop.url + "/cart",
        }
    )
    page = shop.page
    page.goto(str(session.url))
    expect(page.get_by_text("Test mode")).to_be_visible()
    expect(page.get_by_role("cell", name="Guidebook")).to_be_visible()
    page.get_by_label("Email").fill("reader@example.com")
    page.get_by_label("Card number").fill("4000 0000 0000 0002")
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("alert")).to_have_text("Your card was declined.")
    page.get_by_label("Card number").fill("4242 4242 4242 4242")
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(shop.url + f"/return?session_id={session.id}")
    assert secret_client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


def test_billing_portal_in_browser(shop: Shop, secret_client: stripe.StripeClient) -> None:
    cus = secret_client.v1.customers.create()
    card = secret_client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    secret_client.v1.customers.update(cus.id, params={"invoice_settings": {"default_payment_method": card.id}})
    price = secret_client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 800,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Monthly club"},
        }
    )
    sub = secret_client.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": price.id}]})
    portal = secret_client.v1.billing_portal.sessions.create(
        params={"customer": cus.id, "return_url": shop.url + "/return?portal=1"}
    )
    page = shop.page
    page.goto(portal.url)
    expect(page.get_by_role("heading", name="Monthly club")).to_be_visible()
    page.get_by_role("button", name="Cancel subscription").click()
    expect(page.get_by_role("status")).to_have_text("Subscription will be canceled at the end of the period")
    assert secret_client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True
    page.get_by_role("button", name="Resume subscription").click()
    expect(page.get_by_role("button", name="Cancel subscription")).to_be_visible()
    page.get_by_role("link", name="View invoice").click()
    expect(page.get_by_text("Status: paid")).to_be_visible()
    page.go_back()
    page.get_by_role("link", name="Return to shop").click()
    page.wait_for_url(shop.url + "/return?portal=1")
