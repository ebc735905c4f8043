"""Bookings paid by card: what payments do to them (confirm, cancel on a full refund) and releasing unpaid holds.

A card booking is a seat held (``pending_payment``) plus a pending order of one line. Its state only moves by
conditional UPDATEs on the booking's status, so fulfilment, the release cron, a cancel and a refund may race and
each booking still changes state once:

* paid → ``UPDATE … SET status='confirmed' WHERE order_id=… AND status='pending_payment'`` (in fulfilment);
* not paid within :data:`HOLD_FOR` → ``pending_payment → canceled`` and the seat is freed (the cron);
* paid after the hold was released (the customer's payment form was still open) → nothing to confirm, so the
  whole payment is refunded automatically (idempotency key ``booking-release-refund:{booking id}``);
* fully refunded (in Stripe's dashboard, or by a cancel) → confirmed card bookings of the order are cancelled and
  their seats freed.

This module imports no other domain service: ``orders.fulfilment`` calls it, and ``checkout`` imports fulfilment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import stripe
import structlog
from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.lib.money import format_money
from app.lib.stripe_gateway import idempotency_key

log = structlog.get_logger()

PAID_WITH_CARD = "card"
HOLD_FOR = timedelta(minutes=15)  # how long an unpaid seat stays held for the customer's payment
# A payment Stripe is still working on may yet succeed: its hold is kept until the payment settles either way.
UNSETTLED_PAYMENTS = frozenset({m.PaymentStatus.PROCESSING.value, m.PaymentStatus.SUCCEEDED.value})

_PENDING = m.BookingStatus.PENDING_PAYMENT.value
_CONFIRMED = m.BookingStatus.CONFIRMED.value
_CANCELED = m.BookingStatus.CANCELED.value


def _rowcount(result: Any) -> int:
    return int(cast("CursorResult[Any]", result).rowcount)


async def free_seat(db: AsyncSession, slot_id: UUID) -> None:
    await db.execute(
        update(m.BookingSlot)
        .where(m.BookingSlot.id == slot_id, m.BookingSlot.booked > 0)
        .values(booked=m.BookingSlot.booked - 1)
        .execution_options(synchronize_session=False)
    )


async def confirm_paid_bookings(db: AsyncSession, stripe_client: stripe.StripeClient, order: m.Order) -> None:
    """Fulfilment hook (inside its transaction, once per order): confirm the order's held bookings.

    When the order has card bookings but none was still held (the cron released it, or the customer cancelled the
    hold, before the payment went through), the seat may be gone: the payment is refunded in full instead.
    """
    confirmed = await db.execute(
        update(m.Booking)
        .where(m.Booking.order_id == order.id, m.Booking.status == _PENDING)
        .values(status=_CONFIRMED)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(confirmed):
        log.info("bookings.paid", order=str(order.id))
        return
    released = await db.scalar(
        select(m.Booking)
        .where(m.Booking.order_id == order.id, m.Booking.paid_with == PAID_WITH_CARD, m.Booking.status == _CANCELED)
        .order_by(m.Booking.id)
        .limit(1)
    )
    if released is None or not order.payment_intent_id:
        return
    amount = format_money(order.total, order.currency)
    try:
        await stripe_client.v1.refunds.create_async(
            {"payment_intent": order.payment_intent_id, "amount": order.total},
            {"idempotency_key": idempotency_key("booking-release-refund", released.id)},
        )
    except stripe.StripeError as exc:
        # The order stays paid; support refunds by hand (the timeline says so), the customer is not left unpaid.
        log.error("bookings.release_refund_failed", order=str(order.id), booking=str(released.id), error=str(exc))
        message = f"Seat released before payment — refund of {amount} due (automatic refund failed: {exc})."
        db.add(m.OrderEvent(order_id=order.id, kind="refund_due", message=message))
        return
    log.warning("bookings.paid_after_release", order=str(order.id), booking=str(released.id))
    message = f"Seat released before payment — {amount} refunded automatically."
    db.add(m.OrderEvent(order_id=order.id, kind="booking_released", message=message))


async def cancel_refunded_bookings(db: AsyncSession, order: m.Order) -> int:
    """Refund hook (inside ``sync_refunds``' transaction): a fully refunded order's confirmed card bookings are
    cancelled and their seats freed. Returns how many; bookings already cancelled are left alone."""
    now = datetime.now(UTC)
    slot_ids = list(
        await db.scalars(
            update(m.Booking)
            .where(
                m.Booking.order_id == order.id,
                m.Booking.paid_with == PAID_WITH_CARD,
                m.Booking.status == _CONFIRMED,
            )
            .values(status=_CANCELED, canceled_at=now)
            .returning(m.Booking.slot_id)
            .execution_options(synchronize_session=False)
        )
    )
    for slot_id in slot_ids:  # only bookings that flipped here give their seat back
        await free_seat(db, slot_id)
    if slot_ids:
        db.add(m.OrderEvent(order_id=order.id, kind="booking_canceled", message="Booking cancelled: fully refunded."))
    return len(slot_ids)


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
