"""Booking a slot by card: a held seat with a pending order, paid through checkout, released, cancelled, refunded."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import select, update

from app.db import models as m
from app.domain.bookings.jobs import release_unpaid_bookings
from app.domain.bookings.services import BookingError, BookingService
from app.domain.checkout.services import BillingDetails
from app.lib.localtime import local_day, to_local
from app.lib.runtime import Runtime
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of, until_complete
from tests.integration.purchase_support import confirm, load_order, open_pay_page, settle
from tests.integration.test_bookings import book, member, resource_with_slot, seats_taken

pytestmark = pytest.mark.usefixtures("app_server")

ONTARIO = {"name": "Olive Ontario", "country": "CA", "region": "ON", "postal_code": "M5V 2T6"}


async def customer(client: httpx.AsyncClient, factory: Factory, email: str) -> m.User:
    """A signed-in customer without a membership."""
    user = await factory.user(email=email)
    await sign_in(client, email)
    return user


async def hold(client: httpx.AsyncClient, slot_id: UUID, **billing: str) -> UUID:
    """Submit the booking's billing form; return the order its redirect to the pay page names."""
    response = await post_form(client, f"/bookings/slots/{slot_id}/card", {**ONTARIO, **billing})
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/orders/([0-9a-f-]{36})/pay", response.headers["location"])
    assert match, response.headers["location"]
    return UUID(match.group(1))


async def booking_of(runtime: Runtime, order_id: UUID) -> m.Booking:
    async with runtime.db() as db:
        booking = await db.scalar(select(m.Booking).where(m.Booking.order_id == order_id))
        assert booking is not None
        return booking


async def order_events(runtime: Runtime, order_id: UUID) -> list[str]:
    async with runtime.db() as db:
        rows = await db.scalars(
            select(m.OrderEvent.kind).where(m.OrderEvent.order_id == order_id).order_by(m.OrderEvent.created_at)
        )
        return list(rows)


async def pay(
    client: httpx.AsyncClient, runtime: Runtime, order_id: UUID, emulator: EmulatorServer, queue: Queue
) -> str:
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id, "pm_card_visa")
    await settle(emulator, queue, runtime)
    return intent_id


