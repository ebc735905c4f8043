"""Creating refunds in Stripe. Our records follow from the ``charge.refunded``/``refund.*`` webhooks, not from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import InvalidOperation
from typing import Any

import stripe

from app.lib.exceptions import FormError
from app.lib.money import format_money, parse_money
from app.lib.stripe_gateway import idempotency_key

STRIPE_REASONS = ("requested_by_customer", "duplicate", "fraudulent")


@dataclass(frozen=True, slots=True)
class RefundForm:
    amount: int
    reason: str
    stripe_reason: str
    form_token: str


def parse_refund_form(
    form: Mapping[str, str], *, refundable: int, currency: str, too_much: str, kept_in: str, what: str, page: str
) -> RefundForm:
    """The staff refund form (an order's, a member's invoice's): an amount up to ``refundable`` (blank: all of
    it), a reason, Stripe's reason and the form's one-time token. Raises ``FormError`` with the fields' errors.

    ``too_much``: the error above ``refundable``; ``kept_in``: where the reason is kept; ``what``: what is refunded;
    ``page``: what to check again when the form has expired.
    """
    errors: dict[str, str] = {}
    amount = refundable
    raw = form.get("amount", "").strip()
    if raw:
        try:
            amount = parse_money(raw, currency)
        except (ValueError, InvalidOperation):
            errors["amount"] = "Enter an amount such as 12.50."
        else:
            if amount <= 0:
                errors["amount"] = "Enter an amount greater than zero."
            elif amount > refundable:
                errors["amount"] = too_much.format(limit=format_money(refundable, currency))
    reason = form.get("reason", "").strip()
    if not reason:
        errors["reason"] = f"Say why the {what} is refunded (kept {kept_in})."
    elif len(reason) > 500:
        errors["reason"] = "Keep the reason under 500 characters."
    stripe_reason = form.get("stripe_reason", "") or STRIPE_REASONS[0]
    if stripe_reason not in STRIPE_REASONS:
        errors["stripe_reason"] = "Choose one of the listed reasons."
    token = form.get("form_token", "")
    if not token or len(token) > 64:
        raise FormError(errors, f"This form has expired: check the {page} and try again.")
    if errors:
        raise FormError(errors)
    return RefundForm(amount=amount, reason=reason, stripe_reason=stripe_reason, form_token=token)


async def create_refund(
    client: stripe.StripeClient,
    *,
    payment_intent_id: str,
    amount: int,
    reason: str,
    metadata: dict[str, str],
    key_parts: tuple[object, ...],
) -> Any:
    """Ask Stripe to refund ``amount`` of the PaymentIntent; the same ``key_parts`` replay the first answer."""
    return await client.v1.refunds.create_async(
        {"payment_intent": payment_intent_id, "amount": amount, "reason": reason, "metadata": metadata},
        {"idempotency_key": idempotency_key("admin-refund", *key_parts)},
    )


async def refund_undelivered(
    client: stripe.StripeClient, *, payment_intent_id: str, amount: int, order_id: object
) -> Any:
    """Give back a payment the shop could not deliver. The key is the order and its PaymentIntent only: every retry
    of the fulfilment job (and the webhook that follows) replays the one refund Stripe made the first time."""
    return await client.v1.refunds.create_async(
        {
            "payment_intent": payment_intent_id,
            "amount": amount,
            "metadata": {"order_id": str(order_id), "cartwright": "undelivered"},
        },
        {"idempotency_key": idempotency_key("undelivered-refund", order_id, payment_intent_id)},
    )
