"""Events and webhook delivery: signatures, retries, chaos, flush, event listing."""

from __future__ import annotations

import pytest
import stripe

from app.stripe_emulator.server import EmulatorServer
from tests.emulator.conftest import Receiver

SECRET = "whsec_test_emulator_secret"


def _pay(sc: stripe.StripeClient, amount: int = 1000) -> stripe.PaymentIntent:
    return sc.v1.payment_intents.create(
        params={"amount": amount, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )


def test_signed_delivery_verifies_with_sdk(
    emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver
) -> None:
    emulator.add_webhook_endpoint(receiver.url, SECRET)
    pi = _pay(sc)
    emulator.flush()
    assert len(receiver.requests) == 3
    for request in receiver.requests:
        event = stripe.Webhook.construct_event(request["body"], request["signature"], SECRET)
        assert event.api_version == "2026-10-28.endive"
        assert event.livemode is False
    types = [e["type"] for e in receiver.events()]
    assert types == ["payment_intent.created", "charge.succeeded", "payment_intent.succeeded"]
    succeeded = receiver.events()[2]
    assert succeeded["data"]["object"]["id"] == pi.id
    assert succeeded["request"]["id"].startswith("req_")
    assert succeeded["request"]["idempotency_key"]  # the SDK always sends one on POST
    with pytest.raises(stripe.SignatureVerificationError, match=r"No signatures found matching the expected signature"):
        stripe.Webhook.construct_event(receiver.requests[0]["body"], receiver.requests[0]["signature"], "whsec_bad")


def test_webhook_endpoint_crud_and_filtering(
    emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver
) -> None:
    endpoint = sc.v1.webhook_endpoints.create(
        params={"url": receiver.url, "enabled_events": ["payment_intent.succeeded"]}
    )
    assert endpoint.secret is not None and endpoint.secret.startswith("whsec_")
    fetched = sc.v1.webhook_endpoints.retrieve(endpoint.id)
    assert "secret" not in fetched
    _pay(sc)
    emulator.flush()
    assert [e["type"] for e in receiver.events()] == ["payment_intent.succeeded"]
    stripe.Webhook.construct_event(receiver.requests[0]["body"], receiver.requests[0]["signature"], endpoint.secret)
    sc.v1.webhook_endpoints.update(endpoint.id, params={"disabled": True})
    _pay(sc)
    emulator.flush()
    assert len(receiver.requests) == 1
    assert sc.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    assert sc.v1.webhook_endpoints.list().data == []


def test_retry_after_receiver_500(emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver) -> None:
    receiver.fail_first = 2
    endpoint = emulator.add_webhook_endpoint(receiver.url, SECRET, ["customer.created"])
    cus = sc.v1.customers.create()
    emulator.flush()
    assert [e["data"]["object"]["id"] for e in receiver.events()] == [cus.id]
    log = [d for d in emulator.deliveries() if d["endpoint"] == endpoint["id"]]
    assert [(d["attempt"], d["status_code"]) for d in log] == [(1, 500), (2, 500), (3, 200)]
    event = sc.v1.events.list(params={"type": "customer.created"}).data[0]
    assert event.pending_webhooks == 0


def test_gives_up_after_max_attempts(emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver) -> None:
    receiver.fail_first = 100
    emulator.add_webhook_endpoint(receiver.url, SECRET, ["customer.created"])
    sc.v1.customers.create()
    emulator.flush()
    attempts = [d["attempt"] for d in emulator.deliveries()]
    assert attempts == [1, 2, 3, 4]  # the session emulator allows 4 attempts
    assert sc.v1.events.list(params={"type": "customer.created"}).data[0].pending_webhooks == 1


def test_unreachable_receiver_is_logged(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    emulator.add_webhook_endpoint("http://127.0.0.1:9/nothing", SECRET, ["customer.created"])
    sc.v1.customers.create()
    emulator.flush()
    log = emulator.deliveries()
    assert len(log) == 4 and all(d["status_code"] is None and d["error"] for d in log)


def _chaos_run(emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver) -> list[str]:
    emulator.reset()
    receiver.requests.clear()
    emulator.add_webhook_endpoint(receiver.url, SECRET, ["customer.created"])
    emulator.chaos(seed=1234, duplicate_rate=0.3, drop_rate=0.2, shuffle=4)
    for i in range(12):
        sc.v1.customers.create(params={"metadata": {"n": str(i)}})
    emulator.flush()
    return [e["data"]["object"]["metadata"]["n"] for e in receiver.events()]


def test_chaos_is_reproducible_by_seed(emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver) -> None:
    first = _chaos_run(emulator, sc, receiver)
    second = _chaos_run(emulator, sc, receiver)
    assert first == second
    assert first != [str(i) for i in range(12)]  # reordered, duplicated and/or dropped
    assert len(set(first)) < 12 or len(first) > 12
    # Dropped deliveries still exist as events.
    assert len(sc.v1.events.list(params={"type": "customer.created", "limit": 100}).data) == 12
    dropped = [d for d in emulator.deliveries() if d["dropped"]]
    assert len(set(first)) == 12 - len({d["event"] for d in dropped})


def test_chaos_delay_is_awaited_by_flush(emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver) -> None:
    emulator.add_webhook_endpoint(receiver.url, SECRET, ["customer.created"])
    emulator.chaos(seed=1, delay_ms=[50, 150])
    sc.v1.customers.create()
    sc.v1.customers.create()
    result = emulator.flush()
    assert result == {"idle": True, "pending": 0}
    assert len(receiver.requests) == 2


def test_events_list_filters(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    sc.v1.customers.update(cus.id, params={"name": "New"})
    _pay(sc)
    updated = sc.v1.events.list(params={"type": "customer.updated"}).data
    assert len(updated) == 1
    assert updated[0].data.previous_attributes is not None
    assert updated[0].data.previous_attributes["name"] is None
    assert updated[0].data.object["name"] == "New"
    wildcard = sc.v1.events.list(params={"type": "customer.*"}).data
    assert [e.type for e in wildcard] == ["customer.updated", "customer.created"]
    several = sc.v1.events.list(params={"types": ["charge.succeeded", "customer.created"]}).data
    assert [e.type for e in several] == ["charge.succeeded", "customer.created"]
    created = wildcard[-1].created  # the oldest event
    assert len(sc.v1.events.list(params={"created": {"gte": created}, "limit": 100}).data) == 5
    assert len(sc.v1.events.list(params={"created": {"lt": created}, "limit": 100}).data) == 0
    assert sc.v1.events.list(params={"created": {"gt": created + 3600}}).data == []
    fetched = sc.v1.events.retrieve(updated[0].id)
    assert fetched.id == updated[0].id and fetched.type == "customer.updated"


def test_cli_configured_endpoint_survives_reset(receiver: Receiver) -> None:
    from app.stripe_emulator.server import run_emulator
    from tests.emulator.conftest import make_client

    with run_emulator(webhook_url=receiver.url, webhook_secret=SECRET) as emu:
        sc = make_client(emu.url)
        emu.reset()
        sc.v1.customers.create()
        emu.flush()
        assert [e["type"] for e in receiver.events()] == ["customer.created"]
        stripe.Webhook.construct_event(receiver.requests[0]["body"], receiver.requests[0]["signature"], SECRET)
