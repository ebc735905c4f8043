"""Charged but not delivered (#13 item 4): money the shop cannot deliver for goes back, once, and everyone is told.

Reliability catalogue: P11 (payment succeeds but the order cannot be finalised: automatic refund, customer
notified), P7 (a PaymentIntent amount that is not the order total is never fulfilled), R1 (the refund is counted
once when its webhooks land too).
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import httpx
import pytest
from saq import Queue
from sqlalchemy import select

from app.db import models as m
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.integration.purchase_support import (
    add_to_cart,
    confirm,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
)
from tests.integration.race_support import run_stored_events

pytestmark = pytest.mark.usefixtures("app_server")


async def settle_events(runtime: Runtime, emulator: EmulatorServer, queue: Queue) -> None:
    assert (await asyncio.to_thread(emulator.flush, 30))["idle"]
    await run_stored_events(runtime, queue)


async def replay_every_event(runtime: Runtime, queue: Queue) -> None:
    """What a retried job (or Stripe delivering everything again) does: run every stored event once more."""
    async with runtime.db() as db:
        await db.execute(m.StripeEvent.__table__.update().values(status="received"))  # type: ignore[attr-defined]
        await db.commit()
    await run_stored_events(runtime, queue)


async def placed_order(
    client: httpx.AsyncClient, factory: Factory, settings: Settings, **product: object
) -> tuple[UUID, str, m.Product]:
    await factory.user(email="admin@example.com", role="admin")
    item = await digital_product(factory, settings.storage_dir, price=2000, **product)
    await add_to_cart(client, item)
    order_id = await place_order(client, email="dana@example.com", region="AB", postal_code="T2P 1J9")
    return order_id, await open_pay_page(client, order_id), item


async def emails(runtime: Runtime) -> list[tuple[str, str]]:
    async with runtime.db() as db:
        rows = await db.scalars(select(m.EmailMessage).order_by(m.EmailMessage.created_at))
        return [(e.kind, e.to_address) for e in rows]


async def assert_refunded_once(runtime: Runtime, order_id: UUID, intent_id: str, amount: int, reason: str) -> m.Order:
    order = await load_order(runtime, order_id)
    assert order.status == "refunded" and order.fulfilled_at is None
    assert order.refund_reason == reason
    remote = await runtime.stripe.v1.refunds.list_async({"payment_intent": intent_id})
    assert [(r.amount, r.status) for r in remote.data] == [(amount, "succeeded")]
    async with runtime.db() as db:
        rows = list(await db.scalars(select(m.Refund).where(m.Refund.order_id == order_id)))
        assert [(r.stripe_refund_id, r.amount) for r in rows] == [(remote.data[0].id, amount)]
        entitlements = list(await db.scalars(select(m.Entitlement).where(m.Entitlement.order_id == order_id)))
        assert entitlements == []
        timeline = list(await db.scalars(select(m.OrderEvent.kind).where(m.OrderEvent.order_id == order_id)))
        assert timeline.count("refunded_undelivered") == 1
    assert await emails(runtime) == [
        ("order_undelivered", "dana@example.com"),
        ("order_undelivered_admin", "admin@example.com"),
    ]
    return order


async def test_a_payment_for_the_wrong_amount_is_refunded_once_and_everyone_is_told(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """P11/P7: the PaymentIntent took 50 cents for a $21 order; the job runs twice; R1: the refund webhooks too."""
    order_id, intent_id, product = await placed_order(client, factory, settings, stock=3)
    await runtime.stripe.v1.payment_intents.update_async(intent_id, {"amount": 50})
    assert (await confirm(runtime, intent_id)).status == "succeeded"
    await settle_events(runtime, stripe_emulator, queue)
    await replay_every_event(runtime, queue)
    await settle_events(runtime, stripe_emulator, queue)  # the refund's own webhooks, processed

    reason = "The amount charged did not match the order total."
    order = await assert_refunded_once(runtime, order_id, intent_id, 50, reason)
    assert order.amount_refunded == 50
    async with runtime.db() as db:  # the unit held for the order is back on sale at once, not at expiry
        assert await db.scalar(select(m.Product.stock).where(m.Product.id == product.id)) == 3
    async with runtime.db() as db:
        mail = await db.scalar(select(m.EmailMessage).where(m.EmailMessage.kind == "order_undelivered"))
        assert mail is not None
        assert reason in mail.text_body and "refunded the full $0.50" in mail.text_body


async def test_a_payment_for_a_product_archived_meanwhile_is_refunded(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """P11: the admin archived the product while the customer was on the pay page."""
    order_id, intent_id, product = await placed_order(client, factory, settings)
    async with runtime.db() as db:
        row = await db.get(m.Product, product.id)
        assert row is not None
        row.is_active = False
        await db.commit()
    assert (await confirm(runtime, intent_id)).status == "succeeded"
    await settle_events(runtime, stripe_emulator, queue)
    await replay_every_event(runtime, queue)

    order = await load_order(runtime, order_id)
    await assert_refunded_once(runtime, order_id, intent_id, order.total, "A product in your order is no longer sold.")
    assert order.amount_refunded == order.total
