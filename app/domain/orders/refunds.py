"""Creating refunds in Stripe. Our records follow from the ``charge.refunded``/``refund.*`` webhooks, not from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import stripe

from app.lib.forms import FormReader
from app.lib.money import format_money
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
    read = FormReader(form)
    amount = read.money(
        "amount", currency, "Enter an amount such as 12.50.", positive="Enter an amount greater than zero."
    )
    if not read.raw("amount"):
        amount = refundable  # blank: all that is left
    elif amount is not None and amount > refundable:
        read.error("amount", too_much.format(limit=format_money(refundable, currency)))
    reason = read.text(
        "reason",
        required=f"Say why the {what} is refunded (kept {kept_in}).",
        max_length=(500, "Keep the reason under 500 characters."),
    )
    stripe_reason = read.raw("stripe_reason") or STRIPE_REASONS[0]
    if stripe_reason not in STRIPE_REASONS:
        read.error("stripe_reason", "Choose one of the listed reasons.")
    token = read.form_token(f"This form has expired: check the {page} and try again.")
    read.done()
    assert amount is not None
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
