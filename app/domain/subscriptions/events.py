"""Stripe's subscription and invoice events: mirror them, allocate credits for paid cycles, warn on failures.

Each handler re-reads the object from Stripe, so duplicates and any order of arrival converge to Stripe's state.
"""

from __future__ import annotations

from typing import Any

import stripe
from sqlalchemy import select

from app.db import models as m
from app.domain.credits.services import CreditService
from app.domain.notifications.services import EmailService
from app.domain.payments.context import HandlerContext
from app.domain.payments.gateway import as_dict
from app.domain.subscriptions.services import SubscriptionService, ts

CREDIT_REASONS = frozenset({"subscription_create", "subscription_cycle"})


async def on_subscription_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    obj = event["data"]["object"]
    try:
        remote = as_dict(await ctx.stripe.v1.subscriptions.retrieve_async(obj["id"]))
    except stripe.InvalidRequestError:
        remote = obj  # deleted long ago at Stripe: the event's copy is all there is
    await SubscriptionService(ctx.db, ctx.stripe, ctx.queue).mirror_subscription(
        remote, event_created=int(event.get("created") or 0)
    )


async def on_invoice_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    obj = event["data"]["object"]
    remote = as_dict(await ctx.stripe.v1.invoices.retrieve_async(obj["id"]))
    service = SubscriptionService(ctx.db, ctx.stripe, ctx.queue)
    invoice = await service.mirror_invoice(remote, event_created=int(event.get("created") or 0))
    if invoice is None or invoice.subscription_id is None:
        await ctx.db.commit()
        await service.announce_metrics()
        return
    sub = await ctx.db.get(m.Subscription, invoice.subscription_id)
    assert sub is not None
    user = await ctx.db.get(m.User, sub.user_id)
    mailer = EmailService(ctx.db, ctx.queue)
    emails: list[m.EmailMessage] = []
    if invoice.status == "paid" and invoice.billing_reason in CREDIT_REASONS and sub.plan_id is not None:
        plan = await ctx.db.scalar(select(m.Plan).where(m.Plan.id == sub.plan_id))
        if plan is not None:
            lines = (remote.get("lines") or {}).get("data") or [{}]
            period = lines[0].get("period") or {}
            # Stripe's clock, not ours: the cycle that starts now ends the previous one's credits (test clocks too).
            await CreditService(ctx.db).allocate_for_invoice(
                user_id=sub.user_id,
                plan=plan,
                invoice_id=invoice.stripe_invoice_id,
                period_end=ts(period.get("end")) or sub.current_period_end,
                now=ts(period.get("start")),
            )
    if event["type"] == "invoice.payment_failed" and user is not None:
        emails.append(
            mailer.stage(
                "payment_failed",
                user.email,
                {
                    "name": user.display_name,
                    "invoice": invoice,
                    "plan_name": sub.plan.name if sub.plan else "your plan",
                    "manage_url": f"{ctx.settings.base_url}/account/subscription",
                },
            )
        )
    await ctx.db.commit()
    await mailer.dispatch(emails)
    await service.announce_metrics()
    # The invoice's outcome moves the subscription (active, past_due, unpaid): mirror that too.
    await on_subscription_event(ctx, {"data": {"object": {"id": sub.stripe_subscription_id}}, "created": 0})


async def on_checkout_completed(ctx: HandlerContext, event: dict[str, Any]) -> None:
    """Hosted Checkout finished: mirror the subscription it created (the return page may never be reached)."""
    session = event["data"]["object"]
    subscription_id = session.get("subscription")
    if session.get("mode") == "subscription" and isinstance(subscription_id, str):
        await on_subscription_event(ctx, {"data": {"object": {"id": subscription_id}}, "created": 0})