async def test_a_non_member_pays_by_card_and_the_booking_is_confirmed_with_tax(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    resource, slot, _ = await resource_with_slot(runtime)
    user = await customer(client, factory, "card@example.com")
    day = local_day(slot.starts_at).isoformat()
    slots = text_of((await client.get(f"/bookings?day={day}")).text)
    assert "Pay $25.00 CAD by card" in slots

    form = await client.get(f"/bookings/slots/{slot.id}/card")
    assert form.status_code == 200 and 'id="booking-card-form"' in form.text
    assert "card@example.com" in form.text  # the receipt goes to the account's email, not a typed one

    order_id = await hold(client, slot.id)
    booking = await booking_of(runtime, order_id)
    assert (booking.status, booking.paid_with, booking.user_id) == ("pending_payment", "card", user.id)
    assert await seats_taken(runtime, slot.id) == 1
    order = await load_order(runtime, order_id)
    assert (order.status, order.user_id, order.email) == ("pending", user.id, "card@example.com")
    assert (order.subtotal, order.tax_total, order.total) == (2500, 325, 2825)  # HST 13 %
    [line] = order.lines
    starts, ends = to_local(slot.starts_at), to_local(slot.ends_at)
    expected = f"Meeting room A — {starts:%a} {starts.day} {starts:%b %H:%M}\u2013{ends:%H:%M %Z}"
    assert expected.endswith((" EST", " EDT"))  # the shop's local time, not UTC
    assert (line.product_id, line.product_name, line.product_slug) == (None, expected, resource.slug)
    assert (line.unit_price, line.quantity, line.tax, line.has_download) == (2500, 1, 325, False)
    awaiting = text_of((await client.get("/account/bookings")).text)
    assert "Awaiting payment" in awaiting

    await pay(client, runtime, order_id, stripe_emulator, queue)
    order = await load_order(runtime, order_id)
    assert (order.status, order.total) == ("paid", 2825)
    assert [(c["code"], c["amount"]) for c in order.tax_breakdown] == [("HST", 325)]
    assert (await booking_of(runtime, order_id)).status == "confirmed"
    assert await seats_taken(runtime, slot.id) == 1
    mine = text_of((await client.get("/account/bookings")).text)
    assert "Paid by card" in mine and "Confirmed" in mine
    assert "Booked by you" in text_of((await client.get(f"/bookings?day={day}")).text)


async def test_invalid_billing_details_hold_nothing(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    _, slot, _ = await resource_with_slot(runtime)
    await customer(client, factory, "typo@example.com")
    response = await post_form(client, f"/bookings/slots/{slot.id}/card", {**ONTARIO, "region": "BC"}, htmx=True)
    assert response.status_code == 422
    assert "<html" not in response.text and 'id="booking-card-form"' in response.text
    assert "That postal code is not in British Columbia" in text_of(response.text)
    assert await seats_taken(runtime, slot.id) == 0


async def test_the_last_seat_held_by_card_cannot_be_taken_twice(
    client: httpx.AsyncClient, app: Any, factory: Factory, runtime: Runtime
) -> None:
    _, slot, rooms = await resource_with_slot(runtime, capacity=1)
    await customer(client, factory, "first@example.com")
    first_order = await hold(client, slot.id)
    assert await hold(client, slot.id) == first_order  # asking again returns the same hold and order
    assert await seats_taken(runtime, slot.id) == 1

    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as other:
        await customer(other, factory, "second@example.com")
        refused = await post_form(other, f"/bookings/slots/{slot.id}/card", ONTARIO)
        assert refused.status_code == 303 and refused.headers["location"].startswith("/bookings?day=")
        assert "That time just filled up" in text_of((await other.get(refused.headers["location"])).text)
    with pytest.raises(BookingError):  # nor with credits
        await book(runtime, await member(runtime, factory, credits=1, type_id=rooms.id), slot.id)
    assert await seats_taken(runtime, slot.id) == 1
    async with runtime.db() as db:
        assert len(list(await db.scalars(select(m.Order)))) == 1


async def test_concurrent_card_holds_for_the_last_seat_give_exactly_one(runtime: Runtime, factory: Factory) -> None:
    _, slot, _ = await resource_with_slot(runtime, capacity=1)
    users = [await factory.user(email=f"racer{i}@example.com") for i in range(4)]
    billing = BillingDetails(email="", name="Racer", country="CA", region="ON", postal_code="M5V 2T6")

    async def attempt(user: m.User) -> str:
        async with runtime.db() as db:
            try:
                await BookingService(db, runtime.stripe).hold_for_card(user, slot.id, billing)
            except BookingError:
                return "refused"
            return "held"

    results = await asyncio.gather(*(attempt(u) for u in users))
    assert sorted(results) == ["held", "refused", "refused", "refused"]
    assert await seats_taken(runtime, slot.id) == 1


async def test_an_unpaid_hold_is_released_and_a_late_payment_is_refunded(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    _, slot, _ = await resource_with_slot(runtime, capacity=2)
    await customer(client, factory, "slow@example.com")
    order_id = await hold(client, slot.id)
    intent_id = await open_pay_page(client, order_id)  # the customer leaves the payment form open
    ctx: Any = {"runtime": runtime}
    assert await release_unpaid_bookings(ctx) == {"released": 0}  # not 15 minutes old yet

    booking = await booking_of(runtime, order_id)
    async with runtime.db() as db:  # test data: the hold was placed 16 minutes ago
        await db.execute(
            update(m.Booking)
            .where(m.Booking.id == booking.id)
            .values(created_at=datetime.now(UTC) - timedelta(minutes=16))
        )
        await db.commit()
    assert await release_unpaid_bookings(ctx) == {"released": 1}
    assert await release_unpaid_bookings(ctx) == {"released": 0}  # idempotent
    assert (await booking_of(runtime, order_id)).status == "canceled"
    assert await seats_taken(runtime, slot.id) == 0
    assert (await load_order(runtime, order_id)).status == "canceled"
    assert (await client.get(f"/orders/{order_id}/pay")).status_code == 409  # "this order was cancelled"

    # The form was still open in another tab: the payment goes through after all. The seat is not re-taken
    # behind the customer's back; the payment is refunded in full, automatically.
    await confirm(runtime, intent_id, "pm_card_visa")
    await settle(stripe_emulator, queue, runtime)  # the payment's webhook: paid, nothing to confirm, refund
    await settle(stripe_emulator, queue, runtime)  # the refund's webhook, sent while the first was processed
    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded) == ("refunded", 2825)
    assert (await booking_of(runtime, order_id)).status == "canceled"
    assert await seats_taken(runtime, slot.id) == 0
    assert "booking_released" in await order_events(runtime, order_id)
    refunds = await runtime.stripe.v1.refunds.list_async({"payment_intent": intent_id})
    assert [r.amount for r in refunds.data] == [2825]


async def test_the_release_job_runs_on_the_worker(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, queue: Queue, worker: Worker
) -> None:
    _, slot, _ = await resource_with_slot(runtime)
    await customer(client, factory, "cron@example.com")
    order_id = await hold(client, slot.id)
    async with runtime.db() as db:
        await db.execute(update(m.Booking).values(created_at=datetime.now(UTC) - timedelta(minutes=20)))
        await db.commit()
    job = await queue.enqueue("release_unpaid_bookings", key="test-release", timeout=60)
    assert job is not None
    await until_complete(job, 30)
    assert job.result == {"released": 1}
    assert (await booking_of(runtime, order_id)).status == "canceled"
    assert await seats_taken(runtime, slot.id) == 0


async def test_cancel_before_cutoff_refunds_the_card_and_frees_the_seat(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    _, slot, _ = await resource_with_slot(runtime, cutoff_hours=24)
    user = await customer(client, factory, "cancel@example.com")
    order_id = await hold(client, slot.id, region="AB", postal_code="T2P 1J9")  # GST 5 %
    intent_id = await pay(client, runtime, order_id, stripe_emulator, queue)
    booking = await booking_of(runtime, order_id)
    assert booking.status == "confirmed"
    mine = await client.get("/account/bookings")
    assert "Your card payment will be refunded in full." in mine.text  # the Cancel button's confirmation

    response = await post_form(client, f"/account/bookings/{booking.id}/cancel", {}, htmx=True)
    assert response.status_code == 200 and 'id="my-bookings"' in response.text and "<html" not in response.text
    assert "Your card payment is being refunded" in text_of(response.text)
    again = await post_form(client, f"/account/bookings/{booking.id}/cancel", {}, htmx=True)
    assert again.status_code == 200  # already cancelled: nothing more happens
    assert await seats_taken(runtime, slot.id) == 0
    refunds = await runtime.stripe.v1.refunds.list_async({"payment_intent": intent_id})
    assert [r.amount for r in refunds.data] == [2625]

    await settle(stripe_emulator, queue, runtime)
    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded) == ("refunded", 2625)
    assert await seats_taken(runtime, slot.id) == 0  # the refund webhook frees no second seat
    assert "Card (refunded)" in text_of((await client.get("/account/bookings")).text)
    other = await member(runtime, factory)
    async with runtime.db() as db:
        billing = BillingDetails(email=other.email, name="Next", country="CA", region="ON", postal_code="M5V 2T6")
        assert (await BookingService(db).hold_for_card(other, slot.id, billing)).status == "pending_payment"
    assert user.id != other.id


async def test_a_full_refund_in_stripe_cancels_the_booking(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    _, slot, _ = await resource_with_slot(runtime)
    await customer(client, factory, "dashboard@example.com")
    order_id = await hold(client, slot.id)
    intent_id = await pay(client, runtime, order_id, stripe_emulator, queue)
    await asyncio.to_thread(stripe_emulator.control, f"payment_intents/{intent_id}/refund", {})
    await settle(stripe_emulator, queue, runtime)
    assert (await load_order(runtime, order_id)).status == "refunded"
    assert (await booking_of(runtime, order_id)).status == "canceled"
    assert await seats_taken(runtime, slot.id) == 0


async def test_someone_elses_booking_or_order_is_not_found(
    client: httpx.AsyncClient, app: Any, factory: Factory, runtime: Runtime
) -> None:
    _, slot, _ = await resource_with_slot(runtime)
    await customer(client, factory, "owner@example.com")
    order_id = await hold(client, slot.id)
    booking = await booking_of(runtime, order_id)

    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as stranger:
        await customer(stranger, factory, "stranger@example.com")
        assert (await stranger.get(f"/orders/{order_id}/pay")).status_code == 404
        assert (await stranger.get(f"/account/orders/{order_id}")).status_code == 404
        response = await post_form(stranger, f"/account/bookings/{booking.id}/cancel", {})
        assert response.status_code == 404
        missing = "00000000-0000-7000-8000-000000000000"
        assert (await stranger.get(f"/bookings/slots/{missing}/card")).status_code == 404
    assert (await booking_of(runtime, order_id)).status == "pending_payment"
    assert await seats_taken(runtime, slot.id) == 1
