"""Disputes (chargebacks): Stripe's dispute mirrored per order, and what it does to the order.

A dispute opens when the cardholder's bank takes the money back (``charge.dispute.created``). From then until the
bank decides, the order is flagged (``orders.dispute_status``), its downloads are suspended, and every admin is
emailed once with the evidence due date and the link to answer in Stripe's Dashboard. ``won`` gives the downloads
back; ``lost`` keeps them suspended and the lost amount counts in the analytics.

Like refunds, every dispute event re-reads the dispute from Stripe (an event body proves nothing and may be stale),
writes the mirror row with ``INSERT … ON CONFLICT`` on the Stripe id, and decides what changed under the order's row
lock (PostgreSQL) or the write lock (SQLite): duplicates, any order of arrival, the re-sync and the webhook job at the
same moment all end in one row, one timeline entry per change and one email per fact.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.domain.analytics.feed import announce
from app.domain.notifications.services import EmailService, claim_notice
from app.domain.orders.fulfilment import PaymentSync
from app.domain.settings.services import alert_recipients
from app.lib.handler_context import HandlerContext
from app.lib.money import format_money
from app.lib.stripe_gateway import as_dict, stripe_dashboard_url, stripe_id

log = structlog.get_logger()

# How far along a dispute is: Stripe's copy read earlier never moves ours backwards (a late retrieve of
# ``needs_response`` after another writer applied ``won``).
_STAGE = {
    "": -1,
    "warning_needs_response": 0,
    "needs_response": 0,
    "warning_under_review": 1,
    "under_review": 1,
    "won": 2,
    "lost": 2,
    "warning_closed": 2,
    "prevented": 2,
}


def _when(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


class DisputeSync:
    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.db: AsyncSession = ctx.db

    async def _order_for(self, dispute: dict[str, Any]) -> m.Order | None:
        """The order whose payment is disputed (by PaymentIntent, or by charge), row-locked on PostgreSQL."""
        intent_id = stripe_id(dispute.get("payment_intent"))
        stmt = select(m.Order)
        if intent_id:
            stmt = stmt.where(m.Order.payment_intent_id == intent_id)
        else:
            charge_id = stripe_id(dispute.get("charge"))
            stmt = stmt.join(m.Payment, m.Payment.order_id == m.Order.id).where(m.Payment.charge_id == charge_id)
        if self.db.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=m.Order, key_share=True)
        order: m.Order | None = await self.db.scalar(stmt.execution_options(populate_existing=True))
        return order

    async def refresh(self, dispute_id: str) -> m.Order | None:
        """Retrieve the dispute from Stripe and apply it. Commits."""
        return await self.apply(as_dict(await self.ctx.stripe.v1.disputes.retrieve_async(dispute_id)))

    async def apply(self, dispute: dict[str, Any]) -> m.Order | None:
        """Mirror Stripe's ``dispute`` and settle its order's flag, downloads, timeline and emails. Commits."""
        order = await self._order_for(dispute)
        if order is None:
            await self.db.rollback()
            log.info("dispute.not_ours", dispute=dispute.get("id"))
            return None
        intent_id = stripe_id(dispute.get("payment_intent"))
        if order.fulfilled_at is None and intent_id:
            # The dispute overtook the payment's own events (0259 disputes at once): settle the payment first.
            await self.db.rollback()
            await PaymentSync(self.ctx).refresh_payment_intent(intent_id)
            order = await self._order_for(dispute)
            if order is None:
                await self.db.rollback()
                return None
        await insert_if_absent(
            self.db,
            m.Dispute,
            "stripe_dispute_id",
            {
                "order_id": order.id,
                "stripe_dispute_id": dispute["id"],
                "charge_id": stripe_id(dispute.get("charge")) or "",
                "payment_intent_id": intent_id,
                "amount": int(dispute["amount"]),
                "currency": str(dispute["currency"]).upper(),
                "reason": str(dispute.get("reason") or ""),
                "status": "",  # applied below, where the change from "" is seen by exactly one writer
                "evidence_due_by": _when((dispute.get("evidence_details") or {}).get("due_by")),
                "opened_at": _when(dispute.get("created")) or datetime.now(UTC),
            },
        )
        row = await self.db.scalar(
            select(m.Dispute)
            .where(m.Dispute.stripe_dispute_id == dispute["id"])
            .execution_options(populate_existing=True)
        )
        assert row is not None
        await self.db.refresh(order)  # SQLite: the insert took the write lock; read what a writer before us committed
        before, status = row.status, str(dispute["status"])
        emails: list[m.EmailMessage] = []
        if _STAGE.get(status, 0) >= _STAGE.get(before, 0) and status != before:
            row.status = status
            row.amount = int(dispute["amount"])
            row.reason = str(dispute.get("reason") or "")
            row.evidence_due_by = _when((dispute.get("evidence_details") or {}).get("due_by"))
            if status in m.CLOSED_DISPUTE_STATUSES:
                row.closed_at = datetime.now(UTC)
            emails = await self._changed(order, row, before)
        await self._settle_order(order)
        await self.db.commit()
        await EmailService(self.db, self.ctx.queue).dispatch(emails)
        await announce(self.ctx.redis)  # the dashboard's dispute figures moved
        return order

    async def _changed(self, order: m.Order, row: m.Dispute, before: str) -> list[m.EmailMessage]:
        """Within the transaction, once per change of status: the timeline entry and the admins' email."""
        amount = format_money(row.amount, row.currency)
        if before == "":
            message = f"Payment disputed by the cardholder's bank: {amount}, reason {row.reason or 'unknown'}."
            self.db.add(m.OrderEvent(order_id=order.id, kind="dispute_opened", message=message))
            log.warning("order.disputed", order=str(order.id), dispute=row.stripe_dispute_id, status=row.status)
        if row.status == "won":
            message = f"Dispute won: {amount} returned to the shop; downloads restored."
            self.db.add(m.OrderEvent(order_id=order.id, kind="dispute_won", message=message))
        elif row.status == "lost":
            message = f"Dispute lost: {amount} went back to the cardholder; downloads stay suspended."
            self.db.add(m.OrderEvent(order_id=order.id, kind="dispute_lost", message=message))
        elif row.status in m.CLOSED_DISPUTE_STATUSES:
            self.db.add(m.OrderEvent(order_id=order.id, kind="dispute_closed", message=f"Dispute {row.status}."))
        elif before != "":
            message = f"Dispute {row.status.replace('_', ' ')}."
            self.db.add(m.OrderEvent(order_id=order.id, kind="dispute_updated", message=message))
        emails: list[m.EmailMessage] = []
        if before == "":
            emails += await self._admin_emails(order, row, opened=True)
        if row.status in m.CLOSED_DISPUTE_STATUSES:
            emails += await self._admin_emails(order, row, opened=False)
        return emails

    async def _admin_emails(self, order: m.Order, row: m.Dispute, *, opened: bool) -> list[m.EmailMessage]:
        """Every admin hears of a dispute when it opens and when it closes, once each (``sent_notices``)."""
        stage = "opened" if opened else "closed"
        if not await claim_notice(self.db, f"dispute-{stage}:{row.stripe_dispute_id}", f"dispute_{stage}"):
            return []
        base = self.ctx.settings.base_url
        context = {
            "order": order,
            "dispute": row,
            "opened": opened,
            "reason": m.Dispute.REASON_LABELS.get(row.reason, row.reason or "not given"),
            "admin_url": f"{base}/admin/orders/{order.id}",
            "stripe_url": stripe_dashboard_url(
                row.payment_intent_id or order.payment_intent_id or "", livemode=self.ctx.settings.stripe.livemode
            ),
        }
        mailer = EmailService(self.db, self.ctx.queue)
        return [mailer.stage("dispute_admin", address, context) for address in await alert_recipients(self.db)]

    async def _settle_order(self, order: m.Order) -> None:
        """The order's flag is its latest dispute's status; downloads are suspended while any dispute is open or
        lost, and given back when none is (idempotent: both updates touch only rows in the other state)."""
        rows = list(
            await self.db.scalars(
                select(m.Dispute)
                .where(m.Dispute.order_id == order.id, m.Dispute.status != "")
                .order_by(m.Dispute.opened_at, m.Dispute.id)
            )
        )
        if not rows:
            return
        order.dispute_status = rows[-1].status
        suspend = any(r.status in m.SUSPENDING_DISPUTE_STATUSES for r in rows)
        entitlements = m.Entitlement.order_id == order.id
        if suspend:
            await self.db.execute(
                update(m.Entitlement)
                .where(entitlements, m.Entitlement.suspended_at.is_(None))
                .values(suspended_at=datetime.now(UTC))
            )
        else:
            await self.db.execute(
                update(m.Entitlement)
                .where(entitlements, m.Entitlement.suspended_at.is_not(None))
                .values(suspended_at=None)
            )


async def on_dispute_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    """``charge.dispute.created/updated/closed`` (and the funds events): re-read the dispute and apply it."""
    dispute_id = stripe_id(event["data"]["object"].get("id"))
    if dispute_id:
        await DisputeSync(ctx).refresh(dispute_id)
