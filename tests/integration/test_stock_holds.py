"""Limited stock is held when the order is placed (#13 item 5): never oversold, given back when unpaid.

Reliability catalogue: P2-style race (two buyers at the same moment for the last unit: exactly one hold, stock
never negative, on both databases), P11 (a payment that lands after its hold expired and the stock is gone is
refunded in full, the customer told).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest
from saq import Queue
from sqlalchemy import select, update

from app.db import models as m
from app.domain.catalog.stock_holds import release_expired
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import post_form, text_of
from tests.integration.purchase_support import (
    BILLING,
    add_to_cart,
    checkout_form,
    confirm,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
)
from tests.integration.race_support import rendezvous_before_insert, run_stored_events

pytestmark = pytest.mark.usefixtures("app_server")


@pytest.fixture
async def other_buyer(
    client: httpx.AsyncClient, new_browser: Callable[..., httpx.AsyncClient]
) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser on the same app, with its own session and cart."""
    async with new_browser() as other:
        yield other


async def stock_of(runtime: Runtime, product_id: UUID) -> int | None:
    async with runtime.db() as db:
        return await db.scalar(select(m.Product.stock).where(m.Product.id == product_id))


async def holds(runtime: Runtime, product_id: UUID) -> list[m.StockHold]:
    async with runtime.db() as db:
        return list(await db.scalars(select(m.StockHold).where(m.StockHold.product_id == product_id)))


async def settle_events(runtime: Runtime, emulator: EmulatorServer, queue: Queue) -> None:
    assert (await asyncio.to_thread(emulator.flush, 30))["idle"]
    await run_stored_events(runtime, queue)


async def test_two_buyers_racing_for_the_last_unit_get_one_hold_and_one_clear_error(
    client: httpx.AsyncClient, other_buyer: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings
) -> None:
    """Both place the order at the same moment (their INSERTs meet at a barrier): one order holds the unit."""
    product = await digital_product(factory, settings.storage_dir, name="Last Print", price=2000, stock=1)
    forms = []
    for buyer, email in ((client, "ann@example.com"), (other_buyer, "bob@example.com")):
        await add_to_cart(buyer, product)
        forms.append((buyer, {**BILLING, "email": email, "checkout_token": await checkout_form(buyer)}))
    with rendezvous_before_insert(runtime, "orders") as arrivals:
        responses = await asyncio.gather(*(post_form(buyer, "/checkout", form) for buyer, form in forms))
    assert len(arrivals) == 2  # both really were placing the order at once
    assert sorted(r.status_code for r in responses) == [303, 409]
    refused = next(r for r in responses if r.status_code == 409)
    assert "Last Print: none left right now; another buyer is holding the rest." in text_of(refused.text)

    assert await stock_of(runtime, product.id) == 0
    assert [h.quantity for h in await holds(runtime, product.id)] == [1]
    async with runtime.db() as db:
        orders = list(await db.scalars(select(m.Order)))
    assert len(orders) == 1  # nothing half-written for the buyer who lost


async def test_an_expired_hold_gives_the_unit_back_and_the_product_page_shows_it(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings
) -> None:
    product = await digital_product(factory, settings.storage_dir, name="Last Print", price=2000, stock=2)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="ann@example.com")
    assert await stock_of(runtime, product.id) == 1  # held: the shop shows what is left to buy
    [hold] = await holds(runtime, product.id)
    assert hold.expires_at - hold.created_at == pytest.approx(timedelta(minutes=15), abs=timedelta(seconds=5))

    async with runtime.db() as db:
        assert await release_expired(db) == 0  # not expired yet
        later = datetime.now(UTC) + timedelta(minutes=16)
        assert await release_expired(db, now=later) == 1
        assert await release_expired(db, now=later) == 0  # a second sweep gives nothing back twice
    assert await stock_of(runtime, product.id) == 2
    [hold] = await holds(runtime, product.id)
    assert hold.released_at is not None and hold.converted_at is None
    assert (await load_order(runtime, order_id)).status == "pending"


