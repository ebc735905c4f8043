"""What an order's payment does to the seats it pays for (card bookings), called by fulfilment.

A card booking is a seat held (``pending_payment``) plus a pending order of one line; the hold and its release
are the bookings domain's (``app/domain/bookings/card_payments.py``). Here, by conditional UPDATEs on the
booking's status, so fulfilment, the release cron, a cancel and a refund may race and each booking still
changes state once:

* paid → ``UPDATE … SET status='confirmed' WHERE order_id=… AND status='pending_payment'``;
* paid after the hold was released (the customer's payment form was still open) → nothing to confirm, so the
  whole payment is refunded automatically (idempotency key ``booking-release-refund:{booking id}``);
* fully refunded (in Stripe's dashboard, or by a cancel) → confirmed card bookings of the order are cancelled and
  their seats freed.

It imports no other domain: bookings import it (``free_seat``, ``PAID_WITH_CARD``), never the reverse.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
