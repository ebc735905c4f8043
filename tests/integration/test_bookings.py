"""Booking slots with credits: seats and credits in one transaction, the last seat under concurrency, cancelling."""

from __future__ import annotations

import asyncio
import html
from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import httpx
import pytest
from sqlalchemy import func, select, update
from structlog.testing import capture_logs

from app.cli.seed import SeedResult, seed_resources
from app.db import models as m
from app.domain.bookings.services import BookingError, BookingService, MembershipRequiredError
from app.domain.credits.services import CreditService, NotEnoughCreditsError
from app.lib.exceptions import NotFoundError
from app.lib.localtime import local_day
from app.lib.runtime import Runtime
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of
from tests.integration.test_credits import balance_of, credit_type, grant, ledger


async def resource_with_slot(
    runtime: Runtime,
    *,
    capacity: int = 1,
    starts_in: timedelta = timedelta(days=3),
    cutoff_hours: int = 24,
    cost: int = 1,
) -> tuple[m.BookableResource, m.BookingSlot, m.CreditType]:
    rooms = await credit_type(runtime)
    async with runtime.db() as db:
        resource = m.BookableResource(
            name="Meeting room A",
            slug=f"room-{uuid4().hex[:8]}",
            credit_type_id=rooms.id,
            credit_cost=cost,
            price=2500,
            cancel_cutoff_hours=cutoff_hours,
        )
        db.add(resource)
        await db.flush()
        starts_at = (datetime.now(UTC) + starts_in).replace(minute=0, second=0, microsecond=0)
        slot = m.BookingSlot(
            resource_id=resource.id, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1), capacity=capacity
        )
        db.add(slot)
        await db.commit()
        return resource, slot, rooms


async def member(runtime: Runtime, factory: Factory, *, credits: int = 0, type_id: UUID | None = None) -> m.User:
    user = await factory.user(email=f"member-{uuid4().hex[:10]}@example.com")
    async with runtime.db() as db:
        db.add(
            m.Subscription(
                user_id=user.id,
                stripe_subscription_id=f"sub_{uuid4().hex}",
                stripe_customer_id=f"cus_{uuid4().hex}",
                status=m.SubscriptionStatus.ACTIVE.value,
            )
        )
        await db.commit()
    if credits:
        assert type_id is not None
        await grant(runtime, user.id, type_id, credits)
    return user


async def seats_taken(runtime: Runtime, slot_id: UUID) -> int:
    async with runtime.db() as db:
        booked = await db.scalar(select(m.BookingSlot.booked).where(m.BookingSlot.id == slot_id))
        assert booked is not None
        return booked


async def book(runtime: Runtime, user: m.User, slot_id: UUID) -> m.Booking:
    async with runtime.db() as db:
        return await BookingService(db).book_with_credits(user, slot_id)


# --- the service --------------------------------------------------------------------------------------------------


async def test_booking_with_credits_takes_a_seat_and_one_credit(runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime, capacity=2)
    user = await member(runtime, factory, credits=3, type_id=rooms.id)

    booking = await book(runtime, user, slot.id)

    assert (booking.status, booking.paid_with, booking.credits_spent) == ("confirmed", "credits", 1)
    assert booking.slot.id == slot.id and booking.slot.booked == 1
    assert await seats_taken(runtime, slot.id) == 1
    assert await balance_of(runtime, user.id, rooms.id) == 2
    usage = [e for e in await ledger(runtime, user.id, rooms.id) if e.kind == "usage"]
    assert [(e.amount, e.reference) for e in usage] == [(-1, str(booking.id))]

    with pytest.raises(BookingError) as again:
        await book(runtime, user, slot.id)
    assert again.value.message == "You've already booked this time."
    assert await seats_taken(runtime, slot.id) == 1
    assert await balance_of(runtime, user.id, rooms.id) == 2


async def test_without_enough_credits_nothing_is_taken(runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime, cost=2)
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    with pytest.raises(NotEnoughCreditsError) as refused:
        await book(runtime, user, slot.id)
    assert refused.value.message == "Not enough credits: you have 1 meeting-room hour."
    assert await seats_taken(runtime, slot.id) == 0  # the seat update was rolled back with the failed spend
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Booking)) == 0
    assert await balance_of(runtime, user.id, rooms.id) == 1


