"""Booking slots with credits or by card: seats taken by one conditional UPDATE, paid in the same transaction.

With credits the booking is confirmed at once. By card the seat is *held* (``pending_payment``) with a pending order
of one line, and the existing checkout takes the payment; see :mod:`app.domain.bookings.card_payments` for what
payments, refunds and the release cron do to a held booking.

Times are stored in UTC; the days slots are grouped by are the shop's local days (``SHOP_TIME_ZONE``, see
:mod:`app.lib.localtime`): at 21:00 in Toronto it is already tomorrow in UTC, and the page still shows today.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import stripe
import structlog
from sqlalchemy import CursorResult, exists, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.bookings.calendar import closure_notice, closure_on, ensure_slots, last_bookable_day, offered_times
from app.domain.bookings.card_payments import release_hold
from app.domain.checkout.services import BillingDetails, CheckoutService
from app.domain.credits.services import CreditService, credit_label
from app.domain.orders.bookings import PAID_WITH_CARD, free_seat
from app.lib.exceptions import ApplicationError, ConflictError, NotFoundError, NotYoursError
from app.lib.localtime import day_bounds, format_local, local_day
from app.lib.stripe_gateway import idempotency_key

log = structlog.get_logger()

PAID_WITH_CREDITS = "credits"


class BookingError(ConflictError):
    """The booking or cancellation cannot happen (slot full, already booked, too late); ``message`` says why."""


class MembershipRequiredError(ApplicationError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__("Booking with credits is for members. Choose a plan to get credits every month.")


@dataclass(frozen=True)
class SlotView:
    slot: m.BookingSlot
    seats_left: int
    is_mine: bool  # the user holds a confirmed booking for it
    has_started: bool
    held_order_id: UUID | None = None  # the user's unpaid card hold on it: its order, to pay


@dataclass(frozen=True)
class ResourceDay:
    resource: m.BookableResource
    slots: list[SlotView]
    cost_label: str  # "1 meeting-room hour"; "" when the resource takes no credits
    balance: int | None  # the user's balance of the resource's credit type
    notice: str = ""  # why there is nothing to book this day: a closure, or beyond how far ahead one can book


@dataclass(frozen=True)
class Availability:
    day: date
    resources: list[ResourceDay]
    is_member: bool
    balances: list[tuple[m.CreditType, int]] = field(default_factory=list)


def slot_label(slot: m.BookingSlot) -> str:
    """``Meeting room A, Tue 03 Nov 2026 09:00 EST``: the ledger's and the messages' wording, in local time."""
    return f"{slot.resource.name}, {format_local(slot.starts_at)}"


def cancel_deadline(slot: m.BookingSlot) -> datetime:
    return slot.starts_at - timedelta(hours=slot.resource.cancel_cutoff_hours)


class BookingService:
    """Availability, booking with credits or by card, and cancelling. ``book_with_credits``, ``hold_for_card`` and
    ``cancel`` commit. The Stripe client is needed only to cancel (refund) a booking paid by card."""

    def __init__(self, db: AsyncSession, stripe_client: stripe.StripeClient | None = None) -> None:
        self.db = db
        self.credits = CreditService(db)
        self.stripe = stripe_client

    # --- reading --------------------------------------------------------------------------------------------------

    async def resources(self) -> list[m.BookableResource]:
        return list(
            await self.db.scalars(
                select(m.BookableResource)
                .where(m.BookableResource.is_active.is_(True))
                .order_by(m.BookableResource.name)
            )
        )

    async def slots(self, resource: m.BookableResource, day: date) -> list[m.BookingSlot]:
        """The resource's slots starting on the shop's local ``day``, earliest first, with fresh seat counts."""
        start, end = day_bounds(day)
        return list(
            await self.db.scalars(
                select(m.BookingSlot)
                .where(
                    m.BookingSlot.resource_id == resource.id,
                    m.BookingSlot.starts_at >= start,
                    m.BookingSlot.starts_at < end,
                )
                .order_by(m.BookingSlot.starts_at)
                .execution_options(populate_existing=True)
            )
        )

    async def slot(self, slot_id: UUID) -> m.BookingSlot:
        slot = await self.db.scalar(
            select(m.BookingSlot)
            .join(m.BookableResource, m.BookableResource.id == m.BookingSlot.resource_id)
            .where(m.BookingSlot.id == slot_id, m.BookableResource.is_active.is_(True))
        )
        if slot is None:
            raise NotFoundError("We couldn't find that time slot.")
        return slot

    async def is_member(self, user_id: UUID) -> bool:
        """A live subscription (active, trialing, or past due while Stripe retries the payment)."""
        return bool(
            await self.db.scalar(
                select(
                    exists().where(
                        m.Subscription.user_id == user_id, m.Subscription.status.in_(m.LIVE_SUBSCRIPTION_STATUSES)
                    )
                )
            )
        )

    async def availability(self, user: m.User, day: date, *, now: datetime | None = None) -> Availability:
        """Every active resource with its slots on ``day``, seats left, and the user's own bookings marked."""
        current = now or datetime.now(UTC)
        start, end = day_bounds(day)
        mine = set(
            await self.db.scalars(
                select(m.Booking.slot_id)
                .join(m.BookingSlot, m.BookingSlot.id == m.Booking.slot_id)
                .where(
                    m.Booking.user_id == user.id,
                    m.Booking.status == m.BookingStatus.CONFIRMED.value,
                    m.BookingSlot.starts_at >= start,
                    m.BookingSlot.starts_at < end,
                )
            )
        )
        held_rows = await self.db.execute(
            select(m.Booking.slot_id, m.Booking.order_id)
            .join(m.BookingSlot, m.BookingSlot.id == m.Booking.slot_id)
            .where(
                m.Booking.user_id == user.id,
                m.Booking.status == m.BookingStatus.PENDING_PAYMENT.value,
                m.BookingSlot.starts_at >= start,
                m.BookingSlot.starts_at < end,
            )
        )
        held: dict[UUID, UUID | None] = {row.slot_id: row.order_id for row in held_rows}
        balances = await self.credits.balances(user.id)
        by_type = {credit_type.id: balance for credit_type, balance in balances}
        resources = await self.resources()
        offers = await self._offers(resources, day, current)
        days = []
        for resource in resources:
            offered, notice = offers[resource.id]
            views = [
                SlotView(
                    slot=s,
                    seats_left=s.seats_left,
                    is_mine=s.id in mine,
                    has_started=s.starts_at <= current,
                    held_order_id=held.get(s.id),
                )
                for s in await self.slots(resource, day)
                # The customer's own bookings always show; other rows only while the resource offers them.
                if s.id in mine or s.id in held or (offered is None or (s.starts_at, s.ends_at) in offered)
            ]
            credit_type = resource.credit_type
            days.append(
                ResourceDay(
                    resource=resource,
                    slots=views,
                    cost_label=credit_label(resource.credit_cost, credit_type) if credit_type else "",
                    balance=by_type.get(credit_type.id, 0) if credit_type else None,
                    notice=notice,
                )
            )
        return Availability(day=day, resources=days, is_member=await self.is_member(user.id), balances=balances)

    async def _offers(
        self, resources: list[m.BookableResource], day: date, now: datetime
    ) -> dict[UUID, tuple[set[tuple[datetime, datetime]] | None, str]]:
        """Per resource: the slot times offered on ``day`` (None: every row it has) and a notice when none are.

        Creates the day's missing slot rows of scheduled resources on the way (and commits them)."""
        offers: dict[UUID, tuple[set[tuple[datetime, datetime]] | None, str]] = {}
        created = 0
        for resource in resources:
            closure = await closure_on(self.db, resource.id, day)
            if closure is not None:
                offers[resource.id] = (set(), closure_notice(resource, closure))
            elif day > last_bookable_day(resource, now):
                notice = f"{resource.name} can be booked up to {resource.book_ahead_days} days ahead."
                offers[resource.id] = (set(), notice)
            elif resource.is_scheduled:
                offers[resource.id] = (set(offered_times(resource, day)), "")
                created += await ensure_slots(self.db, resource, day)
            else:
                offers[resource.id] = (None, "")
        if created:
            await self.db.commit()
        return offers

    async def _check_offered(self, slot: m.BookingSlot, now: datetime) -> None:
        """Refuse a slot on a closed day, beyond the booking horizon, or no longer in the opening hours."""
        resource, day = slot.resource, local_day(slot.starts_at)
        closure = await closure_on(self.db, resource.id, day)
        if closure is not None:
            raise BookingError(closure_notice(resource, closure).replace("this day", f"{day:%a %d %b}"))
        if day > last_bookable_day(resource, now):
            raise BookingError(f"{resource.name} can be booked up to {resource.book_ahead_days} days ahead.")
        if resource.is_scheduled and (slot.starts_at, slot.ends_at) not in set(offered_times(resource, day)):
            raise BookingError("That time is no longer offered. Choose another one.")

    async def for_user(self, user: m.User, *, now: datetime | None = None) -> tuple[list[m.Booking], list[m.Booking]]:
        """The user's bookings: ``(upcoming soonest first, past most recent first)``; cancelled ones included."""
        current = now or datetime.now(UTC)
        bookings = list(
            await self.db.scalars(
                select(m.Booking)
                .join(m.BookingSlot, m.BookingSlot.id == m.Booking.slot_id)
                .where(m.Booking.user_id == user.id)
                .order_by(m.BookingSlot.starts_at, m.Booking.id)
                .execution_options(populate_existing=True)
            )
        )
        upcoming = [b for b in bookings if b.slot.ends_at > current]
        past = [b for b in reversed(bookings) if b.slot.ends_at <= current]
        return upcoming, past

    # --- booking and cancelling -----------------------------------------------------------------------------------

    async def book_with_credits(self, user: m.User, slot_id: UUID, *, now: datetime | None = None) -> m.Booking:
        """Take a seat and pay with credits, in one transaction. Commits; rolls everything back on any refusal.

        The seat is taken by ``UPDATE … SET booked = booked + 1 WHERE booked < capacity``: of many customers racing
        for the last seat exactly one gets a row back; the others get :class:`BookingError`. The credits are debited
        by :meth:`CreditService.spend` (reference: the booking id), which refuses to overdraw.
        """
        current = now or datetime.now(UTC)
        slot = await self.slot(slot_id)
        resource = slot.resource
        if resource.credit_type_id is None:
            raise BookingError(f"{resource.name} can't be booked with credits.")
        if slot.starts_at <= current:
            raise BookingError("That time has already started. Choose a later one.")
        await self._check_offered(slot, current)
        if not await self.is_member(user.id):
            raise MembershipRequiredError
        if await self._has_booking(user.id, slot.id):  # a friendly answer; the check that counts comes below
            raise BookingError("You've already booked this time.")
        credit_type_id, cost, label = resource.credit_type_id, resource.credit_cost, slot_label(slot)
        try:
            await self._take_seat(user, slot)
            booking = m.Booking(
                slot_id=slot.id,
                user_id=user.id,
                status=m.BookingStatus.CONFIRMED.value,
                paid_with=PAID_WITH_CREDITS,
                credits_spent=cost,
                details={"credit_type_id": str(credit_type_id)},
            )
            self.db.add(booking)
            await self.db.flush()
            await self.credits.spend(
                user_id=user.id,
                credit_type_id=credit_type_id,
                amount=cost,
                reference=str(booking.id),
                reason=f"Booked {label}",
            )
            await self.db.commit()
        except Exception:
            await self.db.rollback()
            raise
        log.info("bookings.booked", booking_id=str(booking.id), slot_id=str(slot_id), user_id=str(user.id))
        return await self._fresh(booking.id)

    async def hold_for_card(
        self, user: m.User, slot_id: UUID, billing: BillingDetails, *, now: datetime | None = None
    ) -> m.Booking:
        """Hold a seat for a card payment: the seat, a ``pending_payment`` booking and its pending order, in one
        transaction. Commits; the caller sends the customer to the order's pay page (``booking.order_id``).

        Members and non-members alike may pay by card. The seat is taken exactly as :meth:`book_with_credits` takes
        it; fulfilment confirms the booking, and the ``release_unpaid_bookings`` cron frees the seat if the payment
        has not come within 15 minutes. Asking again for a time already held (a double click, the back button)
        returns the existing hold, so its order is paid rather than a second one created.
        """
        current = now or datetime.now(UTC)
        slot = await self.slot(slot_id)
        resource = slot.resource
        if resource.price <= 0:
            raise BookingError(f"{resource.name} can't be paid for by card.")
        if slot.starts_at <= current:
            raise BookingError("That time has already started. Choose a later one.")
        await self._check_offered(slot, current)
        existing = await self._held(user.id, slot.id)
        if existing is not None:
            return existing
        if await self._has_booking(user.id, slot.id):
            raise BookingError("You've already booked this time.")
        try:
            await self._take_seat(user, slot)
            booking = m.Booking(
                slot_id=slot.id,
                user_id=user.id,
                status=m.BookingStatus.PENDING_PAYMENT.value,
                paid_with=PAID_WITH_CARD,
                details={"price": resource.price, "currency": resource.currency},
            )
            self.db.add(booking)
            await self.db.flush()
            checkout = CheckoutService(self.db, cast("stripe.StripeClient", self.stripe))  # no Stripe call here
            order = await checkout.place_booking_order(
                booking=booking, resource=resource, slot=slot, user=user, billing=billing
            )
            booking.order_id = order.id
            await self.db.commit()
        except Exception:
            await self.db.rollback()
            raise
        log.info("bookings.held", booking_id=str(booking.id), order_id=str(order.id), user_id=str(user.id))
        return await self._fresh(booking.id)

    async def cancel(self, user: m.User, booking_id: UUID, *, now: datetime | None = None) -> m.Booking:
        """Cancel the user's booking before its cut-off: the seat is freed and the credits come back. Commits.

        A booking paid by card is refunded in full through Stripe first (idempotency key ``booking-refund:{id}``);
        the refund's webhook then marks the order refunded and emails the notice. Should our own update fail after
        the refund, that webhook cancels the booking and frees the seat anyway. An unpaid card hold is simply
        released (no cut-off: nothing was paid). Someone else's booking (or none) raises :class:`NotFoundError`;
        a cancelled one is returned as it is.
        """
        current = now or datetime.now(UTC)
        booking = await self.db.get(m.Booking, booking_id)
        if booking is None:
            raise NotFoundError("We couldn't find that booking.")
        if booking.user_id != user.id:  # the same "not found", and an access_denied line for the log
            raise NotYoursError("We couldn't find that booking.", resource="booking", object_id=booking_id)
        if booking.status == m.BookingStatus.CANCELED.value:
            return booking
        slot = booking.slot
        hours = slot.resource.cancel_cutoff_hours
        if booking.status == m.BookingStatus.PENDING_PAYMENT.value:
            return await self._release(booking, current)
        if current >= cancel_deadline(slot):
            raise BookingError(
                f"It's too late to cancel: bookings can be cancelled up to {hours} hours before they start."
            )
        values: dict[str, Any] = {"status": m.BookingStatus.CANCELED.value, "canceled_at": current}
        if booking.paid_with == PAID_WITH_CARD and await self._refund_card_payment(booking):
            values["details"] = {**booking.details, "refund": "requested"}  # the page says a refund is on its way
        try:
            canceled = await self.db.execute(
                update(m.Booking)
                .where(m.Booking.id == booking.id, m.Booking.status != m.BookingStatus.CANCELED.value)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if cast("CursorResult[Any]", canceled).rowcount == 1:  # else a concurrent cancel already did it all
                await free_seat(self.db, slot.id)
                type_id = booking.details.get("credit_type_id") or slot.resource.credit_type_id
                if booking.paid_with == PAID_WITH_CREDITS and booking.credits_spent > 0 and type_id:
                    await self.credits.refund(
                        user_id=user.id,
                        credit_type_id=UUID(str(type_id)),
                        amount=booking.credits_spent,
                        reference=str(booking.id),
                        reason=f"Cancelled {slot_label(slot)}",
                    )
            await self.db.commit()
        except Exception:
            await self.db.rollback()
            raise
        log.info("bookings.canceled", booking_id=str(booking_id), user_id=str(user.id))
        return await self._fresh(booking_id)

    # --- internals ------------------------------------------------------------------------------------------------

    async def _take_seat(self, user: m.User, slot: m.BookingSlot) -> None:
        """Inside the caller's transaction: one seat of ``slot`` for ``user``, or :class:`BookingError`."""
        if self.db.get_bind().dialect.name == "postgresql":
            # One booking per customer per slot: the same customer's concurrent requests queue here.
            await self.db.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"cartwright:booking:{user.id}:{slot.id}"},
            )
        # The first write: on SQLite it also takes the database's write lock, serialising what follows.
        taken = await self.db.execute(
            update(m.BookingSlot)
            .where(m.BookingSlot.id == slot.id, m.BookingSlot.booked < m.BookingSlot.capacity)
            .values(booked=m.BookingSlot.booked + 1)
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", taken).rowcount != 1:
            raise BookingError("That time just filled up. Choose another one.")
        if await self._has_booking(user.id, slot.id):
            raise BookingError("You've already booked this time.")

    async def _held(self, user_id: UUID, slot_id: UUID) -> m.Booking | None:
        booking: m.Booking | None = await self.db.scalar(
            select(m.Booking).where(
                m.Booking.user_id == user_id,
                m.Booking.slot_id == slot_id,
                m.Booking.status == m.BookingStatus.PENDING_PAYMENT.value,
                m.Booking.order_id.is_not(None),
            )
        )
        return booking

    async def _release(self, booking: m.Booking, now: datetime) -> m.Booking:
        booking_id = booking.id
        try:
            reason = "Seat hold cancelled by the customer before paying."
            await release_hold(self.db, booking_id, reason=reason, now=now)
            await self.db.commit()
        except Exception:
            await self.db.rollback()
            raise
        log.info("bookings.hold_canceled", booking_id=str(booking_id))
        return await self._fresh(booking_id)

    async def _refund_card_payment(self, booking: m.Booking) -> bool:
        """Refund what is left of the booking's order, before the booking is touched (see :meth:`cancel`)."""
        order = await self.db.get(m.Order, booking.order_id) if booking.order_id else None
        if order is None or not order.payment_intent_id or not order.is_paid or order.refundable <= 0:
            return False
        if self.stripe is None:
            raise RuntimeError("BookingService needs a Stripe client to cancel a booking paid by card")
        try:
            await self.stripe.v1.refunds.create_async(
                {"payment_intent": order.payment_intent_id, "amount": order.refundable},
                # Derived from the booking: a double click or a retry never refunds twice.
                {"idempotency_key": idempotency_key("booking-refund", booking.id)},
            )
        except stripe.StripeError as exc:
            log.warning("bookings.refund_failed", booking_id=str(booking.id), error=str(exc))
            raise BookingError(
                "We couldn't reach the payment processor to refund you, so your booking still stands. "
                "Please try again in a moment."
            ) from exc
        return True

    async def _has_booking(self, user_id: UUID, slot_id: UUID) -> bool:
        return bool(
            await self.db.scalar(
                select(
                    exists().where(
                        m.Booking.user_id == user_id,
                        m.Booking.slot_id == slot_id,
                        m.Booking.status != m.BookingStatus.CANCELED.value,
                    )
                )
            )
        )

    async def _fresh(self, booking_id: UUID) -> m.Booking:
        booking = await self.db.scalar(
            select(m.Booking).where(m.Booking.id == booking_id).execution_options(populate_existing=True)
        )
        assert booking is not None
        return booking
