"""Low stock (#16 item 9): the admins are emailed once when a sale takes a limited product to the threshold, the
notice re-arms when the product is restocked above it, and the products table filters what is running low.

Reliability catalogue: P2-style race (two fulfilments crossing the threshold at the same moment send one email, on
both databases: the notice is claimed with INSERT … ON CONFLICT DO NOTHING in ``sent_notices``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from uuid import UUID

import httpx
import pytest
from saq import Queue
from sqlalchemy import select

from app.db import models as m
from app.domain.catalog.low_stock import stage_low_stock_alerts
from app.domain.notifications.services import EmailService
from app.domain.orders.fulfilment import PaymentSync
from app.lib.handler_context import HandlerContext
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of
from tests.integration.purchase_support import (
    add_to_cart,
    confirm,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
)
from tests.integration.race_support import rendezvous_before_insert, run_stored_events

pytestmark = pytest.mark.usefixtures("app_server")

THRESHOLD = 5  # the shop settings' default low-stock threshold


NewBrowser = Callable[..., httpx.AsyncClient]  # conftest's new_browser: another browser on the same app


async def pay_page(new_browser: NewBrowser, product: m.Product, quantity: int, email: str) -> tuple[UUID, str]:
    """A buyer in their own browser orders ``quantity`` units (held now) and opens the pay page."""
    async with new_browser() as buyer:
        await add_to_cart(buyer, product, quantity)
        order_id = await place_order(buyer, email=email)
        return order_id, await open_pay_page(buyer, order_id)


async def buy(
    new_browser: NewBrowser, runtime: Runtime, emulator: EmulatorServer, queue: Queue, product: m.Product, **kw: int
) -> None:
    order_id, intent_id = await pay_page(new_browser, product, kw.get("quantity", 1), "buyer@example.com")
    assert (await confirm(runtime, intent_id)).status == "succeeded"
    assert (await asyncio.to_thread(emulator.flush, 30))["idle"]
    await run_stored_events(runtime, queue)
    assert (await load_order(runtime, order_id)).status == "paid"


async def low_stock_emails(runtime: Runtime) -> list[tuple[str, str]]:
    async with runtime.db() as db:
        rows = await db.scalars(
            select(m.EmailMessage).where(m.EmailMessage.kind == "low_stock_admin").order_by(m.EmailMessage.created_at)
        )
        return [(e.to_address, e.subject) for e in rows]


async def stock_of(runtime: Runtime, product_id: UUID) -> int | None:
    async with runtime.db() as db:
        return await db.scalar(select(m.Product.stock).where(m.Product.id == product_id))


async def restock(admin: httpx.AsyncClient, product: m.Product, stock: int) -> None:
    """The admin edits the product's stock on its form."""
    form = {
        "name": product.name,
        "slug": product.slug,
        "summary": product.summary,
        "description": product.description,
        "price": "20.00",
        "category_id": "",
        "stock": str(stock),
        "download_limit": "5",
        "seo_title": "",
        "seo_description": "",
        "is_active": "on",
    }
    response = await post_form(admin, f"/admin/products/{product.id}", form)
    assert response.status_code == 303, response.text


