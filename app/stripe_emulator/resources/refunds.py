"""Refunds (full/partial) by payment intent or charge."""

from __future__ import annotations

from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.cards import lookup
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_enum,
    get_int,
    get_str,
    paginate,
    paginate_kind,
)
from app.stripe_emulator.errors import invalid
from app.stripe_emulator.ids import new_id
from app.stripe_emulator.resources import balance_transactions
from app.stripe_emulator.resources.payment_methods import card_number

REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# A chargeback's money is with the bank until the dispute is won.
_MONEY_WITH_BANK = ("needs_response", "under_review", "lost")


def _money(amount: int, currency: str) -> str:
    symbol = "$" if currency == "usd" else ""
    return f"{symbol}{amount / 100:.2f}"


def refund_charge(
    ctx: Ctx,
    charge: dict[str, Any],
    amount: int | None,
    reason: str | None,
    metadata: dict[str, str],
    *,
    automatic: bool = False,
) -> dict[str, Any]:
    if charge["status"] != "succeeded":
        raise invalid(f"Charge {charge['id']} has not succeeded and cannot be refunded.", "charge")
    if charge.get("disputed") and any(
        d["charge"] == charge["id"] and not d["is_charge_refundable"] and d["status"] in _MONEY_WITH_BANK
        for d in ctx.state.all("dispute")
    ):
        # A chargeback already took the money back: Stripe refuses to refund it a second time.
        raise invalid(
            f"Charge {charge['id']} has been charged back; cannot issue a refund.", "charge", "charge_disputed"
        )
    remaining = charge["amount"] - charge["amount_refunded"]
    if remaining <= 0:
        raise invalid(f"Charge {charge['id']} has already been refunded.", "charge", "charge_already_refunded")
    if amount is None:
        amount = remaining
    if amount <= 0:
        raise invalid("Invalid positive integer", "amount", "parameter_invalid_integer")
    if amount > remaining:
        raise invalid(
            f"Refund amount ({_money(amount, charge['currency'])}) is greater than unrefunded amount on charge "
            f"({_money(remaining, charge['currency'])})",
            "amount",
            "amount_too_large",
        )
    # Stripe's asynchronous refund test cards: 7726 starts `pending`, 5126 starts `succeeded` and fails later.
    card = lookup(card_number(ctx.state.private, str(charge.get("payment_method") or "")))
    refund: dict[str, Any] = {
        "id": new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "charge": charge["id"],
        "created": ctx.now,
        "currency": charge["currency"],
        "customer": charge["customer"],
        "customer_account": None,
        "destination_details": {
            "card": {"reference_status": "pending", "reference_type": "acquirer_reference_number", "type": "refund"},
            "type": "card",
        },
        "metadata": metadata,
        "payment_intent": charge["payment_intent"],
        "payment_method": charge["payment_method"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "pending" if card.refund == "pending" else "succeeded",
        "transfer_reversal": None,
    }
    ctx.state.put(refund)
    balance_transactions.record(  # Stripe keeps the charge's fee: the refund's transaction has none
        ctx,
        refund["balance_transaction"],
        source=refund["id"],
        amount=-amount,
        currency=refund["currency"],
        kind="refund",
        fee=0,
        description="REFUND FOR CHARGE",
    )
    if card.refund in {"pending", "fails"}:
        ctx.state.hidden(refund["id"])["settles_to"] = "succeeded" if card.refund == "pending" else "failed"
    before = {
        "amount_refunded": charge["amount_refunded"],
        "refunded": charge["refunded"],
        "refunds": dict(charge["refunds"]),
    }
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
    _list_refunds_on(ctx, charge)
    # Stripe emits charge.refunded together with the new refund object (card refunds succeed at once).
    ctx.emit("charge.refunded", charge, before, automatic=automatic)
    ctx.emit("refund.created", refund, automatic=automatic)
    return refund


def _list_refunds_on(ctx: Ctx, charge: dict[str, Any]) -> None:
    refunds = [r for r in ctx.state.all("refund") if r["charge"] == charge["id"]]
    charge["refunds"] = {
        "object": "list",
        "data": refunds[:10],
        "has_more": len(refunds) > 10,
        "url": f"/v1/charges/{charge['id']}/refunds",
    }


def settle_refund(ctx: Ctx, refund_id: str) -> dict[str, Any]:
    """The later step of an asynchronous test-card refund, as Stripe does it some time after creation.

    7726: ``pending`` → ``succeeded`` (``refund.updated``, ``charge.refund.updated``). 5126: ``succeeded`` →
    ``failed`` with a ``failure_reason``; the money is no longer refunded, so the charge's ``amount_refunded`` drops
    (``refund.updated``, ``refund.failed``, ``charge.refund.updated``).
    """
    refund = ctx.state.get("refund", refund_id, "refund")
    settles_to = ctx.state.hidden(refund_id).pop("settles_to", None)
    if settles_to is None:
        raise invalid(f"Refund {refund_id} has no pending transition.", "refund")
    before = {"status": refund["status"]}
    refund["status"] = settles_to
    if settles_to == "failed":
        refund["failure_reason"] = "expired_or_canceled_card"
        refund["failure_balance_transaction"] = new_id("txn")
        before.update(failure_reason=None, failure_balance_transaction=None)
        charge = ctx.state.get("charge", refund["charge"])
        charge["amount_refunded"] = max(charge["amount_refunded"] - refund["amount"], 0)
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        _list_refunds_on(ctx, charge)
    ctx.emit("refund.updated", refund, before, automatic=True)
    if settles_to == "failed":
        ctx.emit("refund.failed", refund, automatic=True)
    ctx.emit("charge.refund.updated", refund, before, automatic=True)
    return refund


@route("POST", "/v1/refunds")
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata",
            "expand",
            "refund_application_fee",
            "reverse_transfer",
            "instructions_email",
            "origin",
            "customer",
            "currency",
        ),
    )
    pi_id = get_str(ctx.params, "payment_intent")
    charge_id = get_str(ctx.params, "charge")
    if not pi_id and not charge_id:
        raise invalid(
            "One of the following params should be provided for this request: payment_intent or charge.",
            None,
            "parameter_missing",
        )
    if pi_id:
        pi = ctx.state.get("payment_intent", pi_id, "payment_intent")
        if pi["status"] != "succeeded" or not pi["latest_charge"]:
            raise invalid(
                f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
                "payment_intent",
                "charge_not_refundable",
            )
        charge = ctx.state.get("charge", pi["latest_charge"])
    else:
        charge = ctx.state.get("charge", charge_id or "", "charge")
    amount = get_int(ctx.params, "amount")
    reason = get_enum(ctx.params, "reason", REASONS)
    refund = refund_charge(ctx, charge, amount, reason, apply_metadata({}, ctx.params))
    return ctx.render(refund)


