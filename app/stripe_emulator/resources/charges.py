"""Charges: created only by confirming intents; listed and retrieved through the API."""

from __future__ import annotations

import copy
from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.cards import DECLINE_MESSAGES, TestCard
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_str,
    paginate_kind,
)
from app.stripe_emulator.ids import new_id, random_token
from app.stripe_emulator.resources import balance_transactions


def build_charge(
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    pm: dict[str, Any],
    card: TestCard,
    succeeded: bool,
    payment_intent: str | None,
    customer: str | None,
    description: str | None,
    receipt_email: str | None,
    created: int | None = None,
) -> dict[str, Any]:
    charge_id = new_id("ch")
    decline = None if succeeded else (card.decline_code or "generic_decline")
    pm_card = pm["card"]
    charge: dict[str, Any] = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if succeeded else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": new_id("txn") if succeeded else None,
        "billing_details": copy.deepcopy(pm["billing_details"]),
        "calculated_statement_descriptor": "CARTWRIGHT",
        "captured": succeeded,
        "created": created if created is not None else ctx.now,
        "currency": currency,
        "customer": customer,
        "description": description,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None if succeeded else card.code,
        "failure_message": None if succeeded else DECLINE_MESSAGES.get(decline or "", "Your card was declined."),
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network" if succeeded else "declined_by_network",
            "reason": decline,
            "risk_level": "normal",
            "risk_score": 20,
            "seller_message": "Payment complete."
            if succeeded
            else "The bank did not return any further details with this decline.",
            "type": "authorized" if succeeded else "issuer_declined",
        },
        "paid": succeeded,
        "payment_intent": payment_intent,
        "payment_method": pm["id"],
        "payment_method_details": {
            "card": {
                "amount_authorized": amount if succeeded else None,
                "authorization_code": random_token(6).upper() if succeeded else None,
                "brand": pm_card["brand"],
                "checks": copy.deepcopy(pm_card["checks"]),
                "country": pm_card["country"],
                "exp_month": pm_card["exp_month"],
                "exp_year": pm_card["exp_year"],
                "extended_authorization": {"status": "disabled"},
                "fingerprint": pm_card["fingerprint"],
                "funding": pm_card["funding"],
                "incremental_authorization": {"status": "unavailable"},
                "installments": None,
                "last4": pm_card["last4"],
                "mandate": None,
                "multicapture": {"status": "unavailable"},
                "network": pm_card["brand"],
                "network_token": {"used": False},
                "network_transaction_id": random_token(15) if succeeded else None,
                "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
                "regulated_status": "unregulated",
                "three_d_secure": None,
                "wallet": None,
            },
            "type": "card",
        },
        "receipt_email": receipt_email,
        "receipt_number": None,
        "receipt_url": f"{ctx.base_url}/_emulator/receipts/{charge_id}",
        "refunded": False,
        "refunds": {"object": "list", "data": [], "has_more": False, "url": f"/v1/charges/{charge_id}/refunds"},
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded" if succeeded else "failed",
        "transfer_data": None,
        "transfer_group": None,
    }
    ctx.state.put(charge)
    if succeeded:
        balance_transactions.record(
            ctx,
            charge["balance_transaction"],
            source=charge["id"],
            amount=amount,
            currency=currency,
            kind="charge",
            fee=balance_transactions.card_fee(amount),
            description=description,
        )
    return charge


@route("GET", "/v1/charges/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("charge", ctx.args["id"]))


@route("POST", "/v1/charges/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        ("description", "metadata", "receipt_email", "expand", "shipping", "fraud_details", "transfer_group"),
    )
    charge = ctx.state.get("charge", ctx.args["id"])
    before = dict(charge)
    for key in ("description", "receipt_email"):
        if key in ctx.params:
            charge[key] = get_str(ctx.params, key)
    charge["metadata"] = apply_metadata(charge["metadata"], ctx.params)
    changed = diff(before, charge)
    if changed:
        ctx.emit("charge.updated", charge, changed)
    return ctx.render(charge)


@route("GET", "/v1/charges")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "customer", "payment_intent", "created", "transfer_group"))
    customer = get_str(ctx.params, "customer")
    pi = get_str(ctx.params, "payment_intent")
    in_range = created_filter(ctx.params)

    def wanted(c: dict[str, Any]) -> bool:
        return bool(
            (customer is None or c["customer"] == customer)
            and (pi is None or c["payment_intent"] == pi)
            and in_range(c["created"])
        )

    page = paginate_kind(ctx.state, "charge", wanted, ctx.params, "/v1/charges")
    page["data"] = [ctx.render(c, list_mode=True) for c in page["data"]]
    return page
