"""The hosted Checkout page in a real browser: pay, decline and retry, 3-D Secure, cancel."""

from __future__ import annotations

import stripe
from playwright.sync_api import Page, expect

from e2e.emulator.conftest import Shop


def _session(client: stripe.StripeClient, shop: Shop, **extra: object) -> stripe.checkout.Session:
    price = client.v1.prices.create(
        params={"currency": "usd", "unit_amount": 1500, "product_data": {"name": "Guidebook"}}
    )
    params: dict[str, object] = {
        "mode": "payment",
        "line_items": [{"price": price.id, "quantity": 2}],
        "success_url": shop.url + "/return?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": shop.url + "/return?cancelled=1",
        **extra,
    }
    return client.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]


def _fill_card(page: Page, number: str) -> None:
    page.get_by_label("Card number").fill(number)
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Postal code").fill("94107")


def test_pay_with_4242_lands_on_success_url(shop: Shop, secret_client: stripe.StripeClient) -> None:
    session = _session(secret_client, shop, customer_email="reader@example.com")
    page = shop.page
    page.goto(str(session.url))
    expect(page.get_by_text("Test mode")).to_be_visible()
    expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
    expect(page.get_by_role("table", name="Order summary")).to_contain_text("Guidebook")
    expect(page.get_by_text("Total due today")).to_contain_text("30.00 USD")
    expect(page.get_by_label("Email")).to_have_value("reader@example.com")
    expect(page.get_by_role("link", name="Cancel and go back")).to_have_attribute(
        "href", shop.url + "/return?cancelled=1"
    )
    _fill_card(page, "4242 4242 4242 4242")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(shop.url + f"/return?session_id={session.id}")
    expect(page.get_by_role("heading", name="Thanks")).to_be_visible()
    done = secret_client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    assert (done.status, done.payment_status) == ("complete", "paid")
    assert isinstance(done.payment_intent, stripe.PaymentIntent) and done.payment_intent.status == "succeeded"


def test_decline_then_retry(shop: Shop, secret_client: stripe.StripeClient) -> None:
    session = _session(secret_client, shop)
    page = shop.page
    page.goto(str(session.url))
    page.get_by_label("Email").fill("retry@example.com")
    _fill_card(page, "4000 0000 0000 0002")
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("alert")).to_have_text("Your card was declined.")
    assert secret_client.v1.checkout.sessions.retrieve(session.id).status == "open"
    _fill_card(page, "4242 4242 4242 4242")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(shop.url + f"/return?session_id={session.id}")
    done = secret_client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status) == ("complete", "paid")
    assert done.customer_details is not None and done.customer_details.email == "retry@example.com"


def test_3ds_challenge_then_back(shop: Shop, secret_client: stripe.StripeClient) -> None:
    session = _session(secret_client, shop, customer_email="secure@example.com")
    page = shop.page
    page.goto(str(session.url))
    _fill_card(page, "4000 0025 0000 3155")
    page.get_by_role("button", name="Pay").click()
    expect(page.get_by_role("heading", name="3D Secure authentication")).to_be_visible()
    expect(page.get_by_text("Test mode")).to_be_visible()
    page.get_by_role("button", name="Complete").click()
    page.wait_for_url(shop.url + f"/return?session_id={session.id}")
    assert secret_client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


def test_cancel_link_and_expired_page(shop: Shop, secret_client: stripe.StripeClient) -> None:
    session = _session(secret_client, shop)
    page = shop.page
    page.goto(str(session.url))
    page.get_by_role("link", name="Cancel and go back").click()
    page.wait_for_url(shop.url + "/return?cancelled=1")
    secret_client.v1.checkout.sessions.expire(session.id)
    page.goto(str(session.url))
    expect(page.get_by_role("heading", name="This checkout session has expired")).to_be_visible()
    expect(page.get_by_role("button", name="Pay")).to_have_count(0)
