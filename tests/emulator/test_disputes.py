"""Disputes: Stripe's dispute test cards open one, the merchant answers or accepts it, the bank settles it (R3)."""

from __future__ import annotations

import urllib.error

import pytest
import stripe

from app.stripe_emulator.server import EmulatorServer
from tests.emulator.conftest import Receiver
from tests.emulator.test_contract import assert_matches_fixture, raw
from tests.emulator.test_payments import card_pm

SECRET = "whsec_disputes"


def _disputed(sc: stripe.StripeClient, payment_method: str = "pm_card_createDispute") -> stripe.PaymentIntent:
    return sc.v1.payment_intents.create(
        params={"amount": 4200, "currency": "cad", "payment_method": payment_method, "confirm": True}
    )


def _dispute_of(sc: stripe.StripeClient, pi: stripe.PaymentIntent) -> stripe.Dispute:
    listing = sc.v1.disputes.list(params={"payment_intent": pi.id})
    assert len(listing.data) == 1
    return listing.data[0]


def test_0259_pays_then_is_disputed_as_fraudulent(
    emulator: EmulatorServer, sc: stripe.StripeClient, receiver: Receiver
) -> None:
    """R3: 4000 0000 0000 0259 succeeds, then its charge is disputed at once (charge.dispute.created)."""
    emulator.add_webhook_endpoint(receiver.url, SECRET)
    pi = sc.v1.payment_intents.create(
        params={
            "amount": 4200,
            "currency": "cad",
            "payment_method": card_pm(sc, "4000000000000259").id,
            "confirm": True,
        }
    )
    assert pi.status == "succeeded"
    emulator.flush()
    types = [e["type"] for e in receiver.events()]
    assert types[-2:] == ["charge.dispute.created", "charge.dispute.funds_withdrawn"]
    created = next(e for e in receiver.events() if e["type"] == "charge.dispute.created")
    assert created["request"] == {"id": None, "idempotency_key": None}  # the bank's doing, not an API call
    dispute = sc.v1.disputes.retrieve(created["data"]["object"]["id"])
    assert dispute.id.startswith("dp_")
    assert (dispute.amount, dispute.currency, dispute.reason, dispute.status) == (
        4200,
        "cad",
        "fraudulent",
        "needs_response",
    )
    assert (dispute.charge, dispute.payment_intent) == (pi.latest_charge, pi.id)
    assert dispute.evidence_details.due_by > dispute.created
    assert dispute.evidence_details.due_by % 86_400 == 86_399  # the end of a UTC day, as Stripe's are
    assert dispute.is_charge_refundable is False
    assert sc.v1.charges.retrieve(str(pi.latest_charge)).disputed is True
    withdrawal = sc.v1.balance_transactions.retrieve(dispute.balance_transactions[0].id)
    assert (withdrawal.amount, withdrawal.fee, withdrawal.type, withdrawal.reporting_category) == (
        -4200,
        1500,
        "adjustment",
        "dispute",
    )
    # A charged-back payment cannot be refunded on top.
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sc.v1.refunds.create(params={"payment_intent": pi.id})
    assert refused.value.code == "charge_disputed"


def test_ordinary_cards_are_not_disputed(sc: stripe.StripeClient) -> None:
    pi = _disputed(sc, "pm_card_visa")
    assert sc.v1.disputes.list(params={"payment_intent": pi.id}).data == []
    assert sc.v1.charges.retrieve(str(pi.latest_charge)).disputed is False


