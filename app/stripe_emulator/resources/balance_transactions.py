"""Balance transactions: what each charge and refund did to the balance, with Stripe's fee.

Fees follow Stripe's published standard pricing for Canada (stripe.com/en-ca/pricing, as of 2026): 2.9 % + C$0.30
per successful domestic card charge, rounded to the cent. Stripe keeps the fee when a charge is refunded, so a
refund's transaction has no fee of its own. (International cards and currency conversion cost more at Stripe; the
emulator's test cards are all domestic.)
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.stripe_emulator.api import Ctx, route
from app.stripe_emulator.dialect import LIST_PARAMS, check_params, created_filter, get_str, paginate_kind

CARD_FEE_RATE = Decimal("0.029")
CARD_FEE_FIXED = 30  # cents
AVAILABLE_AFTER = 2 * 86_400  # Canadian payouts: funds available two business days later


def card_fee(amount: int) -> int:
    return int((Decimal(amount) * CARD_FEE_RATE).quantize(Decimal(1), rounding=ROUND_HALF_UP)) + CARD_FEE_FIXED


def record(
    ctx: Ctx, txn_id: str, *, source: str, amount: int, currency: str, kind: str, fee: int, description: str | None
) -> dict[str, Any]:
    """Store the balance transaction ``txn_id`` (the id its charge or refund already names)."""
    fee_details = [
        {"amount": fee, "application": None, "currency": currency, "description": "Stripe processing fees",
         "type": "stripe_fee"}
    ] if fee else []  # fmt: skip
    return ctx.state.put(
        {
            "id": txn_id,
            "object": "balance_transaction",
            "amount": amount,
            "available_on": ctx.now + AVAILABLE_AFTER,
            "balance_type": "payments",
            "created": ctx.now,
            "currency": currency,
            "description": description,
            "exchange_rate": None,
            "fee": fee,
            "fee_details": fee_details,
            "net": amount - fee,
            "reporting_category": kind,
            "source": source,
            "status": "pending",
            "type": kind,
        }
    )


@route("GET", "/v1/balance_transactions/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("balance_transaction", ctx.args["id"]))


@route("GET", "/v1/balance_transactions")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "source", "type", "created", "currency", "payout"))
    source = get_str(ctx.params, "source")
    kind = get_str(ctx.params, "type")
    in_range = created_filter(ctx.params)

    def wanted(t: dict[str, Any]) -> bool:
        return bool(
            (source is None or t["source"] == source) and (kind is None or t["type"] == kind) and in_range(t["created"])
        )

    page = paginate_kind(ctx.state, "balance_transaction", wanted, ctx.params, "/v1/balance_transactions")
    page["data"] = [ctx.render(t, list_mode=True) for t in page["data"]]
    return page
