"""Checkout Sessions through the official SDK (sync and async) and the hosted page driven over HTTP.

The implementation lives in ``resources/checkout.py`` (REST) and ``hosted.py`` (hosted page).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import stripe

from app.stripe_emulator.server import EmulatorServer
from tests.emulator.conftest import Receiver
from tests.emulator.test_contract import assert_matches_fixture, raw

SECRET = "whsec_test_checkout"
SUCCESS = "https://shop.example/thanks?session_id={CHECKOUT_SESSION_ID}"
CANCEL = "https://shop.example/cart"
CARD = {"number": "4242 4242 4242 4242", "expiry": "12 / 34", "cvc": "123", "postal": "94107"}


def _price(sc: stripe.StripeClient, amount: int = 1500, name: str = "Guidebook") -> stripe.Price:
    return sc.v1.prices.create(params={"currency": "usd", "unit_amount": amount, "product_data": {"name": name}})


def _session(sc: stripe.StripeClient, **extra: object) -> stripe.checkout.Session:
    params: dict[str, object] = {
        "mode": "payment",
        "success_url": SUCCESS,
        "cancel_url": CANCEL,
        "line_items": [{"price": _price(sc).id, "quantity": 2}],
        **extra,
    }
    return sc.v1.checkout.sessions.create(params=params)  # type: ignore[arg-type]


def _invalid(exc: pytest.ExceptionInfo[stripe.InvalidRequestError]) -> stripe.ErrorObject:
    assert exc.value.http_status == 400
    assert exc.value.error is not None
    return exc.value.error


# --- REST ------------------------------------------------------------------------------------------


def test_create_with_price(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"email": "c@example.com"})
    price = _price(sc, 1250, "Atlas")
    session = sc.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "success_url": SUCCESS,
            "cancel_url": CANCEL,
            "customer": cus.id,
            "client_reference_id": "order-41",
            "metadata": {"order": "41"},
            "line_items": [{"price": price.id, "quantity": 3}],
            "payment_intent_data": {"metadata": {"order": "41"}, "description": "Order 41"},
            "expires_at": int(time.time()) + 3600,
            "allow_promotion_codes": True,
            "automatic_tax": {"enabled": False},
        }
    )
    assert session.id.startswith("cs_test_")
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert (session.amount_subtotal, session.amount_total, session.currency) == (3750, 3750, "usd")
    assert session.customer == cus.id and session.client_reference_id == "order-41"
    assert session.metadata is not None and session.metadata.to_dict() == {"order": "41"}
    assert session.livemode is False
    # API 2022-08-01 and later: in payment mode the PaymentIntent only exists once the customer pays.
    assert session.payment_intent is None
    assert session.url is not None and session.url.endswith(session.id)
    assert session.success_url == SUCCESS and session.cancel_url == CANCEL


def test_create_with_price_data(sc: stripe.StripeClient) -> None:
    session = sc.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "success_url": SUCCESS,
            "line_items": [
                {
                    "price_data": {"currency": "eur", "unit_amount": 900, "product_data": {"name": "Poster"}},
                    "quantity": 2,
                }
            ],
        }
    )
    assert (session.amount_total, session.currency) == (1800, "eur")
    items = sc.v1.checkout.sessions.line_items.list(session.id).data
    assert [(i.description, i.quantity, i.amount_total) for i in items] == [("Poster", 2, 1800)]


def test_retrieve_expand_and_line_items(sc: stripe.StripeClient) -> None:
    a, b = _price(sc, 500, "Map"), _price(sc, 250, "Pen")
    session = sc.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "success_url": SUCCESS,
            "line_items": [{"price": a.id, "quantity": 2}, {"price": b.id, "quantity": 1}],
        }
    )
    assert session.amount_total == 1250
    fetched = sc.v1.checkout.sessions.retrieve(session.id)
    assert fetched.id == session.id and fetched.amount_total == 1250
    items = sc.v1.checkout.sessions.line_items.list(session.id)
    assert items.url == f"/v1/checkout/sessions/{session.id}/line_items"
    assert [(i.description, i.quantity, i.amount_subtotal, i.amount_total) for i in items.data] == [
        ("Map", 2, 1000, 1000),
        ("Pen", 1, 250, 250),
    ]
    assert [i.price.id for i in items.data if i.price] == [a.id, b.id]
    first = sc.v1.checkout.sessions.line_items.list(session.id, params={"limit": 1})
    assert len(first.data) == 1 and first.has_more is True
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sc.v1.checkout.sessions.retrieve("cs_test_missing")
    assert exc.value.http_status == 404


def test_list_filters(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    mine = _session(sc, customer=cus.id)
    other = _session(sc)
    listed = sc.v1.checkout.sessions.list()
    assert {s.id for s in listed.data} == {mine.id, other.id}
    assert [s.id for s in sc.v1.checkout.sessions.list(params={"customer": cus.id}).data] == [mine.id]
    assert sc.v1.checkout.sessions.list(params={"payment_intent": "pi_nothing"}).data == []
    assert mine.url is not None
    assert httpx.post(mine.url, data=CARD).status_code == 303
    pi = sc.v1.checkout.sessions.retrieve(mine.id).payment_intent
    assert isinstance(pi, str)
    assert [s.id for s in sc.v1.checkout.sessions.list(params={"payment_intent": pi}).data] == [mine.id]


def test_expire(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    session = _session(sc)
    expired = sc.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired" and expired.payment_status == "unpaid"
    assert sc.v1.checkout.sessions.retrieve(session.id).status == "expired"
    events = sc.v1.events.list(params={"type": "checkout.session.expired"}).data
    assert [e.data.object["id"] for e in events] == [session.id]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sc.v1.checkout.sessions.expire(session.id)
    assert "expired" in _invalid(exc).message  # type: ignore[operator]
    assert session.url is not None
    page = httpx.get(session.url)
    assert page.status_code == 410 and "expired" in page.text and "Test mode" in page.text
    assert httpx.post(session.url, data=CARD).status_code == 404


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"bogus": "1"}, "bogus"),
        ({"line_items": [{"price": "PRICE", "quantity": 1, "colour": "red"}]}, "colour"),
    ],
)
def test_unknown_params_rejected(sc: stripe.StripeClient, extra: dict[str, object], param: str) -> None:
    price = _price(sc)
    if "line_items" in extra:
        extra = {"line_items": [{**extra["line_items"][0], "price": price.id}]}  # type: ignore[index]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _session(sc, **extra)
    error = _invalid(exc)
    assert error.code == "parameter_unknown" and error.param is not None and param in error.param
    assert error.message == f"Received unknown parameter: {error.param}"


def test_missing_and_invalid_params(sc: stripe.StripeClient) -> None:
    price = _price(sc)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sc.v1.checkout.sessions.create(params={"mode": "payment", "line_items": [{"price": price.id}]})
    assert _invalid(exc).param == "success_url"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        sc.v1.checkout.sessions.create(params={"mode": "payment", "success_url": SUCCESS})
    assert _invalid(exc).param == "line_items"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _session(sc, mode="sideways")
    assert _invalid(exc).param == "mode"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _session(sc, customer="cus_missing")
    assert exc.value.http_status == 404


def test_subscription_mode_is_accepted(sc: stripe.StripeClient) -> None:
    monthly = sc.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Club"},
        }
    )
    with pytest.raises(stripe.InvalidRequestError, match=r"must use `mode=subscription` with recurring prices"):
        sc.v1.checkout.sessions.create(
            params={"mode": "payment", "success_url": SUCCESS, "line_items": [{"price": monthly.id}]}
        )
    session = sc.v1.checkout.sessions.create(
        params={"mode": "subscription", "success_url": SUCCESS, "line_items": [{"price": monthly.id, "quantity": 1}]}
    )
    assert session.mode == "subscription" and session.subscription is None and session.amount_total == 900


def test_matches_fixture_open_and_complete(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    session = _session(sc, customer_email="fix@example.com")
    assert_matches_fixture(raw(emulator, f"/v1/checkout/sessions/{session.id}"), "checkout.session")
    assert session.url is not None
    assert httpx.post(session.url, data={**CARD, "email": "fix@example.com"}).status_code == 303
    done = raw(emulator, f"/v1/checkout/sessions/{session.id}")
    assert done["status"] == "complete"
    assert_matches_fixture(done, "checkout.session")
    assert_matches_fixture(sc.v1.checkout.sessions.expire(_session(sc).id).to_dict(), "checkout.session")


async def test_async_sdk(asc: stripe.StripeClient) -> None:
    price = await asc.v1.prices.create_async(
        params={"currency": "usd", "unit_amount": 400, "product_data": {"name": "Sticker"}}
    )
    session = await asc.v1.checkout.sessions.create_async(
        params={"mode": "payment", "success_url": SUCCESS, "line_items": [{"price": price.id, "quantity": 5}]}
    )
    assert session.amount_total == 2000 and session.status == "open"
    assert (await asc.v1.checkout.sessions.retrieve_async(session.id)).id == session.id
    listed = await asc.v1.checkout.sessions.list_async(params={"limit": 10})
    assert [s.id for s in listed.data] == [session.id]
    items = await asc.v1.checkout.sessions.line_items.list_async(session.id)
    assert [(i.quantity, i.amount_total) for i in items.data] == [(5, 2000)]
    expired = await asc.v1.checkout.sessions.expire_async(session.id)
    assert expired.status == "expired"
    bad: dict[str, object] = {"mode": "payment", "success_url": SUCCESS, "line_items": [{"price": price.id}]}
    bad["nope"] = "1"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        await asc.v1.checkout.sessions.create_async(params=bad)  # type: ignore[arg-type]
    assert _invalid(exc).code == "parameter_unknown"


# --- Hosted page over HTTP --------------------------------------------------------------------------


def test_hosted_page_content(sc: stripe.StripeClient) -> None:
    session = _session(sc, customer_email="buyer@example.com")
    assert session.url is not None
    page = httpx.get(session.url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for text in (
        '<html lang="en">',
        "Test mode",
        "Guidebook",
        "30.00 USD",
        ">Card number</label>",
        ">Expiration</label>",
        ">CVC</label>",
        ">Postal code</label>",
        ">Email</label>",
        'value="buyer@example.com"',
        ">Pay</button>",
        f'href="{CANCEL}"',
    ):
        assert text in page.text, text
    assert httpx.get(session.url.replace(session.id, "cs_test_nope")).status_code == 404


def test_hosted_flow_delivers_signed_completed_event(
    emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver
) -> None:
    emulator.add_webhook_endpoint(receiver.url, SECRET)
    session = _session(
        sc,
        customer_email="buyer@example.com",
        client_reference_id="order-7",
        payment_intent_data={"metadata": {"order": "7"}, "description": "Order 7"},
    )
    assert session.url is not None
    declined = httpx.post(session.url, data={**CARD, "number": "4000 0000 0000 0002", "email": "buyer@example.com"})
    assert declined.status_code == 402
    assert 'role="alert"' in declined.text and "Your card was declined." in declined.text
    assert sc.v1.checkout.sessions.retrieve(session.id).status == "open"

    done = httpx.post(session.url, data={**CARD, "email": "buyer@example.com"})
    assert done.status_code == 303
    assert done.headers["location"] == f"https://shop.example/thanks?session_id={session.id}"

    final = sc.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent"]})
    assert (final.status, final.payment_status) == ("complete", "paid")
    pi = final.payment_intent
    assert isinstance(pi, stripe.PaymentIntent)
    assert (pi.status, pi.amount, pi.currency) == ("succeeded", 3000, "usd")
    assert pi.metadata.to_dict() == {"order": "7"} and pi.description == "Order 7"
    assert final.customer_details is not None and final.customer_details.email == "buyer@example.com"
    # A completed session's page sends the shopper back to success_url instead of charging again.
    again = httpx.get(session.url)
    assert again.status_code == 303 and again.headers["location"].endswith(session.id)

    emulator.flush()
    for request in receiver.requests:
        verified = stripe.Webhook.construct_event(request["body"], request["signature"], SECRET)
        assert verified.api_version == "2026-10-28.endive"
    events = receiver.events()
    types = [e["type"] for e in events]
    completed = [e for e in events if e["type"] == "checkout.session.completed"]
    assert len(completed) == 1
    obj = completed[0]["data"]["object"]
    assert obj["id"] == session.id and obj["payment_status"] == "paid" and obj["payment_intent"] == pi.id
    assert obj["client_reference_id"] == "order-7"
    assert completed[0]["request"]["id"] is None  # caused by the hosted page, not an API request
    # Stripe's order for the paying PaymentIntent, with the session completing last.
    paying = [
        e["type"]
        for e in events
        if e["type"] == "checkout.session.completed"
        or pi.id in (e["data"]["object"].get("id"), e["data"]["object"].get("payment_intent"))
    ]
    assert paying == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    assert types[-1] == "checkout.session.completed"


def test_hosted_flow_with_3ds(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    session = _session(sc, customer_email="3ds@example.com")
    assert session.url is not None
    challenge = httpx.post(session.url, data={**CARD, "number": "4000 0025 0000 3155", "email": "3ds@example.com"})
    assert challenge.status_code == 303 and "/_emulator/3ds/" in challenge.headers["location"]
    assert "Test mode" in httpx.get(challenge.headers["location"]).text
    secret = parse_qs(urlsplit(challenge.headers["location"]).query)["client_secret"][0]
    pi_id = secret.split("_secret_")[0]
    assert sc.v1.checkout.sessions.retrieve(session.id).status == "open"

    failed = httpx.post(f"{emulator.url}/_emulator/3ds/{pi_id}", data={"client_secret": secret, "action": "fail"})
    back = httpx.get(failed.headers["location"])
    assert back.status_code == 402 and 'role="alert"' in back.text
    assert sc.v1.checkout.sessions.retrieve(session.id).status == "open"

    retry = httpx.post(session.url, data={**CARD, "number": "4000 0025 0000 3155", "email": "3ds@example.com"})
    secret = parse_qs(urlsplit(retry.headers["location"]).query)["client_secret"][0]
    pi_id = secret.split("_secret_")[0]
    passed = httpx.post(f"{emulator.url}/_emulator/3ds/{pi_id}", data={"client_secret": secret, "action": "complete"})
    home = httpx.get(passed.headers["location"])
    assert home.status_code == 303 and home.headers["location"].endswith(f"session_id={session.id}")
    final = sc.v1.checkout.sessions.retrieve(session.id)
    assert (final.status, final.payment_status, final.payment_intent) == ("complete", "paid", pi_id)
    assert sc.v1.payment_intents.retrieve(pi_id).status == "succeeded"
