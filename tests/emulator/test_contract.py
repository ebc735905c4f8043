"""Contract: objects served by the emulator have the fixture's top-level keys and value kinds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from app.stripe_emulator.server import EmulatorServer
from tests.emulator.conftest import SECRET_KEY

# Stripe's published example objects, kept next to this test with their MIT licence (fixtures/README.md).
FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "stripe-fixtures3.json").read_text())["resources"]

# The ONE list of deliberate differences from the published fixtures: object -> {field: reason}.
# "+field" means an extra field we serve, "-field" one we leave out.
DEVIATIONS: dict[str, dict[str, str]] = {
    "webhook_endpoint": {"+secret": "Stripe returns the signing secret on create only; the fixture is a retrieve."},
    "refund": {
        "+failure_reason": "Present once a refund has failed (optional in Stripe's API); the fixture has succeeded.",
        "+failure_balance_transaction": "Likewise: the balance transaction that gave the failed refund back.",
    },
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def assert_matches_fixture(obj: dict[str, Any], object_name: str) -> None:
    fixture = FIXTURES[object_name]
    deviations = DEVIATIONS.get(object_name, {})
    extra = {k[1:] for k in deviations if k.startswith("+")}
    absent = {k[1:] for k in deviations if k.startswith("-")}
    missing = sorted(set(fixture) - absent - set(obj))
    unexpected = sorted(set(obj) - extra - set(fixture))
    assert not missing and not unexpected, f"{object_name}: missing {missing}, extra {unexpected}"
    for key, expected in fixture.items():
        if key in absent or expected is None or obj[key] is None:
            continue  # nullable in the fixture (or in ours): any kind is fine
        assert _kind(obj[key]) == _kind(expected), f"{object_name}.{key}: {_kind(obj[key])} != {_kind(expected)}"


def raw(emulator: EmulatorServer, path: str) -> dict[str, Any]:
    response = httpx.get(f"{emulator.url}{path}", headers={"Authorization": f"Bearer {SECRET_KEY}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _objects(sc: stripe.StripeClient) -> dict[str, Callable[[], str]]:
    """For each object type, a function creating one through the SDK and returning its GET path."""

    def paid() -> stripe.PaymentIntent:
        cus = sc.v1.customers.create(params={"email": "k@example.com"})
        return sc.v1.payment_intents.create(
            params={
                "amount": 1000,
                "currency": "usd",
                "customer": cus.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )

    def product() -> str:
        return f"/v1/products/{sc.v1.products.create(params={'name': 'P'}).id}"

    def price() -> str:
        p = sc.v1.prices.create(
            params={
                "currency": "usd",
                "unit_amount": 100,
                "product_data": {"name": "X"},
                "recurring": {"interval": "month"},
            }
        )
        return f"/v1/prices/{p.id}"

    def event() -> str:
        sc.v1.customers.create()
        return f"/v1/events/{sc.v1.events.list().data[0].id}"

    def refund() -> str:
        return f"/v1/refunds/{sc.v1.refunds.create(params={'payment_intent': paid().id}).id}"

    def endpoint() -> str:
        e = sc.v1.webhook_endpoints.create(params={"url": "http://127.0.0.1:9/x", "enabled_events": ["*"]})
        return f"/v1/webhook_endpoints/{e.id}"

    def subscription() -> stripe.Subscription:
        cus = sc.v1.customers.create()
        price = sc.v1.prices.create(
            params={
                "currency": "usd",
                "unit_amount": 100,
                "product_data": {"name": "S"},
                "recurring": {"interval": "month"},
            }
        )
        return sc.v1.subscriptions.create(
            params={"customer": cus.id, "items": [{"price": price.id}], "payment_behavior": "default_incomplete"}
        )

    def promotion_code() -> str:
        coupon = sc.v1.coupons.create(params={"percent_off": 10, "duration": "forever"})
        promo = sc.v1.promotion_codes.create(params={"promotion": {"type": "coupon", "coupon": coupon.id}})
        return f"/v1/promotion_codes/{promo.id}"

    def setup_intent() -> str:
        cus = sc.v1.customers.create()
        si = sc.v1.setup_intents.create(params={"customer": cus.id, "payment_method": "pm_card_visa", "confirm": True})
        return f"/v1/setup_intents/{si.id}"

    def checkout_session() -> str:
        p = sc.v1.prices.create(params={"currency": "usd", "unit_amount": 100, "product_data": {"name": "C"}})
        session = sc.v1.checkout.sessions.create(
            params={"mode": "payment", "success_url": "https://x/ok", "line_items": [{"price": p.id, "quantity": 1}]}
        )
        return f"/v1/checkout/sessions/{session.id}"

    def payment_method() -> str:
        customer = sc.v1.customers.create()
        method = sc.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
        return f"/v1/payment_methods/{method.id}"

    return {
        "checkout.session": checkout_session,
        "setup_intent": setup_intent,
        "subscription": lambda: f"/v1/subscriptions/{subscription().id}",
        "subscription_item": lambda: f"/v1/subscription_items/{subscription()['items'].data[0].id}",
        "invoice": lambda: f"/v1/invoices/{subscription().latest_invoice}",
        "coupon": lambda: f"/v1/coupons/{sc.v1.coupons.create(params={'amount_off': 5, 'currency': 'usd'}).id}",
        "promotion_code": promotion_code,
        "tax_rate": lambda: (
            "/v1/tax_rates/"
            + sc.v1.tax_rates.create(
                params={
                    "display_name": "QST",
                    "percentage": 9.975,
                    "inclusive": False,
                    "country": "CA",
                    "state": "QC",
                    "jurisdiction": "QC",
                    "tax_type": "qst",
                }
            ).id
        ),
        "test_helpers.test_clock": lambda: (
            "/v1/test_helpers/test_clocks/"
            + sc.v1.test_helpers.test_clocks.create(params={"frozen_time": 1_700_000_000}).id
        ),
        "customer": lambda: f"/v1/customers/{sc.v1.customers.create().id}",
        "product": product,
        "price": price,
        "payment_method": payment_method,
        "payment_intent": lambda: f"/v1/payment_intents/{paid().id}",
        "charge": lambda: f"/v1/charges/{paid().latest_charge}",
        "refund": refund,
        "balance_transaction": lambda: (
            f"/v1/balance_transactions/{sc.v1.charges.retrieve(paid().latest_charge).balance_transaction}"
        ),
        "event": event,
        "webhook_endpoint": endpoint,
    }


OBJECTS = [
    "customer",
    "product",
    "price",
    "payment_method",
    "payment_intent",
    "charge",
    "refund",
    "balance_transaction",
    "event",
    "webhook_endpoint",
    "setup_intent",
    "subscription",
    "subscription_item",
    "invoice",
    "coupon",
    "promotion_code",
    "tax_rate",
    "test_helpers.test_clock",
    "checkout.session",
]


@pytest.mark.parametrize("object_name", OBJECTS)
def test_object_matches_fixture(emulator: EmulatorServer, sc: stripe.StripeClient, object_name: str) -> None:
    obj = raw(emulator, _objects(sc)[object_name]())
    assert obj["object"] == object_name
    assert_matches_fixture(obj, object_name)


def test_failed_and_pending_refunds_match_the_fixture(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    """The asynchronous test cards' refunds (5126 fails later, 7726 is pending first) keep Stripe's shape."""
    for card, status in (("pm_card_refundFail", "failed"), ("pm_card_pendingRefund", "succeeded")):
        pi = sc.v1.payment_intents.create(
            params={"amount": 1000, "currency": "usd", "payment_method": card, "confirm": True}
        )
        refund = sc.v1.refunds.create(params={"payment_intent": pi.id})
        assert_matches_fixture(raw(emulator, f"/v1/refunds/{refund.id}"), "refund")
        emulator.control(f"refunds/{refund.id}/settle")
        settled = raw(emulator, f"/v1/refunds/{refund.id}")
        assert settled["status"] == status
        assert_matches_fixture(settled, "refund")


def test_webhook_endpoint_create_response(sc: stripe.StripeClient) -> None:
    created = sc.v1.webhook_endpoints.create(params={"url": "http://127.0.0.1:9/y", "enabled_events": ["*"]})
    assert_matches_fixture(created.to_dict(), "webhook_endpoint")


def test_billing_portal_session_matches_fixture(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    portal = sc.v1.billing_portal.sessions.create(params={"customer": cus.id, "return_url": "https://x/account"})
    assert_matches_fixture(portal.to_dict(), "billing_portal.session")


def test_list_and_deleted_shapes(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    listed = raw(emulator, "/v1/customers")
    assert set(listed) == {"object", "data", "has_more", "url"}
    assert sc.v1.customers.delete(cus.id).to_dict() == {"id": cus.id, "object": "customer", "deleted": True}


def test_error_shape(emulator: EmulatorServer) -> None:
    response = httpx.post(
        f"{emulator.url}/v1/customers", data={"nope": "1"}, headers={"Authorization": f"Bearer {SECRET_KEY}"}
    )
    error = response.json()["error"]
    assert response.status_code == 400
    assert {"type", "code", "param", "message", "doc_url", "request_log_url"} <= set(error)


def test_a_charge_pays_stripes_canadian_card_fee_and_a_refund_keeps_it(sc: stripe.StripeClient) -> None:
    """2.9 % + C$0.30 per domestic card charge (Stripe's published pricing); the fee is not returned on refund."""
    intent = sc.v1.payment_intents.create(
        params={"amount": 5650, "currency": "cad", "payment_method": "pm_card_visa", "confirm": True}
    )
    charge = sc.v1.charges.retrieve(str(intent.latest_charge), params={"expand": ["balance_transaction"]})
    txn = charge.balance_transaction
    assert (txn.amount, txn.fee, txn.net, txn.type) == (5650, 194, 5456, "charge")  # 163.85 -> 164, + 30
    assert txn.fee_details[0].type == "stripe_fee"
    refund = sc.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1000})
    back = sc.v1.balance_transactions.retrieve(str(refund.balance_transaction))
    assert (back.amount, back.fee, back.net, back.type, back.source) == (-1000, 0, -1000, "refund", refund.id)
