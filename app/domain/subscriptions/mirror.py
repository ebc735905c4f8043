"""What Stripe reports about subscriptions and their invoices, recorded here: ``SubscriptionMirror``.

The webhooks (app/domain/subscriptions/events.py), the re-sync and the customer's own commands (after each Stripe
call, ``SubscriptionService``) all write through it, so a subscription or invoice is mirrored one way whoever
saw it first: an idempotent upsert by the Stripe id, the row locked while it is updated, stale events ignored by
their ``created``, the membership-ended email claimed once, and the customer's MRR movements re-derived in the
same transaction (announced to open dashboards after the commit).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import stripe
import structlog
from saq import Queue
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.domain.analytics.feed import announce, movement_item, redis_of
from app.domain.analytics.movements import refresh_customer_metrics
from app.domain.notifications.services import EmailService
from app.domain.plans.tax_rates import invoice_taxes
from app.lib.stripe_gateway import as_dict, stripe_id

log = structlog.get_logger()

LIVE_STATUSES = m.LIVE_SUBSCRIPTION_STATUSES
ENDED_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired"})


def ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


class SubscriptionMirror:
    def __init__(self, db: AsyncSession, stripe_client: stripe.StripeClient, queue: Queue | None = None) -> None:
        self.db = db
        self.stripe = stripe_client
        self.queue = queue
        # Feed items of MRR movements derived in the open transaction, announced after its commit.
        self._pending_feed: list[dict[str, Any]] = []

    async def subscription(self, remote: dict[str, Any], *, event_created: int = 0) -> m.Subscription | None:
        """Create or update our row from Stripe's subscription object. Commits."""
        customer_id = stripe_id(remote.get("customer")) or ""
        stmt = select(m.Subscription).where(m.Subscription.stripe_subscription_id == remote["id"])
        if self.db.get_bind().dialect.name == "postgresql":
            # The page and a webhook at once: one sees the other. NO KEY: rows referencing this one (mrr_movements)
            # may still be inserted meanwhile, else a metrics rebuild holding its lock deadlocked with us.
            stmt = stmt.with_for_update(of=m.Subscription, key_share=True)
        sub: m.Subscription | None = await self.db.scalar(stmt)
        if sub is None:
            user = await self._user_for(remote, customer_id)
            if user is None:
                log.info("subscription.not_ours", subscription=remote["id"])
                return None
            # The page and a webhook may both find no row: the database keeps one, and both update that one.
            await insert_if_absent(
                self.db,
                m.Subscription,
                "stripe_subscription_id",
                {"user_id": user.id, "stripe_subscription_id": remote["id"], "stripe_customer_id": customer_id},
            )
            sub = await self.db.scalar(stmt.execution_options(populate_existing=True))
            assert sub is not None
        if event_created and event_created < sub.last_event_created:
            return sub  # an older event arriving late: we already hold newer state
        was_live = sub.status in LIVE_STATUSES
        if was_live and remote.get("status") == "incomplete":
            # A read taken before the first payment, applied late: a live subscription never goes back to that.
            return sub
        item = ((remote.get("items") or {}).get("data") or [{}])[0]
        price = item.get("price") or {}
        price_id = stripe_id(price) or ""
        sub.stripe_price_id = price_id
        plan_price = await self.db.scalar(select(m.PlanPrice).where(m.PlanPrice.stripe_price_id == price_id))
        if plan_price is not None:
            sub.plan_price_id = plan_price.id
            sub.plan_id = plan_price.plan_id
        sub.status = str(remote.get("status") or sub.status)
        sub.quantity = int(item.get("quantity") or 1)
        # Since API 2025-03-31 the billing period lives on the subscription items.
        sub.current_period_start = ts(item.get("current_period_start"))
        sub.current_period_end = ts(item.get("current_period_end"))
        sub.cancel_at_period_end = bool(remote.get("cancel_at_period_end"))
        sub.canceled_at = ts(remote.get("canceled_at"))
        sub.ended_at = ts(remote.get("ended_at"))
        sub.trial_end = ts(remote.get("trial_end"))
        sub.latest_invoice_id = stripe_id(remote.get("latest_invoice"))
        paused = remote.get("pause_collection") or {}
        sub.pause_collection = str(paused.get("behavior") or "")
        sub.pause_resumes_at = ts(paused.get("resumes_at"))
        if event_created:
            sub.last_event_created = max(sub.last_event_created, event_created)
        emails: list[m.EmailMessage] = []
        await self.db.flush()
        if was_live and sub.status in ENDED_STATUSES and await self._claim_ended_notice(sub):
            emails.append(await self._ended_email(sub))
        await self.derive_metrics(sub.user_id)
        await self.db.commit()
        await EmailService(self.db, self.queue).dispatch(emails)
        await self.announce_metrics()
        # The plan may have changed (a switch) or never been loaded (a new row): load it now, not lazily later.
        await self.db.refresh(sub, attribute_names=["plan", "price"])
        return sub

    async def _claim_ended_notice(self, sub: m.Subscription) -> bool:
        # The page and a webhook may both see the end at once (SQLite holds no row lock): one of them wins here.
        claimed = await self.db.execute(
            update(m.Subscription)
            .where(m.Subscription.id == sub.id, m.Subscription.ended_notified_at.is_(None))
            .values(ended_notified_at=datetime.now(UTC))
        )
        return getattr(claimed, "rowcount", 0) == 1

    async def _ended_email(self, sub: m.Subscription) -> m.EmailMessage:
        """Staged in the transaction that records the end: sent once, whichever path noticed it first."""
        user = await self.db.get(m.User, sub.user_id)
        assert user is not None
        plan = await self.db.get(m.Plan, sub.plan_id) if sub.plan_id else None
        return EmailService(self.db, self.queue).stage(
            "membership_ended",
            user.email,
            {
                "name": user.display_name,
                "plan_name": plan.name if plan else "Your plan",
                "unpaid": sub.status in {"unpaid", "incomplete_expired"},
            },
        )

    async def _user_for(self, remote: dict[str, Any], customer_id: str) -> m.User | None:
        user_id = (remote.get("metadata") or {}).get("user_id")
        if customer_id:
            user: m.User | None = await self.db.scalar(select(m.User).where(m.User.stripe_customer_id == customer_id))
            if user is not None:
                return user
        if user_id:
            try:
                return await self.db.get(m.User, user_id)
            except (ValueError, TypeError):
                return None
        return None

    async def invoice(self, remote: dict[str, Any], *, event_created: int = 0) -> m.Invoice | None:
        """Create or update our copy of a subscription invoice. Does not commit (the caller may add credits)."""
        subscription_id = stripe_id(
            ((remote.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        )
        subscription_id = subscription_id or stripe_id(remote.get("subscription"))
        if not subscription_id:
            return None  # not a subscription invoice
        sub = await self.db.scalar(
            select(m.Subscription).where(m.Subscription.stripe_subscription_id == subscription_id)
        )
        if sub is None:
            remote_sub = as_dict(await self.stripe.v1.subscriptions.retrieve_async(subscription_id))
            sub = await self.subscription(remote_sub)
            if sub is None:
                return None
        # The return page and the webhook mirror a first invoice at the same moment: the database keeps one row.
        await insert_if_absent(
            self.db,
            m.Invoice,
            "stripe_invoice_id",
            {
                "stripe_invoice_id": remote["id"],
                "status": str(remote.get("status") or "draft"),
                "user_id": sub.user_id,
                "subscription_id": sub.id,
                "last_event_created": 0,
            },
        )
        stmt = (
            select(m.Invoice)
            .where(m.Invoice.stripe_invoice_id == remote["id"])
            .execution_options(populate_existing=True)
        )
        if self.db.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(
                key_share=True
            )  # the other writer's update lands before or after ours, never inside
        invoice = await self.db.scalar(stmt)
        assert invoice is not None  # inserted above, by us or by the other writer
        if event_created and event_created < invoice.last_event_created:
            return invoice
        invoice.user_id = sub.user_id
        invoice.subscription_id = sub.id
        invoice.number = str(remote.get("number") or "")
        invoice.status = str(remote.get("status") or invoice.status)
        invoice.billing_reason = str(remote.get("billing_reason") or "")
        invoice.amount_due = int(remote.get("amount_due") or 0)
        invoice.amount_paid = int(remote.get("amount_paid") or 0)
        invoice.currency = str(remote.get("currency") or "cad").upper()
        invoice.hosted_invoice_url = str(remote.get("hosted_invoice_url") or "")
        invoice.invoice_pdf = str(remote.get("invoice_pdf") or "")
        invoice.period_start = ts(remote.get("period_start"))
        invoice.period_end = ts(remote.get("period_end"))
        invoice.attempt_count = int(remote.get("attempt_count") or 0)
        invoice.next_payment_attempt = ts(remote.get("next_payment_attempt"))
        invoice.stripe_created = ts(remote.get("created"))
        invoice.tax, invoice.tax_breakdown = await invoice_taxes(self.db, self.stripe, remote)
        if event_created:
            invoice.last_event_created = max(invoice.last_event_created, event_created)
        await self.db.flush()
        await self.derive_metrics(sub.user_id)  # the caller commits, then calls announce_metrics()
        return invoice

    async def derive_metrics(self, user_id: UUID) -> None:
        """Re-derive the customer's MRR movements in the open transaction (cheap: one customer's rows)."""
        moves = await refresh_customer_metrics(self.db, user_id)
        if moves:
            user = await self.db.get(m.User, user_id)
            email = user.email if user is not None else ""
            self._pending_feed.extend(
                movement_item(move.kind, move.mrr_delta, move.currency, email, move.occurred_at) for move in moves
            )

    async def announce_metrics(self) -> None:
        """After the commit: invalidate the cached dashboards and push the new movements to open ones."""
        items, self._pending_feed = self._pending_feed, []
        await announce(redis_of(self.queue), items)
