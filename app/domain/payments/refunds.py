"""Creating refunds in Stripe. Our records follow from the ``charge.refunded``/``refund.*`` webhooks, not from here."""

from __future__ import annotations

from typing import Any

import stripe

from app.lib.stripe_gateway import idempotency_key

STRIPE_REASONS = ("requested_by_customer", "duplicate", "fraudulent")


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
