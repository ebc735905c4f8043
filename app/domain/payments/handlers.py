"""Which Stripe events Cartwright acts on, and who acts. Every other type is stored as ``ignored``.

Handlers must be idempotent and order-independent: they may run twice, late, or after a newer event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.domain.disputes.services import on_dispute_event
from app.domain.orders import fulfilment
from app.domain.payments import fees
from app.domain.subscriptions import events as subscription_events
from app.lib.handler_context import HandlerContext

Handler = Callable[[HandlerContext, dict[str, Any]], Awaitable[None]]


HANDLERS: dict[str, Handler] = {
    "payment_intent.succeeded": fulfilment.on_payment_intent_event,
    "payment_intent.payment_failed": fulfilment.on_payment_intent_event,
    "payment_intent.processing": fulfilment.on_payment_intent_event,
    "payment_intent.requires_action": fulfilment.on_payment_intent_event,
    "payment_intent.canceled": fulfilment.on_payment_intent_event,
    "charge.succeeded": fees.on_charge_event,
    "charge.updated": fees.on_charge_event,
    "charge.refunded": fulfilment.on_refund_event,
    "charge.refund.updated": fulfilment.on_refund_event,
    "refund.created": fulfilment.on_refund_event,
    "refund.updated": fulfilment.on_refund_event,
    "refund.failed": fulfilment.on_refund_event,
    # Every dispute event re-reads the dispute: the funds events are handled so they are not stored as ignored.
    "charge.dispute.created": on_dispute_event,
    "charge.dispute.updated": on_dispute_event,
    "charge.dispute.closed": on_dispute_event,
    "charge.dispute.funds_withdrawn": on_dispute_event,
    "charge.dispute.funds_reinstated": on_dispute_event,
    "customer.subscription.created": subscription_events.on_subscription_event,
    "customer.subscription.updated": subscription_events.on_subscription_event,
    "customer.subscription.deleted": subscription_events.on_subscription_event,
    "customer.subscription.trial_will_end": subscription_events.on_subscription_event,
    "customer.subscription.paused": subscription_events.on_subscription_event,
    "customer.subscription.resumed": subscription_events.on_subscription_event,
    "checkout.session.completed": subscription_events.on_checkout_completed,
    "invoice.paid": subscription_events.on_invoice_event,
    "invoice.payment_failed": subscription_events.on_invoice_event,
    "invoice.payment_action_required": subscription_events.on_invoice_event,
    "invoice.finalized": subscription_events.on_invoice_event,
    "invoice.voided": subscription_events.on_invoice_event,
    "invoice.marked_uncollectible": subscription_events.on_invoice_event,
}


def is_handled(event_type: str) -> bool:
    return event_type in HANDLERS


async def dispatch(ctx: HandlerContext, event: dict[str, Any]) -> None:
    handler = HANDLERS.get(event["type"])
    if handler is not None:
        await handler(ctx, event)