def test_settled_won_reinstates_the_funds(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    dispute = _dispute_of(sc, _disputed(sc))
    won = emulator.control(f"disputes/{dispute.id}/settle", {"outcome": "won"})
    assert won["status"] == "won"
    types = [e.type for e in sc.v1.events.list(params={"limit": 3}).data]
    assert types == ["charge.dispute.funds_reinstated", "charge.dispute.closed", "charge.dispute.updated"]
    updated = sc.v1.events.list(params={"type": "charge.dispute.updated"}).data[0]
    assert updated.data.object["status"] == "under_review"
    closed = sc.v1.events.list(params={"type": "charge.dispute.closed"}).data[0]
    assert closed.data.previous_attributes is not None
    assert closed.data.previous_attributes["status"] == "under_review"
    back = sc.v1.balance_transactions.retrieve(won["balance_transactions"][1]["id"])
    assert (back.amount, back.fee, back.reporting_category) == (4200, 0, "dispute_reversal")  # the fee stays lost
    # Decided once.
    with pytest.raises(urllib.error.HTTPError):
        emulator.control(f"disputes/{dispute.id}/settle", {"outcome": "lost"})


def test_settled_lost_keeps_the_funds_withdrawn(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    dispute = _dispute_of(sc, _disputed(sc))
    lost = emulator.control(f"disputes/{dispute.id}/settle", {"outcome": "lost"})
    assert lost["status"] == "lost" and len(lost["balance_transactions"]) == 1
    assert sc.v1.events.list(params={"limit": 1}).data[0].type == "charge.dispute.closed"


def test_evidence_goes_under_review_and_test_evidence_decides(
    emulator: EmulatorServer, sc: stripe.StripeClient
) -> None:
    """Stripe's test mode: ``uncategorized_text=losing_evidence`` loses, ``winning_evidence`` wins."""
    dispute = _dispute_of(sc, _disputed(sc))
    staged = sc.v1.disputes.update(
        dispute.id, params={"evidence": {"product_description": "An e-book"}, "submit": False}
    )
    assert staged.status == "needs_response" and staged.evidence_details.has_evidence is True
    assert staged.evidence_details.submission_count == 0
    submitted = sc.v1.disputes.update(dispute.id, params={"evidence": {"uncategorized_text": "losing_evidence"}})
    assert submitted.status == "under_review" and submitted.evidence_details.submission_count == 1
    assert submitted.evidence.uncategorized_text == "losing_evidence"
    event = sc.v1.events.list(params={"type": "charge.dispute.updated"}).data[0]
    assert event.data.previous_attributes is not None
    assert event.data.previous_attributes["status"] == "needs_response"
    # Under review: no more evidence.
    with pytest.raises(stripe.InvalidRequestError, match=r"in status under_review and cannot be updated with evidence"):
        sc.v1.disputes.update(dispute.id, params={"evidence": {"uncategorized_text": "more"}})
    assert emulator.control(f"disputes/{dispute.id}/settle")["status"] == "lost"


def test_close_accepts_the_dispute_as_lost(sc: stripe.StripeClient) -> None:
    dispute = _dispute_of(sc, _disputed(sc))
    closed = sc.v1.disputes.close(dispute.id)
    assert closed.status == "lost"
    event = sc.v1.events.list(params={"limit": 1}).data[0]
    assert event.type == "charge.dispute.closed"
    assert event.request is not None and event.request.id is not None  # the merchant's API call
    with pytest.raises(stripe.InvalidRequestError, match=r"This dispute is already closed \(lost\)"):
        sc.v1.disputes.close(dispute.id)


def test_list_filters_and_unknown_ids(sc: stripe.StripeClient) -> None:
    first, second = _disputed(sc), _disputed(sc, "pm_card_createDisputeProductNotReceived")
    assert [d.payment_intent for d in sc.v1.disputes.list().data] == [second.id, first.id]
    only = sc.v1.disputes.list(params={"charge": str(second.latest_charge)}).data
    assert [d.reason for d in only] == ["product_not_received"]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sc.v1.disputes.retrieve("dp_nope")
    assert missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError, match=r"Received unknown parameter: evidence\[not_a_field\]"):
        sc.v1.disputes.update(only[0].id, params={"evidence": {"not_a_field": "x"}})


def test_dispute_matches_the_fixture(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    """Contract: the dispute object (open, under review, closed) has the published fixture's keys and kinds."""
    dispute = _dispute_of(sc, _disputed(sc))
    assert_matches_fixture(raw(emulator, f"/v1/disputes/{dispute.id}"), "dispute")
    sc.v1.disputes.update(dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}})
    assert_matches_fixture(raw(emulator, f"/v1/disputes/{dispute.id}"), "dispute")
    emulator.control(f"disputes/{dispute.id}/settle")
    settled = raw(emulator, f"/v1/disputes/{dispute.id}")
    assert settled["status"] == "won"
    assert_matches_fixture(settled, "dispute")
    assert_matches_fixture(
        raw(emulator, f"/v1/balance_transactions/{settled['balance_transactions'][1]['id']}"), "balance_transaction"
    )
