"""What a resource offers on a local day: its opening hours turned into slot rows, closures, the booking horizon.

Slots of a resource with opening hours are rows created the first time anyone looks at that day (or books in it),
one ``INSERT ... ON CONFLICT DO NOTHING`` per missing start time, so two first visitors at once create each slot
once (``uq_booking_slots_resource_start``). Seats are then taken on those rows exactly as before. A resource
without opening hours (seeded before #16) keeps the rows it has.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.bookings.schedule import from_json, slots_for_day
from app.lib.localtime import day_bounds, local_today, shop_zone


def offered_times(resource: m.BookableResource, day: date) -> list[tuple[datetime, datetime]]:
    """The ``(starts_at, ends_at)`` pairs the opening hours give on the local ``day`` (none if not scheduled)."""
    if not resource.is_scheduled:
        return []
    return slots_for_day(day, from_json(resource.opening_hours), resource.slot_minutes, shop_zone())


def last_bookable_day(resource: m.BookableResource, now: datetime) -> date:
    return local_today(now) + timedelta(days=resource.book_ahead_days)


async def closure_on(db: AsyncSession, resource_id: Any, day: date) -> m.ResourceClosure | None:
    """The resource's closure (or a shop-wide holiday) covering the local ``day``, if any."""
    closure: m.ResourceClosure | None = await db.scalar(
        select(m.ResourceClosure)
        .where(
            or_(m.ResourceClosure.resource_id == resource_id, m.ResourceClosure.resource_id.is_(None)),
            m.ResourceClosure.starts_on <= day,
            m.ResourceClosure.ends_on >= day,
        )
        .order_by(m.ResourceClosure.starts_on)
        .limit(1)
    )
    return closure


def closure_notice(resource: m.BookableResource, closure: m.ResourceClosure) -> str:
    reason = f": {closure.reason}" if closure.reason else ""
    return f"{resource.name} is closed on this day{reason}."


async def ensure_slots(db: AsyncSession, resource: m.BookableResource, day: date) -> int:
    """Create the missing slot rows of a scheduled resource's local ``day``. Never commits; returns rows created."""
    times = offered_times(resource, day)
    if not times:
        return 0
    start, end = day_bounds(day)
    existing = set(
        await db.scalars(
            select(m.BookingSlot.starts_at).where(
                m.BookingSlot.resource_id == resource.id,
                m.BookingSlot.starts_at >= start,
                m.BookingSlot.starts_at < end,
            )
        )
    )
    rows = [
        {"resource_id": resource.id, "starts_at": s, "ends_at": e, "capacity": resource.capacity, "booked": 0}
        for s, e in times
        if s not in existing
    ]
    if not rows:
        return 0
    insert = postgres_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(m.BookingSlot).on_conflict_do_nothing(index_elements=["resource_id", "starts_at"])
    await db.execute(stmt, rows)  # executemany: the id and timestamps get their Python defaults per row
    return len(rows)