async def test_a_paid_hold_is_sold_once_without_a_second_decrement(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    product = await digital_product(factory, settings.storage_dir, name="Last Print", price=2000, stock=2)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="ann@example.com")
    intent_id = await open_pay_page(client, order_id)
    assert (await confirm(runtime, intent_id)).status == "succeeded"
    await settle_events(runtime, stripe_emulator, queue)
    assert (await load_order(runtime, order_id)).status == "paid"
    assert await stock_of(runtime, product.id) == 1
    [hold] = await holds(runtime, product.id)
    assert hold.converted_at is not None and hold.released_at is None
    async with runtime.db() as db:  # a sweep after the sale gives nothing back
        assert await release_expired(db, now=datetime.now(UTC) + timedelta(hours=1)) == 0
    assert await stock_of(runtime, product.id) == 1


async def test_a_declined_payment_releases_the_hold(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    product = await digital_product(factory, settings.storage_dir, name="Last Print", price=2000, stock=1)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="ann@example.com")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id, "pm_card_chargeDeclined")
    await settle_events(runtime, stripe_emulator, queue)
    assert await stock_of(runtime, product.id) == 1
    [hold] = await holds(runtime, product.id)
    assert hold.released_at is not None


async def test_a_payment_after_the_hold_expired_and_the_unit_sold_is_refunded(
    client: httpx.AsyncClient,
    other_buyer: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """P11: Ann's hold expires, Bob buys the last unit, then Ann's payment lands: Ann is refunded, stock stays 0."""
    await factory.user(email="admin@example.com", role="admin")
    product = await digital_product(factory, settings.storage_dir, name="Last Print", price=2000, stock=1)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="ann@example.com")
    intent_id = await open_pay_page(client, order_id)
    async with runtime.db() as db:
        await db.execute(update(m.StockHold).values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        await db.commit()
        assert await release_expired(db) == 1
    await add_to_cart(other_buyer, product)
    await place_order(other_buyer, email="bob@example.com")
    assert await stock_of(runtime, product.id) == 0  # Bob holds it now

    assert (await confirm(runtime, intent_id)).status == "succeeded"
    await settle_events(runtime, stripe_emulator, queue)
    await settle_events(runtime, stripe_emulator, queue)

    order = await load_order(runtime, order_id)
    assert (order.status, order.fulfilled_at) == ("refunded", None)
    assert order.refund_reason == "A product in your order sold out before your payment completed."
    remote = await runtime.stripe.v1.refunds.list_async({"payment_intent": intent_id})
    assert [r.amount for r in remote.data] == [order.total]
    assert await stock_of(runtime, product.id) == 0
    async with runtime.db() as db:
        kinds = [(e.kind, e.to_address) for e in await db.scalars(select(m.EmailMessage))]
    assert ("order_undelivered", "ann@example.com") in kinds
    assert ("order_undelivered_admin", "admin@example.com") in kinds


async def test_a_buyer_whose_last_unit_is_held_elsewhere_is_told_and_can_buy_it_once_released(
    client: httpx.AsyncClient, other_buyer: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings
) -> None:
    product = await digital_product(factory, settings.storage_dir, name="Last Print", price=2000, stock=1)
    await add_to_cart(other_buyer, product)  # Bob first puts it in his cart...
    await add_to_cart(client, product)
    await place_order(client, email="ann@example.com")  # ...but Ann places her order first

    cart = text_of((await other_buyer.get("/cart")).text)
    assert "Another buyer is checking out the last one; it may be back in a few minutes" in cart
    assert "Last Print: only" not in cart
    page = text_of((await other_buyer.get(f"/products/{product.slug}")).text)
    assert "Sold out" in page

    async with runtime.db() as db:
        assert await release_expired(db, now=datetime.now(UTC) + timedelta(minutes=16)) == 1
    assert "Another buyer" not in text_of((await other_buyer.get("/cart")).text)
    await place_order(other_buyer, email="bob@example.com")  # Bob gets it now
    assert await stock_of(runtime, product.id) == 0
