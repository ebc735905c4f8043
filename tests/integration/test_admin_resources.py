"""Rooms and desks in the back office (#16 item 2): create, edit, validation, permissions, closures, the
cancellation window, and what customers then see on the booking page (in the shop's local time)."""

from __future__ import annotations

import html
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import select

from app.db import models as m
from app.lib.localtime import format_local, local_today, shop_zone
from app.lib.runtime import Runtime
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of
from tests.integration.test_bookings import member
from tests.integration.test_credits import balance_of, credit_type


def visible(page: str) -> str:
    return html.unescape(text_of(page))


def next_weekday(weekday: int, *, after: int = 1) -> date:
    day = local_today() + timedelta(days=after)
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return day


def local(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=shop_zone()).astimezone(UTC)


def room_form(rooms: m.CreditType, **overrides: str) -> dict[str, str]:
    form = {
        "name": "Board room",
        "slug": "",
        "kind": "room",
        "description": "Twelve seats",
        "capacity": "2",
        "credit_type_id": str(rooms.id),
        "credit_cost": "1",
        "price": "40.00",
        "slot_minutes": "60",
        "book_ahead_days": "14",
        "cancel_cutoff_hours": "2",
        **{f"hours_{d}": "" for d in range(7)},
    }
    form.update(overrides)
    return form


async def as_admin(client: httpx.AsyncClient, factory: Factory) -> m.User:
    admin = await factory.user(email="owner@example.com", role="admin")
    await sign_in(client, admin.email)
    return admin


async def create_room(client: httpx.AsyncClient, rooms: m.CreditType, **overrides: str) -> UUID:
    response = await post_form(client, "/admin/resources/", room_form(rooms, **overrides))
    assert response.status_code == 303, response.text
    return UUID(response.headers["location"].rsplit("/", 1)[1])


async def audit_actions(runtime: Runtime, resource_id: UUID) -> list[str]:
    async with runtime.db() as db:
        return list(
            await db.scalars(
                select(m.AuditEntry.action)
                .where(m.AuditEntry.target_id == str(resource_id))
                .order_by(m.AuditEntry.created_at, m.AuditEntry.id)
            )
        )