async def test_last_seat_under_concurrency_goes_to_exactly_one(runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime, capacity=1)
    users = [await member(runtime, factory, credits=2, type_id=rooms.id) for _ in range(8)]

    async def attempt(user: m.User) -> str:
        try:
            await book(runtime, user, slot.id)
        except BookingError as exc:
            return exc.message
        return "booked"

    results = await asyncio.gather(*(attempt(user) for user in users))

    assert results.count("booked") == 1
    assert set(results) - {"booked"} == {"That time just filled up. Choose another one."}
    assert await seats_taken(runtime, slot.id) == 1
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Booking)) == 1
        usages = await db.scalar(
            select(func.count()).select_from(m.CreditEntry).where(m.CreditEntry.kind == m.CreditEntryKind.USAGE.value)
        )
        assert usages == 1
    balances = sorted([await balance_of(runtime, user.id, rooms.id) for user in users])
    assert balances == [1] + [2] * 7


async def test_one_member_racing_themselves_books_once(runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime, capacity=5)
    user = await member(runtime, factory, credits=5, type_id=rooms.id)
    results = await asyncio.gather(*(book(runtime, user, slot.id) for _ in range(4)), return_exceptions=True)
    assert sum(isinstance(r, m.Booking) for r in results) == 1
    assert all(isinstance(r, BookingError | m.Booking) for r in results)
    assert await seats_taken(runtime, slot.id) == 1
    assert await balance_of(runtime, user.id, rooms.id) == 4


async def test_cancel_before_cutoff_refunds_and_frees_the_seat(runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime, cutoff_hours=24)
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    booking = await book(runtime, user, slot.id)
    assert await balance_of(runtime, user.id, rooms.id) == 0

    async with runtime.db() as db:
        canceled = await BookingService(db).cancel(user, booking.id)
        again = await BookingService(db).cancel(user, booking.id)  # idempotent
    assert canceled.status == again.status == "canceled" and canceled.canceled_at is not None
    assert await seats_taken(runtime, slot.id) == 0
    assert await balance_of(runtime, user.id, rooms.id) == 1
    refunds = [e for e in await ledger(runtime, user.id, rooms.id) if e.kind == "refund"]
    assert [(e.amount, e.reference) for e in refunds] == [(1, str(booking.id))]

    other = await member(runtime, factory, credits=1, type_id=rooms.id)
    assert (await book(runtime, other, slot.id)).status == "confirmed"  # the seat is free again


async def test_cancel_after_cutoff_is_refused(runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime, starts_in=timedelta(hours=5), cutoff_hours=24)
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    booking = await book(runtime, user, slot.id)
    async with runtime.db() as db:
        with pytest.raises(BookingError) as refused:
            await BookingService(db).cancel(user, booking.id)
    assert "too late to cancel" in refused.value.message and "24 hours" in refused.value.message
    assert await seats_taken(runtime, slot.id) == 1
    assert await balance_of(runtime, user.id, rooms.id) == 0


async def test_someone_elses_booking_is_not_found(runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime)
    owner = await member(runtime, factory, credits=1, type_id=rooms.id)
    stranger = await member(runtime, factory)
    booking = await book(runtime, owner, slot.id)
    async with runtime.db() as db:
        with pytest.raises(NotFoundError):
            await BookingService(db).cancel(stranger, booking.id)
    assert await seats_taken(runtime, slot.id) == 1


async def test_non_members_are_told_to_subscribe(runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime)
    user = await factory.user()
    await grant(runtime, user.id, rooms.id, 5)  # credits alone are not enough: a live subscription is
    with pytest.raises(MembershipRequiredError) as refused:
        await book(runtime, user, slot.id)
    assert refused.value.status_code == 403 and "for members" in refused.value.message
    assert await seats_taken(runtime, slot.id) == 0


# --- the pages ----------------------------------------------------------------------------------------------------


