"""Stripe's subscription and invoice events: mirror them, allocate credits for paid cycles, warn on failures.

Each handler re-reads the object from Stripe, so duplicates and any order of arrival converge to Stripe's state.
"""

from __future__ import annotations

from typing import Any

import stripe
from sqlalchemy import select

from app.db import models as m
from app.domain.credits.services import CreditService
from app.domain.notifications.services import EmailService, claim_notice
from app.domain.subscriptions.mirror import ts
from app.domain.subscriptions.services import SubscriptionService
from app.lib.handler_context import HandlerContext
from app.lib.stripe_gateway import as_dict, stripe_id

CREDIT_REASONS = frozenset({"subscription_create", "subscription_cycle"})


async def on_subscription_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    obj = event["data"]["object"]
    try:
        remote = as_dict(await ctx.stripe.v1.subscriptions.retrieve_async(obj["id"]))
    except stripe.InvalidRequestError:
        remote = obj  # deleted long ago at Stripe: the event's copy is all there is
    sub = await SubscriptionService(ctx.db, ctx.stripe, ctx.queue).mirror.subscription(
        remote, event_created=int(event.get("created") or 0)
    )
    if event.get("type") == "customer.subscription.paused" and sub is not None and sub.status == "paused":
        await _paused_notice(ctx, sub, event_id=str(event.get("id") or ""))


async def _paused_notice(ctx: HandlerContext, sub: m.Subscription, *, event_id: str) -> None:
    """A trial ended without a card (``missing_payment_method=pause``): tell the member how to resume, once."""
    user = await ctx.db.get(m.User, sub.user_id)
    if user is None or not await claim_notice(ctx.db, f"subscription-paused:{event_id}", "membership_paused"):
        await ctx.db.rollback()
        return
    mailer = EmailService(ctx.db, ctx.queue)
    email = mailer.stage(
        "membership_paused",
        user.email,
        {
            "name": user.display_name,
            "plan_name": sub.plan.name if sub.plan else "your plan",
            "manage_url": f"{ctx.settings.base_url}/account/subscription",
        },
    )
    await ctx.db.commit()
    await mailer.dispatch([email])


async def mirror_invoice_and_credit(
    service: SubscriptionService, remote: dict[str, Any], *, event_created: int = 0
) -> tuple[m.Invoice | None, m.Subscription | None]:
    """Mirror one invoice as Stripe reports it and, for a paid cycle, allocate the plan's credits (once per
    invoice). Does not commit; after the commit the caller calls ``service.mirror.announce_metrics()``. The webhook and
    the full re-sync (app/domain/sync) both go through here: one copy of the rule."""
    db = service.db
    invoice = await service.mirror.invoice(remote, event_created=event_created)
    if invoice is None or invoice.subscription_id is None:
        return invoice, None
    sub = await db.get(m.Subscription, invoice.subscription_id)
    assert sub is not None
    if invoice.status == "paid" and invoice.billing_reason in CREDIT_REASONS and sub.plan_id is not None:
        plan = await db.scalar(select(m.Plan).where(m.Plan.id == sub.plan_id))
        if plan is not None:
            lines = (remote.get("lines") or {}).get("data") or [{}]
            period = lines[0].get("period") or {}
            # Stripe's clock, not ours: the cycle that starts now ends the previous one's credits (test clocks too).
            await CreditService(db).allocate_for_invoice(
                user_id=sub.user_id,
                plan=plan,
                invoice_id=invoice.stripe_invoice_id,
                period_end=ts(period.get("end")) or sub.current_period_end,
                now=ts(period.get("start")),
            )
    return invoice, sub


async def on_invoice_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    obj = event["data"]["object"]
    remote = as_dict(await ctx.stripe.v1.invoices.retrieve_async(obj["id"]))
    service = SubscriptionService(ctx.db, ctx.stripe, ctx.queue)
    invoice, sub = await mirror_invoice_and_credit(service, remote, event_created=int(event.get("created") or 0))
    if invoice is None or sub is None:
        await ctx.db.commit()
        await service.mirror.announce_metrics()
        return
    user = await ctx.db.get(m.User, sub.user_id)
    mailer = EmailService(ctx.db, ctx.queue)
    emails: list[m.EmailMessage] = []
    attempt = int(remote.get("attempt_count") or 0)
    if (
        event["type"] == "invoice.payment_action_required"
        and user is not None
        and invoice.status == "open"
        and await claim_notice(ctx.db, f"invoice-action:{invoice.stripe_invoice_id}:{attempt}", "invoice_action")
    ):
        # The bank wants 3-D Secure for an off-session renewal: only the customer can confirm it, on Stripe's
        # hosted invoice page (our plan page is the fallback: its card form confirms as well).
        emails.append(
            mailer.stage(
                "payment_action_required",
                user.email,
                {
                    "name": user.display_name,
                    "invoice": invoice,
                    "plan_name": sub.plan.name if sub.plan else "your plan",
                    "pay_url": invoice.hosted_invoice_url or f"{ctx.settings.base_url}/account/subscription",
                },
            )
        )
    if (
        event["type"] == "invoice.payment_failed"
        and user is not None
        and not await _waits_for_authentication(ctx, invoice.stripe_invoice_id)
    ):
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
    await service.mirror.announce_metrics()
    # The invoice's outcome moves the subscription (active, past_due, unpaid): mirror that too.
    await on_subscription_event(ctx, {"data": {"object": {"id": sub.stripe_subscription_id}}, "created": 0})


async def _waits_for_authentication(ctx: HandlerContext, invoice_id: str) -> bool:
    """Whether the failed attempt wants the customer's bank to confirm it (3-D Secure) rather than a new card:
    then ``invoice.payment_action_required`` sends the one email that helps, and "update your card" would mislead."""
    expanded = as_dict(await ctx.stripe.v1.invoices.retrieve_async(invoice_id, params={"expand": ["payments"]}))
    for payment in (expanded.get("payments") or {}).get("data") or []:
        intent_id = stripe_id((payment.get("payment") or {}).get("payment_intent"))
        if intent_id is None:
            continue
        intent = as_dict(await ctx.stripe.v1.payment_intents.retrieve_async(intent_id))
        error = intent.get("last_payment_error") or {}
        if "authentication_required" in (error.get("code"), error.get("decline_code")):
            return True
    return False


async def on_checkout_completed(ctx: HandlerContext, event: dict[str, Any]) -> None:
    """Hosted Checkout finished: mirror the subscription it created (the return page may never be reached)."""
    session = event["data"]["object"]
    subscription_id = session.get("subscription")
    if session.get("mode") == "subscription" and isinstance(subscription_id, str):
        await on_subscription_event(ctx, {"data": {"object": {"id": subscription_id}}, "created": 0})