@route("GET", "/v1/refunds/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("refund", ctx.args["id"]))


@route("POST", "/v1/refunds/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("metadata", "expand"))
    refund = ctx.state.get("refund", ctx.args["id"])
    before = dict(refund)
    refund["metadata"] = apply_metadata(refund["metadata"], ctx.params)
    changed = diff(before, refund)
    if changed:
        ctx.emit("refund.updated", refund, changed)
    return ctx.render(refund)


@route("GET", "/v1/refunds")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "charge", "payment_intent", "created"))
    charge = get_str(ctx.params, "charge")
    pi = get_str(ctx.params, "payment_intent")
    in_range = created_filter(ctx.params)

    def wanted(r: dict[str, Any]) -> bool:
        return bool(
            (charge is None or r["charge"] == charge)
            and (pi is None or r["payment_intent"] == pi)
            and in_range(r["created"])
        )

    page = paginate_kind(ctx.state, "refund", wanted, ctx.params, "/v1/refunds")
    page["data"] = [ctx.render(r, list_mode=True) for r in page["data"]]
    return page


@route("GET", "/v1/charges/{id}/refunds")
def list_for_charge(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, LIST_PARAMS)
    ctx.state.get("charge", ctx.args["id"])
    items = [r for r in ctx.state.all("refund") if r["charge"] == ctx.args["id"]]
    page = paginate(items, ctx.params, f"/v1/charges/{ctx.args['id']}/refunds")
    page["data"] = [ctx.render(r, list_mode=True) for r in page["data"]]
    return page
