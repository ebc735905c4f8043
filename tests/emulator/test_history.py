"""Bulk history, list paging over it, API rate limiting (429) and the in-flight counter."""

from __future__ import annotations

import httpx
import pytest
import stripe

from app.stripe_emulator.server import EmulatorServer
from tests.emulator.conftest import SECRET_KEY, make_client


def test_seed_history_builds_api_shaped_objects_without_events(
    emulator: EmulatorServer, sc: stripe.StripeClient
) -> None:
    created = emulator.control("seed_history", {"customers": 30, "invoices_per_customer": 2, "refund_every": 3})
    assert created["created"] == {
        "customer": 30,
        "subscription": 30,
        "invoice": 60,
        "payment_intent": 30,
        "charge": 30,
        "refund": 10,
    }
    # The template objects (one of each, made through the API) are there too; the 190 clones made no events.
    assert emulator.deliveries() == []
    assert len(list(sc.v1.events.list({"limit": 100}).auto_paging_iter())) < 30
    customers = list(sc.v1.customers.list({"limit": 100}).auto_paging_iter())
    assert len(customers) == 31
    assert len({c.id for c in customers}) == 31
    newest = customers[0]
    assert newest.email.startswith("history") or newest.email.endswith("template@example.test")
    sub = sc.v1.subscriptions.list({"customer": customers[5].id, "status": "all"}).data[0]
    invoices = sc.v1.invoices.list({"subscription": sub.id}).data
    assert len(invoices) == 2 and all(i.customer == customers[5].id for i in invoices)
    assert sub.latest_invoice in {i.id for i in invoices}
    refunded = [c for c in sc.v1.charges.list({"limit": 100}).auto_paging_iter() if c.amount_refunded]
    assert len(refunded) == 11  # ten clones and the template
    refund = sc.v1.refunds.list({"charge": refunded[0].id}).data[0]
    assert refund.amount == refunded[0].amount_refunded


def test_list_paging_both_ways_and_by_creation_time(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    emulator.control("seed_history", {"customers": 25, "start": 1_700_000_000})
    everything = [c.id for c in sc.v1.customers.list({"limit": 100}).data]
    first = sc.v1.customers.list({"limit": 10})
    second = sc.v1.customers.list({"limit": 10, "starting_after": first.data[-1].id})
    assert [c.id for c in first.data + second.data] == everything[:20] and second.has_more
    back = sc.v1.customers.list({"limit": 5, "ending_before": second.data[0].id})
    assert [c.id for c in back.data] == everything[5:10] and back.has_more
    recent = sc.v1.customers.list({"limit": 100, "created": {"gte": 1_700_000_000 + 3600}})
    assert 0 < len(recent.data) < len(everything)
    assert all(c.created >= 1_700_000_000 + 3600 for c in recent.data)


def test_rate_limit_chaos_answers_stripes_429(emulator: EmulatorServer) -> None:
    emulator.chaos(rate_limit_every=2, rate_limit_should_retry="false")
    answers = [
        httpx.get(f"{emulator.url}/v1/customers", headers={"Authorization": f"Bearer {SECRET_KEY}"}) for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [200, 429, 200, 429]
    limited = answers[1]
    error = limited.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "rate_limit")
    assert limited.headers["Stripe-Should-Retry"] == "false"
    # The SDK raises RateLimitError (and does not retry: Stripe said not to).
    client = make_client(emulator.url)
    client.v1.customers.list()  # the fifth request passes, the sixth is refused
    with pytest.raises(stripe.RateLimitError, match=r"Request rate limit exceeded"):
        client.v1.customers.list()
    stats = emulator.control("stats", method="GET")
    assert stats["rate_limited"] >= 3 and stats["max_in_flight"] >= 1
