"""Booking slots with credits: seats taken by one conditional UPDATE, credits debited in the same transaction.

Times are UTC, and so are the days slots are grouped by (there is no shop time zone setting yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from uuid import UUID

import structlog
from sqlalchemy import CursorResult, exists, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.credits.services import CreditService, credit_label
from app.lib.exceptions import ApplicationError, ConflictError, NotFoundError

log = structlog.get_logger()

LIVE_STATUSES = [
    s.value for s in (m.SubscriptionStatus.ACTIVE, m.SubscriptionStatus.TRIALING, m.SubscriptionStatus.PAST_DUE)
]
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


@dataclass(frozen=True)
class ResourceDay:
    resource: m.BookableResource
    slots: list[SlotView]
    cost_label: str  # "1 meeting-room hour"; "" when the resource takes no credits
    balance: int | None  # the user's balance of the resource's credit type


@dataclass(frozen=True)
class Availability:
    day: date
    resources: list[ResourceDay]
    is_member: bool
    balances: list[tuple[m.CreditType, int]] = field(default_factory=list)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def cancel_deadline(slot: m.BookingSlot) -> datetime:
    return slot.starts_at - timedelta(hours=slot.resource.cancel_cutoff_hours)


class BookingService:
    """Availability, booking with credits and cancelling. ``book_with_credits`` and ``cancel`` commit."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db
        self.credits = CreditService(db)

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
        """The resource's slots starting on ``day`` (UTC), earliest first, with fresh seat counts."""
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
                select(exists().where(m.Subscription.user_id == user_id, m.Subscription.status.in_(LIVE_STATUSES)))
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
        balances = await self.credits.balances(user.id)
        by_type = {credit_type.id: balance for credit_type, balance in balances}
        days = []
        for resource in await self.resources():
            views = [
                SlotView(slot=s, seats_left=s.seats_left, is_mine=s.id in mine, has_started=s.starts_at <= current)
                for s in await self.slots(resource, day)
            ]
            credit_type = resource.credit_type
            days.append(
                ResourceDay(
                    resource=resource,
                    slots=views,
                    cost_label=credit_label(resource.credit_cost, credit_type) if credit_type else "",
                    balance=by_type.get(credit_type.id, 0) if credit_type else None,
                )
            )
        return Availability(day=day, resources=days, is_member=await self.is_member(user.id), balances=balances)

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
        if not await self.is_member(user.id):
            raise MembershipRequiredError
        if await self._has_booking(user.id, slot.id):  # a friendly answer; the check that counts comes below
            raise BookingError("You've already booked this time.")
        credit_type_id, cost, resource_name = resource.credit_type_id, resource.credit_cost, resource.name
        try:
            if self.db.get_bind().dialect.name == "postgresql":
                # One booking per member per slot: the same member's concurrent requests queue here.
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
                reason=f"Booked {resource_name}, {slot.starts_at:%a %d %b %Y %H:%M} UTC",
            )
            await self.db.commit()
        except Exception:
            await self.db.rollback()
            raise
        log.info("bookings.booked", booking_id=str(booking.id), slot_id=str(slot_id), user_id=str(user.id))
        return await self._fresh(booking.id)

    async def cancel(self, user: m.User, booking_id: UUID, *, now: datetime | None = None) -> m.Booking:
        """Cancel the user's booking before its cut-off: the seat is freed and the credits come back. Commits.

        Someone else's booking (or none) raises :class:`NotFoundError`; a cancelled one is returned as it is.
        """
        current = now or datetime.now(UTC)
        booking = await self.db.scalar(
            select(m.Booking).where(m.Booking.id == booking_id, m.Booking.user_id == user.id)
        )
        if booking is None:
            raise NotFoundError("We couldn't find that booking.")
        if booking.status == m.BookingStatus.CANCELED.value:
            return booking
        slot = booking.slot
        hours = slot.resource.cancel_cutoff_hours
        if current >= cancel_deadline(slot):
            raise BookingError(
                f"It's too late to cancel: bookings can be cancelled up to {hours} hours before they start."
            )
        try:
            canceled = await self.db.execute(
                update(m.Booking)
                .where(m.Booking.id == booking.id, m.Booking.status != m.BookingStatus.CANCELED.value)
                .values(status=m.BookingStatus.CANCELED.value, canceled_at=current)
                .execution_options(synchronize_session=False)
            )
            if cast("CursorResult[Any]", canceled).rowcount == 1:  # else a concurrent cancel already did it all
                await self.db.execute(
                    update(m.BookingSlot)
                    .where(m.BookingSlot.id == slot.id, m.BookingSlot.booked > 0)
                    .values(booked=m.BookingSlot.booked - 1)
                    .execution_options(synchronize_session=False)
                )
                type_id = booking.details.get("credit_type_id") or slot.resource.credit_type_id
                if booking.paid_with == PAID_WITH_CREDITS and booking.credits_spent > 0 and type_id:
                    await self.credits.refund(
                        user_id=user.id,
                        credit_type_id=UUID(str(type_id)),
                        amount=booking.credits_spent,
                        reference=str(booking.id),
                        reason=f"Cancelled {slot.resource.name}, {slot.starts_at:%a %d %b %Y %H:%M} UTC",
                    )
            await self.db.commit()
        except Exception:
            await self.db.rollback()
            raise
        log.info("bookings.canceled", booking_id=str(booking_id), user_id=str(user.id))
        return await self._fresh(booking_id)

    # --- internals ------------------------------------------------------------------------------------------------

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
