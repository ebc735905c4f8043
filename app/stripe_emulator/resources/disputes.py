"""Disputes (chargebacks): opened by Stripe's dispute test cards, answered with evidence or accepted, settled later.

Stripe's test card 0259 (``pm_card_createDispute``) pays, then its charge is disputed as ``fraudulent`` at once:
``charge.dispute.created`` and ``charge.dispute.funds_withdrawn`` (the amount and the dispute fee leave the balance).
The merchant answers (``POST /v1/disputes/{id}`` with evidence: ``under_review``) or accepts (``POST
/v1/disputes/{id}/close``: ``lost``). The bank's decision comes days later; here the control API
(``POST /_emulator/disputes/{id}/settle``) brings it: ``charge.dispute.updated`` (into review, if it was not yet)
then ``charge.dispute.closed`` with ``won`` (plus ``charge.dispute.funds_reinstated``) or ``lost``. As in Stripe's
test mode, evidence whose ``uncategorized_text`` is ``winning_evidence`` or ``losing_evidence`` decides the outcome.
"""

from __future__ import annotations

import copy
from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_bool,
    get_dict,
    get_str,
    paginate_kind,
)
from app.stripe_emulator.errors import invalid
from app.stripe_emulator.ids import new_id
from app.stripe_emulator.resources import balance_transactions

# Stripe's Canadian dispute fee (stripe.com/en-ca/pricing, 2026): C$15, kept by Stripe whatever the outcome.
DISPUTE_FEE = 1500
# The card networks' reason codes Stripe reports for its test disputes (Visa 10.4: fraud, card absent; 13.1: not
# received).
NETWORK_REASON_CODES = {"fraudulent": "10.4", "product_not_received": "13.1"}
EVIDENCE_DAYS = 7  # Stripe's test disputes are due about a week out, at the end of a UTC day like the fixture's
OPEN_STATUSES = ("needs_response", "warning_needs_response")
CLOSED_STATUSES = ("won", "lost", "warning_closed", "prevented")

EVIDENCE_FIELDS = (
    "access_activity_log",
    "billing_address",
    "cancellation_policy",
    "cancellation_policy_disclosure",
    "cancellation_rebuttal",
    "customer_communication",
    "customer_email_address",
    "customer_name",
    "customer_purchase_ip",
    "customer_signature",
    "duplicate_charge_documentation",
    "duplicate_charge_explanation",
    "duplicate_charge_id",
    "product_description",
    "receipt",
    "refund_policy",
    "refund_policy_disclosure",
    "refund_refusal_explanation",
    "service_date",
    "service_documentation",
    "shipping_address",
    "shipping_carrier",
    "shipping_date",
    "shipping_documentation",
    "shipping_tracking_number",
    "uncategorized_file",
    "uncategorized_text",
)
# Stripe's test-mode evidence that decides the bank's answer.
TEST_OUTCOMES = {"winning_evidence": "won", "losing_evidence": "lost"}


def _balance(ctx: Ctx, dispute: dict[str, Any], amount: int, fee: int, description: str) -> dict[str, Any]:
    txn = balance_transactions.record(
        ctx,
        new_id("txn"),
        source=dispute["id"],
        amount=amount,
        currency=dispute["currency"],
        kind="adjustment",
        fee=fee,
        description=description,
    )
    txn["reporting_category"] = "dispute" if amount < 0 else "dispute_reversal"
    if fee:
        txn["fee_details"][0]["description"] = "Dispute fee"
    return txn