async def test_pages_require_login(client: httpx.AsyncClient) -> None:
    for path in ("/bookings", "/account/bookings", "/account/credits"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next_url=")


async def test_booking_over_htmx_rerenders_the_slots(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    resource, slot, rooms = await resource_with_slot(runtime, capacity=2)
    user = await member(runtime, factory, credits=2, type_id=rooms.id)
    await sign_in(client, user.email)
    day = local_day(slot.starts_at).isoformat()

    page = await client.get(f"/bookings?day={day}")
    assert page.status_code == 200 and "<html" in page.text
    assert 'hx-trigger="every 15s"' in page.text
    assert "Book (1 meeting-room hour)" in page.text
    assert "You have 2 meeting-room hours" in html.unescape(text_of(page.text))

    polled = await client.get(f"/bookings?day={day}", headers={"HX-Request": "true"})
    assert polled.status_code == 200 and "<html" not in polled.text
    assert polled.text.lstrip().startswith('<section id="slots"')
    assert polled.headers["vary"].startswith("HX-Request")

    response = await post_form(client, f"/bookings/slots/{slot.id}/book", {}, htmx=True)
    assert response.status_code == 200, response.text
    assert "<html" not in response.text and 'id="slots"' in response.text
    text = html.unescape(text_of(response.text))
    assert f"Booked: {resource.name}" in text
    assert "Booked by you" in text and "1 of 2" in text
    assert "You have 1 meeting-room hour " in text

    mine = await client.get("/account/bookings")
    assert resource.name in mine.text and "hx-confirm=" in mine.text
    credits_page = html.unescape(text_of((await client.get("/account/credits")).text))
    assert "Meeting-room hours 1" in credits_page and "Used" in credits_page


async def test_full_slot_over_htmx_answers_409_with_fresh_slots(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    _, slot, rooms = await resource_with_slot(runtime, capacity=1)
    first = await member(runtime, factory, credits=1, type_id=rooms.id)
    await book(runtime, first, slot.id)
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    await sign_in(client, user.email)

    response = await post_form(client, f"/bookings/slots/{slot.id}/book", {}, htmx=True)
    assert response.status_code == 409
    assert "<html" not in response.text and 'id="slots"' in response.text
    text = html.unescape(text_of(response.text))
    assert "That time just filled up" in text and "Full" in text
    assert await balance_of(runtime, user.id, rooms.id) == 1


async def test_plain_form_books_and_redirects(client: httpx.AsyncClient, runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime)
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    await sign_in(client, user.email)
    response = await post_form(client, f"/bookings/slots/{slot.id}/book", {})
    assert response.status_code == 303
    assert response.headers["location"] == f"/bookings?day={local_day(slot.starts_at).isoformat()}"
    follow = await client.get(response.headers["location"])
    assert "Booked: Meeting room A" in html.unescape(follow.text)


async def test_cancel_over_htmx(client: httpx.AsyncClient, runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime)
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    booking = await book(runtime, user, slot.id)
    await sign_in(client, user.email)

    response = await post_form(client, f"/account/bookings/{booking.id}/cancel", {}, htmx=True)
    assert response.status_code == 200, response.text
    assert "<html" not in response.text and response.text.lstrip().startswith('<div id="my-bookings"')
    assert "Your credits are back" in html.unescape(response.text)
    assert await balance_of(runtime, user.id, rooms.id) == 1
    assert await seats_taken(runtime, slot.id) == 0


async def test_cancel_someone_elses_booking_is_404(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    _, slot, rooms = await resource_with_slot(runtime)
    owner = await member(runtime, factory, credits=1, type_id=rooms.id)
    booking = await book(runtime, owner, slot.id)
    stranger = await member(runtime, factory)
    await sign_in(client, stranger.email)
    with capture_logs() as logs:
        response = await post_form(client, f"/account/bookings/{booking.id}/cancel", {})
    assert response.status_code == 404
    assert await seats_taken(runtime, slot.id) == 1
    # Probing someone else's booking is logged as a denial (an unknown id is not).
    [denied] = [entry for entry in logs if entry.get("event") == "access_denied"]
    assert (denied["reason"], denied["resource"], denied["object_id"]) == ("not_owner", "booking", str(booking.id))
    assert denied["account"] == str(stranger.id)
    with capture_logs() as logs:
        missing = await post_form(client, f"/account/bookings/{uuid4()}/cancel", {})
    assert missing.status_code == 404
    assert not [entry for entry in logs if entry.get("event") == "access_denied"]


async def test_non_member_sees_the_plans_link_and_cannot_book(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    _, slot, _ = await resource_with_slot(runtime)
    user = await factory.user()
    await sign_in(client, user.email)
    page = await client.get(f"/bookings?day={local_day(slot.starts_at).isoformat()}")
    assert 'id="membership-needed"' in page.text and 'href="/pricing"' in page.text
    assert "Book (" not in page.text

    response = await post_form(client, f"/bookings/slots/{slot.id}/book", {}, htmx=True)
    assert response.status_code == 403
    assert "for members" in html.unescape(response.text)
    assert await seats_taken(runtime, slot.id) == 0


async def test_booking_requires_csrf(client: httpx.AsyncClient, runtime: Runtime, factory: Factory) -> None:
    _, slot, rooms = await resource_with_slot(runtime)
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    await sign_in(client, user.email)
    response = await client.post(f"/bookings/slots/{slot.id}/book", headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert await seats_taken(runtime, slot.id) == 0
    async with runtime.db() as db:
        assert await CreditService(db).balance(user.id, rooms.id) == 1


# --- the shop's time zone (America/Toronto by default) -------------------------------------------------------------


async def slot_at(runtime: Runtime, resource: m.BookableResource, starts_at: datetime, hours: int = 1) -> m.BookingSlot:
    async with runtime.db() as db:
        slot = m.BookingSlot(resource_id=resource.id, starts_at=starts_at, ends_at=starts_at + timedelta(hours=hours))
        db.add(slot)
        await db.commit()
        return slot


async def far_ahead(runtime: Runtime, resource: m.BookableResource) -> None:
    """Fixed dates a year or more ahead (one in winter, one in summer): past the default 14-day booking horizon."""
    async with runtime.db() as db:
        await db.execute(
            update(m.BookableResource).where(m.BookableResource.id == resource.id).values(book_ahead_days=1000)
        )
        await db.commit()


async def test_the_booking_page_shows_local_times_with_the_zone_on_both_sides_of_dst(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    resource, _, rooms = await resource_with_slot(runtime)
    await far_ahead(runtime, resource)
    await slot_at(runtime, resource, datetime(2027, 12, 15, 14, tzinfo=UTC))  # 09:00 EST
    await slot_at(runtime, resource, datetime(2027, 6, 15, 13, tzinfo=UTC))  # 09:00 EDT
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    await sign_in(client, user.email)

    winter = html.unescape(text_of((await client.get("/bookings?day=2027-12-15")).text))
    assert "Times are local time in America/Toronto." in winter
    assert "09:00\u201310:00 EST" in winter and "UTC" not in winter
    summer = html.unescape(text_of((await client.get("/bookings?day=2027-06-15")).text))
    assert "09:00\u201310:00 EDT" in summer and "13:00" not in summer


async def test_the_day_is_the_shops_local_day_not_the_utc_one(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    resource, _, rooms = await resource_with_slot(runtime)
    await far_ahead(runtime, resource)
    evening = await slot_at(runtime, resource, datetime(2027, 12, 16, 1, tzinfo=UTC))  # Wed 15 Dec, 20:00 EST
    user = await member(runtime, factory, credits=1, type_id=rooms.id)
    await sign_in(client, user.email)

    assert "20:00\u201321:00 EST" in html.unescape((await client.get("/bookings?day=2027-12-15")).text)
    assert "20:00" not in html.unescape((await client.get("/bookings?day=2027-12-16")).text)

    response = await post_form(client, f"/bookings/slots/{evening.id}/book", {})
    assert response.headers["location"] == "/bookings?day=2027-12-15"  # back to the local day it is on
    mine = html.unescape(text_of((await client.get("/account/bookings")).text))
    assert "Wed 15 Dec 2027, 20:00\u201321:00 EST" in mine
    credits_page = html.unescape(text_of((await client.get("/account/credits")).text))
    assert "Booked Meeting room A, Wed 15 Dec 2027 20:00 EST" in credits_page


async def test_the_seeded_day_pass_opens_at_nine_local_so_it_can_be_booked_early_in_the_morning(
    runtime: Runtime, factory: Factory
) -> None:
    """The bug in #16: the seed put the day pass at 09:00 UTC (04:00 in Toronto), so it had 'started' before dawn."""
    async with runtime.db() as db:
        db.add(m.CreditType(code="day-passes", name="Day passes", unit="passes"))
        db.add(m.CreditType(code="room-hours", name="Meeting-room hours", unit="hours"))
        await db.commit()
        await seed_resources(db, SeedResult(), today=date(2026, 12, 14), days=3)  # Mon 14 to Wed 16 Dec
        await db.commit()
        day_pass = await db.scalar(select(m.BookableResource).where(m.BookableResource.slug == "hot-desk-day-pass"))
        assert day_pass is not None and day_pass.credit_type_id is not None
        tuesday = (
            await db.scalars(
                select(m.BookingSlot)
                .where(
                    m.BookingSlot.resource_id == day_pass.id,
                    m.BookingSlot.starts_at >= datetime(2026, 12, 15, tzinfo=UTC),
                )
                .order_by(m.BookingSlot.starts_at)
            )
        ).first()
        assert tuesday is not None
    assert (tuesday.starts_at, tuesday.ends_at) == (
        datetime(2026, 12, 15, 14, tzinfo=UTC),
        datetime(2026, 12, 15, 22, tzinfo=UTC),
    )
    user = await member(runtime, factory, credits=1, type_id=day_pass.credit_type_id)
    six_am_local = datetime(2026, 12, 15, 11, tzinfo=UTC)  # 11:00 UTC: past 09:00 UTC, but 06:00 in Toronto
    async with runtime.db() as db:
        availability = await BookingService(db).availability(user, date(2026, 12, 15), now=six_am_local)
        [view] = next(rd for rd in availability.resources if rd.resource.id == day_pass.id).slots
        assert not view.has_started
        booking = await BookingService(db).book_with_credits(user, tuesday.id, now=six_am_local)
    assert booking.status == "confirmed"


# --- what a member without credits is offered (#16 item 4) ---------------------------------------------------------


async def test_a_member_with_no_hours_left_is_offered_the_card_and_how_to_get_hours(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    resource, slot, rooms = await resource_with_slot(runtime)
    user = await member(runtime, factory)  # a member, 0 meeting-room hours
    await sign_in(client, user.email)

    page = html.unescape(text_of((await client.get(f"/bookings?day={local_day(slot.starts_at).isoformat()}")).text))
    assert "Book (1 meeting-room hour)" not in page
    assert (
        "You have 0 meeting-room hours left this period; a booking needs 1 meeting-room hour. "
        "You can pay by card instead, or get more meeting-room hours with a bigger plan" in page
    )
    assert "Pay $25.00 CAD by card" in page
    raw = (await client.get(f"/bookings?day={local_day(slot.starts_at).isoformat()}")).text
    assert 'class="button button-small" href="/bookings/slots/' in raw  # the card is the main action, not secondary

    async with runtime.db() as db:  # no card price either: only the way to get hours is left
        await db.execute(update(m.BookableResource).where(m.BookableResource.id == resource.id).values(price=0))
        await db.commit()
    page = html.unescape(text_of((await client.get(f"/bookings?day={local_day(slot.starts_at).isoformat()}")).text))
    assert "Book (" not in page and "by card" not in page
    assert "To book it, get more meeting-room hours with a bigger plan" in page
    assert "How to get meeting-room hours" in page

    await grant(runtime, user.id, rooms.id, 1)
    page = html.unescape(text_of((await client.get(f"/bookings?day={local_day(slot.starts_at).isoformat()}")).text))
    assert "Book (1 meeting-room hour)" in page and "How to get" not in page
    assert "You have 1 meeting-room hour left this period; each booking uses 1 meeting-room hour." in page


async def test_your_plan_shows_the_credits_left_this_period_per_type(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    rooms = await credit_type(runtime)
    user = await factory.user(email="planner@example.com")
    async with runtime.db() as db:
        passes = m.CreditType(code="day-passes", name="Day passes", unit="passes")
        db.add(passes)
        await db.flush()
        plan = m.Plan(
            name="Studio",
            slug=f"studio-{uuid4().hex[:6]}",
            credits=[
                m.PlanCredit(credit_type_id=rooms.id, amount=10),
                m.PlanCredit(credit_type_id=passes.id, amount=4),
            ],
        )
        db.add(plan)
        await db.flush()
        db.add(
            m.Subscription(
                user_id=user.id,
                plan_id=plan.id,
                stripe_subscription_id=f"sub_{uuid4().hex}",
                stripe_customer_id=f"cus_{uuid4().hex}",
                status=m.SubscriptionStatus.ACTIVE.value,
            )
        )
        await db.commit()
    await grant(runtime, user.id, rooms.id, 7)
    await sign_in(client, user.email)

    page = html.unescape(text_of((await client.get("/account/subscription")).text))
    assert "Credits left this period" in page
    assert "Meeting-room hours 7 left of 10 this period" in page
    assert "Day passes 0 left of 4 this period" in page  # none allocated yet: shown, at 0
