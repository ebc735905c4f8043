"""Hosted pages (Checkout, Billing Portal, invoice page) driven over HTTP like a browser form would."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import stripe

from app.stripe_emulator.server import EmulatorServer

CARD = {"number": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123", "postal": "94107"}
SUCCESS = "https://shop.example/success?session_id={CHECKOUT_SESSION_ID}"


def price(sc: stripe.StripeClient, amount: int, recurring: bool = False, name: str = "Item") -> stripe.Price:
    params: stripe.params.PriceCreateParams = {"currency": "usd", "unit_amount": amount, "product_data": {"name": name}}
    if recurring:
        params["recurring"] = {"interval": "month"}
    return sc.v1.prices.create(params=params)


def test_checkout_payment_mode(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    session = sc.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": price(sc, 1200, name="Ebook").id, "quantity": 2}],
            "success_url": SUCCESS,
            "cancel_url": "https://shop.example/cart",
            "customer_email": "buyer@example.com",
            "client_reference_id": "order-5",
            "metadata": {"order": "5"},
            "payment_intent_data": {"metadata": {"order": "5"}},
        }
    )
    assert session.id.startswith("cs_test_") and session.status == "open" and session.amount_total == 2400
    assert session.url is not None
    page = httpx.get(session.url)
    assert page.status_code == 200
    for text in ("Test mode", "Card number", "Expiration", "CVC", "Postal code", "Ebook", "24.00 USD"):
        assert text in page.text
    declined = httpx.post(session.url, data={**CARD, "number": "4000000000000002", "email": "buyer@example.com"})
    assert declined.status_code == 402 and "Your card was declined." in declined.text
    done = httpx.post(session.url, data={**CARD, "email": "buyer@example.com"})
    assert done.status_code == 303
    assert done.headers["location"] == f"https://shop.example/success?session_id={session.id}"
    session = sc.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    assert session.status == "complete" and session.payment_status == "paid"
    pi = session.payment_intent
    assert isinstance(pi, stripe.PaymentIntent) and pi.status == "succeeded" and pi.metadata["order"] == "5"
    assert session.customer_details is not None and session.customer_details.email == "buyer@example.com"
    completed = sc.v1.events.list(params={"type": "checkout.session.completed"}).data
    assert [e.data.object["id"] for e in completed] == [session.id]
    items = sc.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.quantity, i.amount_total) for i in items.data] == [(2, 2400)]


def test_checkout_promotion_code(sc: stripe.StripeClient) -> None:
    coupon = sc.v1.coupons.create(params={"percent_off": 25, "duration": "once"})
    sc.v1.promotion_codes.create(params={"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "SPRING"})
    session = sc.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "allow_promotion_codes": True,
            "success_url": SUCCESS,
            "customer_email": "p@example.com",
            "line_items": [{"price": price(sc, 2000).id, "quantity": 1}],
        }
    )
    assert session.url is not None
    page = httpx.get(session.url)
    assert "Promotion code" in page.text
    bad = httpx.post(session.url, data={**CARD, "promo": "NOPE"})
    assert bad.status_code == 400 and "This code is invalid." in bad.text
    done = httpx.post(session.url, data={**CARD, "promo": "spring"})
    assert done.status_code == 303
    session = sc.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    assert session.amount_total == 1500 and session.total_details is not None
    assert session.total_details.amount_discount == 500
    assert isinstance(session.payment_intent, stripe.PaymentIntent) and session.payment_intent.amount == 1500
    assert sc.v1.coupons.retrieve(coupon.id).times_redeemed == 1


def test_checkout_subscription_mode_with_3ds(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"email": "sub@example.com"})
    session = sc.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": cus.id,
            "success_url": SUCCESS,
            "line_items": [{"price": price(sc, 900, recurring=True).id, "quantity": 1}],
        }
    )
    assert session.url is not None
    challenge = httpx.post(session.url, data={**CARD, "number": "4000002500003155"})
    assert challenge.status_code == 303 and "/_emulator/3ds/" in challenge.headers["location"]
    secret = parse_qs(urlsplit(challenge.headers["location"]).query)["client_secret"][0]
    pi_id = secret.split("_secret_")[0]
    back = httpx.post(f"{emulator.url}/_emulator/3ds/{pi_id}", data={"client_secret": secret, "action": "complete"})
    assert back.status_code == 303
    final = httpx.get(back.headers["location"])
    assert final.status_code == 303
    assert final.headers["location"] == f"https://shop.example/success?session_id={session.id}"
    session = sc.v1.checkout.sessions.retrieve(session.id, params={"expand": ["subscription"]})
    assert session.status == "complete"
    sub = session.subscription
    assert isinstance(sub, stripe.Subscription) and sub.status == "active"
    assert sub.default_payment_method is not None


def test_billing_portal(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"email": "portal@example.com"})
    card = sc.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    sc.v1.customers.update(cus.id, params={"invoice_settings": {"default_payment_method": card.id}})
    basic, pro = price(sc, 1000, True, "Basic"), price(sc, 2500, True, "Pro")
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": basic.id}]})
    portal = sc.v1.billing_portal.sessions.create(
        params={"customer": cus.id, "return_url": "https://shop.example/account"}
    )
    assert portal.id.startswith("bps_") and portal.url.startswith(emulator.url)
    page = httpx.get(portal.url)
    assert page.status_code == 200
    for text in (
        "Test mode",
        "Basic",
        "Cancel subscription",
        "Update plan",
        "Visa ending in 4242",
        "View invoice",
        'href="https://shop.example/account"',
    ):
        assert text in page.text
    with httpx.Client(base_url=emulator.url, follow_redirects=True) as browser:
        path = urlsplit(portal.url).path
        assert "will be canceled" in browser.post(f"{path}/cancel", data={"subscription": sub.id}).text
        assert sc.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True
        assert "Resume subscription" in browser.get(path).text
        browser.post(f"{path}/resume", data={"subscription": sub.id})
        assert sc.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False
        browser.post(f"{path}/switch", data={"subscription": sub.id, "price": pro.id})
        assert sc.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == pro.id
        updated = browser.post(f"{path}/card", data={**CARD, "number": "5555555555554444"})
        assert "Mastercard ending in 4444" in updated.text
    assert sc.v1.customers.retrieve(cus.id).invoice_settings.default_payment_method != card.id


def test_hosted_invoice_page(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    sub = sc.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "payment_behavior": "default_incomplete",
            "items": [{"price": price(sc, 700, True).id}],
        }
    )
    invoice = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.hosted_invoice_url is not None and invoice.invoice_pdf is not None
    page = httpx.get(invoice.hosted_invoice_url)
    assert page.status_code == 200 and "Pay invoice" in page.text and "Test mode" in page.text
    assert httpx.get(invoice.invoice_pdf).content.startswith(b"%PDF")
    declined = httpx.post(invoice.hosted_invoice_url, data={**CARD, "number": "4000000000009995"})
    assert declined.status_code == 402 and "insufficient funds" in declined.text
    paid = httpx.post(invoice.hosted_invoice_url, data=CARD)
    assert paid.status_code == 200 and ">paid<" in paid.text
    assert sc.v1.subscriptions.retrieve(sub.id).status == "active"