def open_dispute(ctx: Ctx, charge: dict[str, Any], reason: str, *, created: int | None = None) -> dict[str, Any]:
    """The cardholder's bank disputes ``charge`` in full (what Stripe does moments after a 0259 payment)."""
    now = created if created is not None else ctx.now
    card = charge["payment_method_details"]["card"]
    dispute: dict[str, Any] = {
        "id": new_id("dp"),
        "object": "dispute",
        "amount": charge["amount"],
        "balance_transactions": [],
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "enhanced_eligibility_types": [],
        "evidence": {**dict.fromkeys(EVIDENCE_FIELDS), "enhanced_evidence": {}},
        "evidence_details": {
            "due_by": (now // 86_400 + EVIDENCE_DAYS + 1) * 86_400 - 1,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        # A chargeback (not an inquiry) cannot be refunded any more: the bank has the money back already.
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "payment_method_details": {
            "card": {
                "brand": card["brand"],
                "case_type": "chargeback",
                "network_reason_code": NETWORK_REASON_CODES.get(reason, "10.4"),
                "network": card["network"],
            },
            "type": "card",
        },
        "reason": reason,
        "status": "needs_response",
    }
    ctx.state.put(dispute)
    dispute["balance_transactions"] = [
        _balance(ctx, dispute, -dispute["amount"], DISPUTE_FEE, f"Chargeback withdrawal for {charge['id']}")
    ]
    charge["disputed"] = True
    ctx.emit("charge.dispute.created", dispute, created=created, automatic=True)
    ctx.emit("charge.dispute.funds_withdrawn", dispute, created=created, automatic=True)
    return dispute


def settle_dispute(ctx: Ctx, dispute_id: str, outcome: str | None) -> dict[str, Any]:
    """The bank's decision: ``won`` or ``lost`` (default: what test evidence asked for, else ``won``)."""
    dispute = ctx.state.get("dispute", dispute_id, "dispute")
    if dispute["status"] in CLOSED_STATUSES:
        raise invalid(f"Dispute {dispute_id} is already closed ({dispute['status']}).", "dispute")
    hidden = ctx.state.hidden(dispute_id)
    outcome = outcome or hidden.pop("settles_to", None) or "won"
    if outcome not in ("won", "lost"):
        raise invalid("outcome must be won or lost", "outcome")
    if dispute["status"] in OPEN_STATUSES:
        # The merchant answered before the bank decided: the dispute went through review first.
        before = {"status": dispute["status"]}
        dispute["status"] = "under_review"
        ctx.emit("charge.dispute.updated", dispute, before, automatic=True)
    before = {"status": dispute["status"]}
    dispute["status"] = outcome
    if outcome == "won":
        # The money comes back; the dispute fee does not (Stripe keeps it).
        dispute["balance_transactions"].append(
            _balance(ctx, dispute, dispute["amount"], 0, f"Chargeback reversal for {dispute['charge']}")
        )
        ctx.emit("charge.dispute.closed", dispute, before, automatic=True)
        ctx.emit("charge.dispute.funds_reinstated", dispute, automatic=True)
    else:
        ctx.emit("charge.dispute.closed", dispute, before, automatic=True)
    return dispute


@route("GET", "/v1/disputes/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("dispute", ctx.args["id"], "dispute"))


@route("POST", "/v1/disputes/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    """Add evidence (submitted at once unless ``submit=false``) or metadata."""
    check_params(ctx.params, ("evidence", "metadata", "submit", "expand"), {"evidence": (*EVIDENCE_FIELDS,)})
    dispute = ctx.state.get("dispute", ctx.args["id"], "dispute")
    evidence = get_dict(ctx.params, "evidence")
    submit = get_bool(ctx.params, "submit")
    before = copy.deepcopy(dispute)
    if (evidence is not None or submit) and dispute["status"] not in OPEN_STATUSES:
        raise invalid(f"This dispute is in status {dispute['status']} and cannot be updated with evidence.", "evidence")
    for name, value in (evidence or {}).items():
        if not isinstance(value, str):
            raise invalid(f"Invalid string: evidence[{name}]", f"evidence[{name}]")
        dispute["evidence"][name] = value or None
    if evidence:
        dispute["evidence_details"]["has_evidence"] = any(
            v for k, v in dispute["evidence"].items() if k != "enhanced_evidence"
        )
        decided = TEST_OUTCOMES.get(str(dispute["evidence"].get("uncategorized_text") or ""))
        if decided:
            ctx.state.hidden(dispute["id"])["settles_to"] = decided
    # Stripe submits evidence straight away unless told ``submit=false``.
    if (evidence is not None and submit is not False) or submit:
        dispute["evidence_details"]["submission_count"] += 1
        dispute["status"] = "under_review" if dispute["status"] == "needs_response" else "warning_under_review"
    dispute["metadata"] = apply_metadata(dispute["metadata"], ctx.params)
    changed = diff(before, dispute)
    if changed:
        ctx.emit("charge.dispute.updated", dispute, changed)
    return ctx.render(dispute)


@route("POST", "/v1/disputes/{id}/close")
def close(ctx: Ctx) -> dict[str, Any]:
    """The merchant accepts the dispute: it is lost at once."""
    check_params(ctx.params, ("expand",))
    dispute = ctx.state.get("dispute", ctx.args["id"], "dispute")
    if dispute["status"] in CLOSED_STATUSES:
        raise invalid(f"This dispute is already closed ({dispute['status']}).", "dispute")
    before = {"status": dispute["status"]}
    dispute["status"] = "lost" if dispute["status"] in ("needs_response", "under_review") else "warning_closed"
    ctx.emit("charge.dispute.closed", dispute, before)
    return ctx.render(dispute)


@route("GET", "/v1/disputes")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "charge", "payment_intent", "created"))
    charge = get_str(ctx.params, "charge")
    pi = get_str(ctx.params, "payment_intent")
    in_range = created_filter(ctx.params)

    def wanted(d: dict[str, Any]) -> bool:
        return bool(
            (charge is None or d["charge"] == charge)
            and (pi is None or d["payment_intent"] == pi)
            and in_range(d["created"])
        )

    page = paginate_kind(ctx.state, "dispute", wanted, ctx.params, "/v1/disputes")
    page["data"] = [ctx.render(d, list_mode=True) for d in page["data"]]
    return page
