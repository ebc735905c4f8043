"""Every member's bookings in the back office (support and admin: subscriptions:read)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select

from app.db import models as m
from app.lib.tables import Column, Filter, Query, TableSpec, TableState

BOOKING_STATUS_LABELS = {"confirmed": "Confirmed", "canceled": "Cancelled", "pending_payment": "Awaiting payment"}

BOOKINGS_TABLE = TableSpec(
    dom_id="admin-bookings",
    noun="bookings",
    columns=(
        Column("when", "When (shop time)", m.BookingSlot.starts_at),
        Column("resource", "Resource", m.BookableResource.name),
        Column("member", "Member", m.User.email),
        Column("paid_with", "Paid with", m.Booking.paid_with),
        Column("status", "Status", m.Booking.status),
    ),
    default_sort="when",
    filters=(
        Filter("show", "When", (("upcoming", "Upcoming"), ("past", "Past")), "Any time"),
        Filter("status", "Status", tuple(BOOKING_STATUS_LABELS.items()), "Any status"),
        Filter("paid_with", "Paid with", (("credits", "Credits"), ("card", "Card")), "Credits or card"),
    ),
    search_label="Member email or resource",
    tiebreak=(m.Booking.id,),
)


def bookings_query(state: TableState) -> Query:
    stmt: Query = (
        select(m.Booking, m.User.email)
        .join(m.User, m.User.id == m.Booking.user_id)
        .join(m.BookingSlot, m.BookingSlot.id == m.Booking.slot_id)
        .join(m.BookableResource, m.BookableResource.id == m.BookingSlot.resource_id)
    )
    now = datetime.now(UTC)
    if state.filters.get("show") == "upcoming":
        stmt = stmt.where(m.BookingSlot.starts_at >= now)
    elif state.filters.get("show") == "past":
        stmt = stmt.where(m.BookingSlot.starts_at < now)
    if status := state.filters.get("status"):
        stmt = stmt.where(m.Booking.status == status)
    if paid_with := state.filters.get("paid_with"):
        stmt = stmt.where(m.Booking.paid_with == paid_with)
    if term := state.q:
        stmt = stmt.where(or_(m.User.email.ilike(f"%{term}%"), m.BookableResource.name.ilike(f"%{term}%")))
    return stmt


BOOKINGS_CSV_HEADER = ("starts_at", "ends_at", "resource", "member", "paid_with", "credits_spent", "status")


def booking_csv_row(row: Any) -> tuple[Any, ...]:
    booking, email = row
    return (
        booking.slot.starts_at.isoformat(),
        booking.slot.ends_at.isoformat(),
        booking.slot.resource.name,
        email,
        booking.paid_with,
        booking.credits_spent,
        booking.status,
    )
