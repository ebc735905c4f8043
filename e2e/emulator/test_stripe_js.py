"""The Stripe.js stand-in in a real browser: typing a card, declines, validation, 3-D Secure."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import stripe
from playwright.sync_api import expect

from app.stripe_emulator.server import EmulatorServer
from e2e.emulator.conftest import Shop


def new_intent(sc: stripe.StripeClient, amount: int = 2500) -> stripe.PaymentIntent:
    return sc.v1.payment_intents.create(
        params={"amount": amount, "currency": "usd", "automatic_payment_methods": {"enabled": True}}
    )


def returned_query(shop: Shop) -> dict[str, list[str]]:
    shop.page.wait_for_url(re.compile("^" + re.escape(shop.url) + r"/return\?"))
    return parse_qs(urlsplit(shop.page.url).query)


def test_card_payment_redirects_to_return_url(shop: Shop, secret_client: stripe.StripeClient) -> None:
    pi = new_intent(secret_client)
    page = shop.open(str(pi.client_secret))
    expect(page.get_by_text("Test mode", exact=False)).to_be_visible()
    expect(page.get_by_label("Expiration")).to_have_attribute("placeholder", "MM / YY")
    shop.fill_card("4242 4242 4242 4242")
    expect(page.locator("#changes")).to_have_text("complete")
    page.get_by_role("button", name="Pay").click()
    query = returned_query(shop)
    assert query["redirect_status"] == ["succeeded"]
    assert query["payment_intent"] == [pi.id]
    assert query["payment_intent_client_secret"] == [pi.client_secret]
    assert query["order"] == ["7"]
    paid = secret_client.v1.payment_intents.retrieve(pi.id, params={"expand": ["latest_charge"]})
    assert paid.status == "succeeded"
    charge = paid.latest_charge
    assert isinstance(charge, stripe.Charge)
    assert charge.billing_details.address is not None and charge.billing_details.address.postal_code == "94107"


@pytest.mark.parametrize(
    ("number", "decline_code", "message"),
    [
        ("4000000000000002", "generic_decline", "Your card was declined."),
        ("4000000000009995", "insufficient_funds", "Your card has insufficient funds."),
    ],
)
def test_decline_returns_stripe_shaped_error(
    shop: Shop, secret_client: stripe.StripeClient, number: str, decline_code: str, message: str
) -> None:
    pi = new_intent(secret_client)
    page = shop.open(str(pi.client_secret), redirect="if_required")
    shop.fill_card(number)
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#result")).to_have_text(f"error:card_error:card_declined:{decline_code}:{message}")
    assert secret_client.v1.payment_intents.retrieve(pi.id).status == "requires_payment_method"


def test_success_without_redirect_when_if_required(shop: Shop, secret_client: stripe.StripeClient) -> None:
    pi = new_intent(secret_client)
    page = shop.open(str(pi.client_secret), redirect="if_required")
    shop.fill_card("5555555555554444")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#result")).to_have_text("ok:succeeded")
    result = page.evaluate("(s) => window.shopStripe.retrievePaymentIntent(s)", pi.client_secret)
    assert result["paymentIntent"]["status"] == "succeeded"


def test_client_side_validation_messages(shop: Shop, secret_client: stripe.StripeClient) -> None:
    pi = new_intent(secret_client)
    page = shop.open(str(pi.client_secret))
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#result")).to_have_text("invalid:Your card number is incomplete.")
    expect(page.get_by_role("alert")).to_have_text("Your card number is incomplete.")
    shop.fill_card("4242424242424241")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#result")).to_have_text("invalid:Your card number is invalid.")
    shop.fill_card("4242424242424242", expiry="01 / 20")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#result")).to_have_text("invalid:Your card's expiration year is in the past.")
    shop.fill_card("4242424242424242", cvc="1")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#result")).to_have_text("invalid:Your card's security code is incomplete.")
    assert secret_client.v1.payment_intents.retrieve(pi.id).status == "requires_payment_method"


@pytest.mark.parametrize(("button", "status"), [("Complete", "succeeded"), ("Fail", "failed")])
def test_three_d_secure_challenge(
    shop: Shop, secret_client: stripe.StripeClient, stripe_emulator: EmulatorServer, button: str, status: str
) -> None:
    pi = new_intent(secret_client)
    page = shop.open(str(pi.client_secret))
    shop.fill_card("4000002500003155")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(re.compile(re.escape(stripe_emulator.url) + "/_emulator/3ds/"))
    expect(page.get_by_role("heading", name="3D Secure authentication")).to_be_visible()
    expect(page.get_by_text("Test mode")).to_be_visible()
    page.get_by_role("button", name=button).click()
    query = returned_query(shop)
    assert query["redirect_status"] == [status]
    assert query["payment_intent"] == [pi.id]
    refreshed = secret_client.v1.payment_intents.retrieve(pi.id)
    if status == "succeeded":
        assert refreshed.status == "succeeded"
    else:
        assert refreshed.status == "requires_payment_method"
        assert refreshed.last_payment_error is not None
        assert refreshed.last_payment_error.code == "payment_intent_authentication_failure"


def test_card_element_mount_and_unmount(shop: Shop, secret_client: stripe.StripeClient) -> None:
    pi = new_intent(secret_client)
    page = shop.open(str(pi.client_secret), element_type="card")
    expect(page.get_by_label("Card number")).to_be_visible()
    page.evaluate("() => { const el = document.querySelector('[data-stripe-emulator]'); el.remove(); }")
    expect(page.get_by_label("Card number")).to_have_count(0)
    assert page.evaluate("() => typeof Stripe === 'function' && Stripe.emulator === true")
