"""Refunds (full/partial) by payment intent or charge."""

from __future__ import annotations

from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
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

REASONS = ("duplicate", "fraudulent", "requested_by_customer")


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
        "status": "succeeded",
        "transfer_reversal": None,
    }
    ctx.state.put(refund)
    before = {
        "amount_refunded": charge["amount_refunded"],
        "refunded": charge["refunded"],
        "refunds": dict(charge["refunds"]),
    }
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
    refunds = [r for r in ctx.state.all("refund") if r["charge"] == charge["id"]]
    charge["refunds"] = {
        "object": "list",
        "data": refunds[:10],
        "has_more": len(refunds) > 10,
        "url": f"/v1/charges/{charge['id']}/refunds",
    }
    # Stripe emits charge.refunded together with the new refund object (card refunds succeed at once).
    ctx.emit("charge.refunded", charge, before, automatic=automatic)
    ctx.emit("refund.created", refund, automatic=automatic)
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
