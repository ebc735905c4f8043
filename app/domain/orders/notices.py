"""Telling a customer their order is still unpaid after a payment failed and they left the page.

A decline shows on the payment page at once; an email for it would only be noise while the customer is still
there retrying. So a sweep looks for orders whose last payment attempt failed a while ago (``quiet``) and that
nothing has paid since, and emails each once (``sent_notices``), with the way back: the order's pay page for an
account, the shop for a guest (a guest's pay page only opens in the browser that placed the order).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.notifications.services import EmailService, claim_notice
from app.lib.money import format_money
from app.lib.settings import Settings

# Older failures are history: a deploy of this sweep must not email every abandoned order of the past.
LOOKBACK = timedelta(days=2)
BATCH = 50


async def notify_unpaid_orders(
    db: AsyncSession, mailer: EmailService, settings: Settings, *, now: datetime, quiet: timedelta
) -> int:
    """Email the customers of pending orders whose payment failed at least ``quiet`` ago. Returns emails sent."""
    rows = (
        await db.execute(
            select(m.Order, m.Payment)
            .join(m.Payment, m.Payment.order_id == m.Order.id)
            .where(
                m.Order.status == m.OrderStatus.PENDING.value,
                m.Payment.status == m.PaymentStatus.FAILED.value,
                m.Payment.updated_at <= now - quiet,
                m.Payment.updated_at >= now - LOOKBACK,
            )
            .order_by(m.Payment.updated_at)
            .limit(BATCH)
        )
    ).all()
    sent: list[m.EmailMessage] = []
    for order, payment in rows:
        if not await claim_notice(db, f"order-payment-failed:{order.id}", "order_payment_failed"):
            continue  # told already (or another sweep is telling them right now)
        user = await db.get(m.User, order.user_id) if order.user_id else None
        sent.append(
            mailer.stage(
                "order_payment_failed",
                order.email,
                {
                    "name": user.display_name if user else order.billing_name or "there",
                    "order_number": order.display_number,
                    "total": format_money(order.total, order.currency),
                    "reason": payment.failure_message.rstrip("."),
                    "pay_url": f"{settings.base_url}/orders/{order.id}/pay" if user else "",
                    "shop_url": settings.base_url,
                },
            )
        )
        db.add(m.OrderEvent(order_id=order.id, kind="unpaid_notice", message="Emailed the customer: payment failed."))
    await db.commit()
    await mailer.dispatch(sent)
    return len(sent)