async def test_a_sale_crossing_the_threshold_emails_the_admins_once_until_restocked(
    new_browser: NewBrowser,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    await factory.user(email="admin@example.com", role="admin")
    await factory.user(email="owner@example.com", role="admin")
    product = await digital_product(factory, settings.storage_dir, name="Risograph Zine", price=2000, stock=7)

    await buy(new_browser, runtime, stripe_emulator, queue, product)  # 6 left: above the threshold
    assert await low_stock_emails(runtime) == []

    await buy(new_browser, runtime, stripe_emulator, queue, product)  # 5 left: crossed
    subject = "Low stock: Risograph Zine has 5 left"
    assert sorted(await low_stock_emails(runtime)) == [("admin@example.com", subject), ("owner@example.com", subject)]
    async with runtime.db() as db:
        mail = await db.scalar(select(m.EmailMessage).where(m.EmailMessage.kind == "low_stock_admin"))
        assert mail is not None
        assert f"at or below the low-stock threshold of {THRESHOLD}" in mail.text_body
        assert f"/admin/products/{product.id}" in mail.text_body

    await buy(new_browser, runtime, stripe_emulator, queue, product, quantity=2)  # 3 left: still below, no new email
    assert len(await low_stock_emails(runtime)) == 2
    assert await stock_of(runtime, product.id) == 3

    async with new_browser() as admin:
        await sign_in(admin, "admin@example.com")
        await restock(admin, product, 4)  # restocked, but not above the threshold: still one crossing
        await buy(new_browser, runtime, stripe_emulator, queue, product)
        assert len(await low_stock_emails(runtime)) == 2
        await restock(admin, product, 6)  # above the threshold: re-armed
    await buy(new_browser, runtime, stripe_emulator, queue, product)  # 5 left: a new crossing
    emails = await low_stock_emails(runtime)
    assert len(emails) == 4 and emails[-1][1] == "Low stock: Risograph Zine has 5 left"


async def test_an_unlimited_product_never_alerts(
    new_browser: NewBrowser,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    await factory.user(email="admin@example.com", role="admin")
    product = await digital_product(factory, settings.storage_dir, name="Field Guide", price=2000)
    await buy(new_browser, runtime, stripe_emulator, queue, product)
    assert await low_stock_emails(runtime) == []


async def test_two_fulfilments_crossing_the_threshold_at_once_send_one_email(
    new_browser: NewBrowser,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """Two buyers pay at the same moment; both fulfilments see the product at the threshold; one email goes."""
    await factory.user(email="admin@example.com", role="admin")
    product = await digital_product(factory, settings.storage_dir, name="Last Prints", price=2000, stock=THRESHOLD + 2)
    first = await pay_page(new_browser, product, 1, "ann@example.com")
    second = await pay_page(new_browser, product, 1, "bob@example.com")
    for _, intent_id in (first, second):
        assert (await confirm(runtime, intent_id)).status == "succeeded"
    assert (await asyncio.to_thread(stripe_emulator.flush, 30))["idle"]  # stored, not processed: no worker here

    async def fulfil(intent_id: str) -> None:
        async with runtime.db() as db:
            ctx = HandlerContext(db, runtime.stripe, settings, queue, runtime.redis)
            await PaymentSync(ctx).refresh_payment_intent(intent_id)

    with rendezvous_before_insert(runtime, "sent_notices") as arrivals:
        await asyncio.gather(fulfil(first[1]), fulfil(second[1]))
    assert arrivals  # at least one fulfilment claimed the notice (PostgreSQL may serialise them on a lock first)
    for order_id, _ in (first, second):
        assert (await load_order(runtime, order_id)).status == "paid"
    assert await stock_of(runtime, product.id) == THRESHOLD
    assert await low_stock_emails(runtime) == [("admin@example.com", "Low stock: Last Prints has 5 left")]
    async with runtime.db() as db:
        keys = list(await db.scalars(select(m.SentNotice.key).where(m.SentNotice.kind == "low_stock")))
    assert keys == [f"low-stock:{product.id}"]
    await run_stored_events(runtime, queue)  # the webhooks arriving afterwards change nothing
    assert len(await low_stock_emails(runtime)) == 1


async def test_two_writers_claiming_the_same_crossing_at_the_same_moment_stage_one_email(
    factory: Factory, runtime: Runtime, queue: Queue
) -> None:
    """The claim itself under a real race: both writers reach the INSERT into sent_notices before either runs it."""
    await factory.user(email="admin@example.com", role="admin")
    product = await factory.product(name="Test Prints", slug="test-prints", stock=THRESHOLD - 1)

    async def alert() -> int:
        async with runtime.db() as db:
            emails = await stage_low_stock_alerts(db, EmailService(db, queue), [product.id], base_url="http://shop")
            await db.commit()
            return len(emails)

    with rendezvous_before_insert(runtime, "sent_notices") as arrivals:
        staged = await asyncio.gather(alert(), alert())
    assert len(arrivals) == 2  # both really were claiming at once
    assert sorted(staged) == [0, 1]
    assert await low_stock_emails(runtime) == [("admin@example.com", "Low stock: Test Prints has 4 left")]


async def test_the_products_table_filters_low_stock(new_browser: NewBrowser, factory: Factory) -> None:
    await factory.user(email="admin@example.com", role="admin")
    await factory.product(name="Plenty Left", slug="plenty", stock=40)
    await factory.product(name="Running Low", slug="low", stock=2)
    await factory.product(name="All Gone", slug="gone", stock=0)
    await factory.product(name="Always There", slug="always")
    async with new_browser() as admin:
        await sign_in(admin, "admin@example.com")
        everything = text_of((await admin.get("/admin/products")).text)
        assert all(name in everything for name in ("Plenty Left", "Running Low", "All Gone", "Always There"))
        low = await admin.get("/admin/products", params={"stock": "low"})
        assert low.status_code == 200
        page = text_of(low.text)
        assert "Running Low" in page and "All Gone" in page
        assert "Plenty Left" not in page and "Always There" not in page
        assert f"Low stock (≤ {THRESHOLD})" in page  # the filter names the threshold it uses
        fragment = await admin.get("/admin/products", params={"stock": "out"}, headers={"HX-Request": "true"})
        out = text_of(fragment.text)
        assert "All Gone" in out and "Running Low" not in out