async def test_an_admin_creates_a_room_and_members_see_its_slots_in_local_time(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    rooms = await credit_type(runtime)
    await as_admin(client, factory)
    monday = next_weekday(0)
    room_id = await create_room(client, rooms, hours_0="09:00-12:00", hours_2="13:00-15:00")
    async with runtime.db() as db:
        room = await db.get(m.BookableResource, room_id)
        assert room is not None
        assert (room.slug, room.capacity, room.price, room.cancel_cutoff_hours) == ("board-room", 2, 4000, 2)
        assert room.opening_hours == {"0": [["09:00", "12:00"]], "2": [["13:00", "15:00"]]}
    assert await audit_actions(runtime, room_id) == ["resource.create"]
    listing = visible((await client.get("/admin/resources/")).text)
    assert "Board room" in listing and "Mon 09:00\u201312:00; Wed 13:00\u201315:00" in listing

    user = await member(runtime, factory, credits=2, type_id=rooms.id)
    await sign_in(client, user.email)
    page = visible((await client.get(f"/bookings?day={monday.isoformat()}")).text)
    zone = format_local(local(monday, 9), "%Z")
    for hour in (9, 10, 11):
        assert f"{hour:02d}:00\u2013{hour + 1:02d}:00 {zone}" in page
    assert f"12:00\u201313:00 {zone}" not in page
    assert "2 of 2" in page and "Book (1 meeting-room hour)" in page
    async with runtime.db() as db:
        slot = await db.scalar(
            select(m.BookingSlot).where(
                m.BookingSlot.resource_id == room_id, m.BookingSlot.starts_at == local(monday, 10)
            )
        )
        assert slot is not None and slot.capacity == 2
    response = await post_form(client, f"/bookings/slots/{slot.id}/book", {}, htmx=True)
    assert response.status_code == 200 and f"Booked: Board room, {format_local(local(monday, 10))}" in visible(
        response.text
    )
    again = visible((await client.get(f"/bookings?day={monday.isoformat()}")).text)
    assert again.count("10:00\u201311:00") == 1  # looking twice made each slot once


async def test_field_errors_are_re_rendered_in_place(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    rooms = await credit_type(runtime)
    await as_admin(client, factory)
    bad = room_form(rooms, name="", capacity="0", credit_type_id="", price="", hours_1="17:00-09:00", slot_minutes="7")
    response = await post_form(client, "/admin/resources/", bad, htmx=True)
    assert response.status_code == 422
    assert "<html" not in response.text and response.text.lstrip().startswith('<form id="resource-form"')
    text = visible(response.text)
    assert "Enter a name of up to 120 characters" in text
    assert "Enter the seats per slot, from 1 to 500." in text
    assert "Choose a credit type or enter a card price: otherwise nobody can book it." in text
    assert "17:00\u201309:00: closing time must be after opening time." in text
    assert "Enter a slot length from 15 to 1440 minutes." in text
    assert 'value="17:00-09:00"' in response.text  # what was typed comes back

    closed = await post_form(client, "/admin/resources/", room_form(rooms))  # no day open; plain form: full page
    assert closed.status_code == 422 and "<html" in closed.text
    assert "Open it on at least one day of the week." in visible(closed.text)
    async with runtime.db() as db:
        assert list(await db.scalars(select(m.BookableResource))) == []


async def test_support_reads_and_only_admins_change(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    rooms = await credit_type(runtime)
    await as_admin(client, factory)
    room_id = await create_room(client, rooms, hours_0="09:00-17:00")
    support = await factory.user(email="support@example.com", role="support")
    await sign_in(client, support.email)
    listing = await client.get("/admin/resources/")
    assert listing.status_code == 200 and "Board room" in listing.text and "New room or desk" not in listing.text
    detail = await client.get(f"/admin/resources/{room_id}")
    assert detail.status_code == 200 and "<fieldset disabled>" in detail.text and "Save changes" not in detail.text
    assert (await client.get("/admin/resources/new")).status_code == 403
    changes: list[tuple[str, dict[str, str]]] = [
        ("/admin/resources/", room_form(rooms, name="Sneaky", hours_0="09:00-10:00")),
        (f"/admin/resources/{room_id}", room_form(rooms, hours_0="09:00-10:00")),
        (f"/admin/resources/{room_id}/archive", {}),
        (f"/admin/resources/{room_id}/closures", {"starts_on": (local_today() + timedelta(days=1)).isoformat()}),
        ("/admin/resources/holidays", {"starts_on": (local_today() + timedelta(days=1)).isoformat()}),
    ]
    for path, data in changes:
        assert (await post_form(client, path, data)).status_code == 403, path
    customer = await factory.user(email="someone@example.com")
    await sign_in(client, customer.email)
    assert (await client.get("/admin/resources/")).status_code == 403
    assert await audit_actions(runtime, room_id) == ["resource.create"]


async def test_edited_opening_hours_and_closures_change_what_customers_can_book(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    rooms = await credit_type(runtime)
    await as_admin(client, factory)
    room_id = await create_room(client, rooms, hours_0="09:00-12:00")
    monday = next_weekday(0)
    user = await member(runtime, factory, credits=3, type_id=rooms.id)
    await sign_in(client, user.email)
    await client.get(f"/bookings?day={monday.isoformat()}")  # the 09:00-12:00 slots now exist as rows
    async with runtime.db() as db:
        nine = await db.scalar(select(m.BookingSlot).where(m.BookingSlot.starts_at == local(monday, 9)))
        assert nine is not None
    assert (await post_form(client, f"/bookings/slots/{nine.id}/book", {})).status_code == 303

    await sign_in(client, "owner@example.com")
    edited = await post_form(client, f"/admin/resources/{room_id}", room_form(rooms, hours_0="13:00-15:00"))
    assert edited.status_code == 303
    assert await audit_actions(runtime, room_id) == ["resource.create", "resource.update"]
    async with runtime.db() as db:
        entry = await db.scalar(select(m.AuditEntry).where(m.AuditEntry.action == "resource.update"))
        assert entry is not None and entry.before == {"opening_hours": {"0": [["09:00", "12:00"]]}}

    await sign_in(client, user.email)
    page = visible((await client.get(f"/bookings?day={monday.isoformat()}")).text)
    assert "13:00\u201314:00" in page and "14:00\u201315:00" in page
    assert "10:00\u201311:00" not in page  # never booked: gone with the old hours
    assert "09:00\u201310:00" in page and "Booked by you" in page  # the member's booking stays theirs
    async with runtime.db() as db:
        ten = await db.scalar(select(m.BookingSlot).where(m.BookingSlot.starts_at == local(monday, 10)))
        assert ten is None

    await sign_in(client, "owner@example.com")
    closure = {"starts_on": monday.isoformat(), "ends_on": monday.isoformat(), "reason": "Renovation"}
    bad = await post_form(
        client, f"/admin/resources/{room_id}/closures", {**closure, "ends_on": "2020-01-01"}, htmx=True
    )
    assert bad.status_code == 422 and bad.text.lstrip().startswith('<section id="closures"')
    assert "The last day must be on or after the first." in visible(bad.text)
    assert (await post_form(client, f"/admin/resources/{room_id}/closures", closure)).status_code == 303
    assert await audit_actions(runtime, room_id) == ["resource.create", "resource.update", "resource.closure_add"]

    await sign_in(client, user.email)
    page = visible((await client.get(f"/bookings?day={monday.isoformat()}")).text)
    assert "Board room is closed on this day: Renovation." in page
    assert "13:00\u201314:00" not in page
    async with runtime.db() as db:
        one = await db.scalar(select(m.BookingSlot).where(m.BookingSlot.starts_at == local(monday, 13)))
        assert one is not None
    refused = await post_form(client, f"/bookings/slots/{one.id}/book", {}, htmx=True)
    assert refused.status_code == 409
    assert f"Board room is closed on {monday:%a %d %b}: Renovation." in visible(refused.text)
    assert await balance_of(runtime, user.id, rooms.id) == 2


async def test_a_shop_wide_holiday_and_the_booking_horizon(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    rooms = await credit_type(runtime)
    await as_admin(client, factory)
    every_day = {f"hours_{d}": "09:00-17:00" for d in range(7)}
    await create_room(client, rooms, book_ahead_days="3", **every_day)
    tomorrow = local_today() + timedelta(days=1)
    holiday = {"starts_on": tomorrow.isoformat(), "reason": "Family Day"}
    assert (await post_form(client, "/admin/resources/holidays", holiday)).status_code == 303
    assert "Family Day" in visible((await client.get("/admin/resources/holidays")).text)

    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    await sign_in(client, user.email)
    page = visible((await client.get(f"/bookings?day={tomorrow.isoformat()}")).text)
    assert "Board room is closed on this day: Family Day." in page
    later = local_today() + timedelta(days=4)
    page = visible((await client.get(f"/bookings?day={later.isoformat()}")).text)
    assert "Board room can be booked up to 3 days ahead." in page and "Book (" not in page
    day_after = visible((await client.get(f"/bookings?day={(tomorrow + timedelta(days=1)).isoformat()}")).text)
    assert "Book (1 meeting-room hour)" in day_after


async def test_the_cancellation_window_set_in_the_admin_decides_whether_credits_come_back(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    rooms = await credit_type(runtime)
    await as_admin(client, factory)
    every_day = {f"hours_{d}": "09:00-17:00" for d in range(7)}
    room_id = await create_room(client, rooms, **every_day)
    day = local_today() + timedelta(days=2)  # a slot at 12:00 local is 36 to 60 hours away
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    await sign_in(client, user.email)
    await client.get(f"/bookings?day={day.isoformat()}")
    async with runtime.db() as db:
        noon = await db.scalar(select(m.BookingSlot).where(m.BookingSlot.starts_at == local(day, 12)))
        assert noon is not None
    await post_form(client, f"/bookings/slots/{noon.id}/book", {})
    async with runtime.db() as db:
        booking = await db.scalar(select(m.Booking).where(m.Booking.user_id == user.id))
        assert booking is not None
    assert await balance_of(runtime, user.id, rooms.id) == 0

    await sign_in(client, "owner@example.com")
    assert (
        await post_form(client, f"/admin/resources/{room_id}", room_form(rooms, cancel_cutoff_hours="72", **every_day))
    ).status_code == 303
    await sign_in(client, user.email)
    refused = await post_form(client, f"/account/bookings/{booking.id}/cancel", {}, htmx=True)
    assert refused.status_code == 409
    assert "bookings can be cancelled up to 72 hours before they start" in visible(refused.text)
    assert await balance_of(runtime, user.id, rooms.id) == 0  # inside the window: no credits back

    await sign_in(client, "owner@example.com")
    await post_form(client, f"/admin/resources/{room_id}", room_form(rooms, cancel_cutoff_hours="1", **every_day))
    await sign_in(client, user.email)
    done = await post_form(client, f"/account/bookings/{booking.id}/cancel", {}, htmx=True)
    assert done.status_code == 200 and "Your credits are back" in visible(done.text)
    assert await balance_of(runtime, user.id, rooms.id) == 1


async def test_archive_never_deletes_and_seeded_resources_keep_their_slots(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    rooms = await credit_type(runtime)
    async with runtime.db() as db:  # a resource as the seed made them before #16: hand-made slots, no hours
        legacy = m.BookableResource(name="Old room", slug="old-room", credit_type_id=rooms.id, price=0)
        db.add(legacy)
        await db.flush()
        starts = local(local_today() + timedelta(days=2), 15)
        db.add(m.BookingSlot(resource_id=legacy.id, starts_at=starts, ends_at=starts + timedelta(minutes=45)))
        await db.commit()
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    await sign_in(client, user.email)
    day = (local_today() + timedelta(days=2)).isoformat()
    assert "15:00\u201315:45" in visible((await client.get(f"/bookings?day={day}")).text)

    await as_admin(client, factory)
    listing = visible((await client.get("/admin/resources/")).text)
    assert "Old room" in listing and "Hand-made slots" in listing
    assert (await post_form(client, f"/admin/resources/{legacy.id}/archive", {})).status_code == 303
    archived = visible((await client.get("/admin/resources/?status=archived")).text)
    assert "Old room" in archived
    await sign_in(client, user.email)
    assert "Old room" not in visible((await client.get(f"/bookings?day={day}")).text)
    async with runtime.db() as db:
        kept: Any = await db.get(m.BookableResource, legacy.id, populate_existing=True)
        assert kept is not None and kept.is_active is False
    assert await audit_actions(runtime, legacy.id) == ["resource.archive"]
