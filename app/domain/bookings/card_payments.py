"""Bookings paid by card: the seat held for the payment, and releasing it when no payment comes.

A card booking is a seat held (``pending_payment``) plus a pending order of one line. Its state only moves by
conditional UPDATEs on the booking's status, so fulfilment, the release cron, a cancel and a refund may race and
each booking still changes state once:

* paid → ``UPDATE … SET status='confirmed' WHERE order_id=… AND status='pending_payment'`` (in fulfilment);
* not paid within :data:`HOLD_FOR` → ``pending_payment → canceled`` and the seat is freed (the cron);
* paid after the hold was released (the customer's payment form was still open) → nothing to confirm, so the
  whole payment is refunded automatically (idempotency key ``booking-release-refund:{booking id}``);
* fully refunded (in Stripe's dashboard, or by a cancel) → confirmed card bookings of the order are cancelled and
  their seats freed.

Here: the hold and its release. What a payment does to the booking (confirm it, refund a released one, cancel
on a full refund) is fulfilment's, in ``app/domain/orders/bookings.py``: orders never import bookings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import structlog
from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.orders.bookings import PAID_WITH_CARD, free_seat

log = structlog.get_logger()

HOLD_FOR = timedelta(minutes=15)  # how long an unpaid seat stays held for the customer's payment
# A payment Stripe is still working on may yet succeed: its hold is kept until the payment settles either way.
UNSETTLED_PAYMENTS = frozenset({m.PaymentStatus.PROCESSING.value, m.PaymentStatus.SUCCEEDED.value})

_PENDING = m.BookingStatus.PENDING_PAYMENT.value
_CANCELED = m.BookingStatus.CANCELED.value


def _rowcount(result: Any) -> int:
    return int(cast("CursorResult[Any]", result).rowcount)


async def release_hold(db: AsyncSession, booking_id: UUID, *, reason: str, now: datetime | None = None) -> bool:
    """Cancel one held (unpaid) booking, free its seat and cancel its still-unpaid order. Never commits.

    Returns whether this call released it (``False``: it was paid or cancelled meanwhile).
    """
    current = now or datetime.now(UTC)
    booking = await db.get(m.Booking, booking_id)
    if booking is None:
        return False
    slot_id, order_id = booking.slot_id, booking.order_id
    if order_id is not None:
        # Serialises with fulfilment, which locks the same row (PostgreSQL; SQLite serialises writers anyway).
        stmt = select(m.Order).where(m.Order.id == order_id)
        if db.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(key_share=True)
        order = await db.scalar(stmt.execution_options(populate_existing=True))
        if order is not None and order.fulfilled_at is not None:
            return False  # paid: fulfilment confirms it
    released = await db.execute(
        update(m.Booking)
        .where(m.Booking.id == booking_id, m.Booking.status == _PENDING)
        .values(status=_CANCELED, canceled_at=current)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(released) != 1:
        return False
    await free_seat(db, slot_id)
    if order_id is not None:
        await db.execute(
            update(m.Order)
            .where(
                m.Order.id == order_id,
                m.Order.fulfilled_at.is_(None),
                m.Order.status == m.OrderStatus.PENDING.value,
            )
            .values(status=m.OrderStatus.CANCELED.value, updated_at=current)
            .execution_options(synchronize_session=False)
        )
        db.add(m.OrderEvent(order_id=order_id, kind="canceled", message=reason))
    return True


async def release_unpaid_holds(db: AsyncSession, *, now: datetime | None = None) -> int:
    """Release card holds older than :data:`HOLD_FOR` whose payment has not gone through. Commits per booking."""
    current = now or datetime.now(UTC)
    unsettled = select(m.Payment.order_id).where(m.Payment.status.in_(UNSETTLED_PAYMENTS))
    ids = list(
        await db.scalars(
            select(m.Booking.id)
            .where(
                m.Booking.status == _PENDING,
                m.Booking.paid_with == PAID_WITH_CARD,
                m.Booking.created_at < current - HOLD_FOR,
                (m.Booking.order_id.is_(None)) | (m.Booking.order_id.not_in(unsettled)),
            )
            .order_by(m.Booking.created_at)
            .limit(500)
        )
    )
    released = 0
    minutes = int(HOLD_FOR.total_seconds() // 60)
    for booking_id in ids:
        try:
            if await release_hold(
                db, booking_id, reason=f"Seat hold released: not paid within {minutes} minutes.", now=current
            ):
                released += 1
            await db.commit()
        except Exception:
            await db.rollback()
            raise
    if released:
        log.info("bookings.holds_released", count=released)
    return released
