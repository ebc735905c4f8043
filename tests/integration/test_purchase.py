"""One-time purchases: checkout with tax, one PaymentIntent per order, webhook fulfilment, refunds, IDOR."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import func, select

from app.db import models as m
from app.domain.orders.fulfilment import PaymentSync, as_dict
from app.lib.handler_context import HandlerContext
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory, SetLimits
from tests.helpers import post_form, sign_in, text_of
from tests.integration.purchase_support import (
    BILLING,
    add_to_cart,
    checkout_form,
    confirm,
    deliver,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
    settle,
)
from tests.support import Mailbox, body_text

pytestmark = pytest.mark.usefixtures("app_server")


async def test_checkout_shows_field_errors_and_creates_nothing(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    product = await factory.product(price=2000)
    await add_to_cart(client, product)
    token = await checkout_form(client)
    response = await post_form(
        client,
        "/checkout",
        {**BILLING, "email": "not-an-email", "region": "", "postal_code": "12345", "checkout_token": token},
        htmx=True,
    )
    assert response.status_code == 422
    page = text_of(response.text)
    assert "Enter the email address your receipt" in page
    assert "Choose a province or territory" in page
    assert "Enter a Canadian postal code" in page
    assert 'value="not-an-email"' in response.text  # what was typed is kept
    # Issue #12 hole 1: a guest address that would break out of a JS string is refused like any bad address.
    payload = await post_form(
        client, "/checkout", {**BILLING, "email": "x');alert(1);('@e.co", "checkout_token": token}, htmx=True
    )
    assert payload.status_code == 422 and "Enter the email address your receipt" in text_of(payload.text)
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Order)) == 0


async def test_postal_code_must_be_in_the_chosen_province(client: httpx.AsyncClient, factory: Factory) -> None:
    await add_to_cart(client, await factory.product())
    token = await checkout_form(client)
    response = await post_form(
        client, "/checkout", {**BILLING, "region": "BC", "postal_code": "M5V 2T6", "checkout_token": token}
    )
    assert response.status_code == 422
    assert "That postal code is not in British Columbia" in text_of(response.text)


async def test_tax_preview_follows_the_province(client: httpx.AsyncClient, factory: Factory) -> None:
    await add_to_cart(client, await factory.product(price=10_000))
    quebec = text_of((await client.get("/checkout/summary?country=CA&region=QC")).text)
    assert "GST 5% $5.00 CAD" in quebec
    assert "QST 9.975% $9.98 CAD" in quebec
    assert "Total $114.98 CAD" in quebec
    abroad = text_of((await client.get("/checkout/summary?country=US&region=NY")).text)
    assert "Total $100.00 CAD" in abroad


async def test_order_snapshots_prices_and_records_tax(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    first = await factory.product(name="Field Guide", price=1999)
    second = await factory.product(name="Pitch Deck", price=4550)
    await add_to_cart(client, first, 2)
    await add_to_cart(client, second)
    order_id = await place_order(client, region="NS", postal_code="B3H 1A1")
    # The shop changes its price afterwards: the order keeps what the customer agreed to.
    async with runtime.db() as db:
        product = await db.get(m.Product, first.id)
        assert product is not None
        product.price = 9999
        await db.commit()
    order = await load_order(runtime, order_id)
    assert order.status == "pending"
    assert [(line.product_name, line.unit_price, line.quantity, line.tax) for line in order.lines] == [
        ("Field Guide", 1999, 2, 560),  # 3998 x 14% = 559.72
        ("Pitch Deck", 4550, 1, 637),
    ]
    assert order.subtotal == 8548
    assert order.tax_total == 1197
    assert order.total == 9745
    assert order.tax_breakdown == [{"code": "HST", "label": "HST 14%", "rate": "0.14", "amount": 1197}]
    assert order.number > 1000


async def test_a_double_submitted_checkout_form_creates_one_order(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await add_to_cart(client, await factory.product())
    token = await checkout_form(client)
    data = {**BILLING, "checkout_token": token}
    first, second = await asyncio.gather(post_form(client, "/checkout", data), post_form(client, "/checkout", data))
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Order)) == 1


async def test_prices_come_from_the_database_not_the_form(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    product = await factory.product(price=2500)
    await add_to_cart(client, product)
    token = await checkout_form(client)
    response = await post_form(
        client, "/checkout", {**BILLING, "checkout_token": token, "price": "1", "total": "1", "subtotal": "1"}
    )
    assert response.status_code == 303
    async with runtime.db() as db:
        order = await db.scalar(select(m.Order))
        assert order is not None
        assert order.subtotal == 2500


async def test_inactive_items_are_left_out_of_the_order(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    kept = await factory.product(name="Kept", price=1000)
    withdrawn = await factory.product(name="Withdrawn", price=5000)
    await add_to_cart(client, kept)
    await add_to_cart(client, withdrawn)
    async with runtime.db() as db:
        row = await db.get(m.Product, withdrawn.id)
        assert row is not None
        row.is_active = False
        await db.commit()
    page = text_of((await client.get("/checkout")).text)
    assert "No longer for sale" in page
    order = await load_order(runtime, await place_order(client, region="AB", postal_code="T2P 1J9"))
    assert [line.product_name for line in order.lines] == ["Kept"]
    assert order.total == 1050


async def test_guest_purchase_is_fulfilled_by_the_webhook_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    guide = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500)
    deck = await digital_product(factory, settings.storage_dir, name="Pitch Deck", price=2500, stock=3)
    await add_to_cart(client, guide)
    await add_to_cart(client, deck)
    order_id = await place_order(client, email="gail@example.com")
    intent_id = await open_pay_page(client, order_id)
    intent = await runtime.stripe.v1.payment_intents.retrieve_async(intent_id)
    assert intent.amount == 4520  # 4000 + 13% HST, the PaymentIntent charges the total including tax
    assert intent.metadata["order_id"] == str(order_id)
    await confirm(runtime, intent_id)
    await settle(stripe_emulator, queue, runtime)

    order = await load_order(runtime, order_id)
    assert order.status == "paid"
    async with runtime.db() as db:
        payment = await db.scalar(select(m.Payment).where(m.Payment.order_id == order_id))
        assert payment is not None
        assert (payment.status, payment.amount, payment.payment_intent_id) == ("succeeded", 4520, intent_id)
        assert payment.charge_id and payment.charge_id.startswith("ch_")
        entitlements = list(await db.scalars(select(m.Entitlement).where(m.Entitlement.order_id == order_id)))
        assert sorted(e.product_name for e in entitlements) == ["Field Guide", "Pitch Deck"]
        stocked = await db.get(m.Product, deck.id)
        assert stocked is not None
        assert stocked.stock == 2
        events = dict((await db.execute(select(m.StripeEvent.type, m.StripeEvent.status))).all())
        assert events["payment_intent.succeeded"] == "processed"
        assert set(events.values()) <= {"processed", "ignored"}  # e.g. payment_intent.created is not ours to act on

    [receipt] = await mailbox.wait_for("gail@example.com")
    assert receipt["Subject"] == f"Your Cartwright receipt for order #{order.number}"
    body = body_text(receipt)
    assert "HST 13%" in body
    assert "$45.20 CAD" in body
    links = re.findall(r"http://testserver\.local/downloads/(?!resend)\S+", body)
    assert len(links) == 2
    download = await client.get(links[0].replace("http://testserver.local", ""))
    assert download.status_code == 200
    assert download.content.startswith(b"%PDF")

    # The return page agrees, from the server's own look at the PaymentIntent.
    page = text_of((await client.get(f"/orders/{order_id}/complete")).text)
    assert f"Order #{order.number} is paid" in page
    # Stripe delivers the same events again: nothing happens twice.
    async with runtime.db() as db:
        stored = list(await db.scalars(select(m.StripeEvent)))
    for event in stored:
        response = await deliver(client, event.payload)
        assert response.status_code == 200
        assert response.json()["duplicate"] is True
    await settle(stripe_emulator, queue, runtime)
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Entitlement)) == 2
        stocked = await db.get(m.Product, deck.id)
        assert stocked is not None
        assert stocked.stock == 2
        receipts = await db.scalar(
            select(func.count()).select_from(m.EmailMessage).where(m.EmailMessage.kind == "receipt")
        )
        assert receipts == 1


async def test_return_page_fulfils_when_it_sees_the_payment_first(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings, mailbox: Mailbox
) -> None:
    # No worker runs: the webhook's job waits, and the return page must not.
    product = await digital_product(factory, settings.storage_dir, price=1000)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="quick@example.com")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id)
    page = await client.get(f"/orders/{order_id}/complete?redirect_status=succeeded&payment_intent={intent_id}")
    assert page.status_code == 200
    assert "is paid" in text_of(page.text)
    assert "Download" in page.text
    order = await load_order(runtime, order_id)
    assert order.status == "paid"
    assert order.fulfilled_at is not None
    # The cart no longer holds what was bought.
    cart = text_of((await client.get("/cart")).text)
    assert product.name not in cart


async def test_the_return_page_does_not_trust_the_query_string(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await add_to_cart(client, await factory.product())
    order_id = await place_order(client)
    intent_id = await open_pay_page(client, order_id)
    response = await client.get(f"/orders/{order_id}/complete?redirect_status=succeeded&payment_intent={intent_id}")
    # Not paid at Stripe: back to the payment form, not a confirmation.
    assert response.status_code == 303
    assert response.headers["location"] == f"/orders/{order_id}/pay"
    assert (await load_order(runtime, order_id)).status == "pending"


async def test_webhook_and_return_page_racing_fulfil_once(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings
) -> None:
    product = await digital_product(factory, settings.storage_dir, price=1000, stock=10)
    await add_to_cart(client, product)
    order_id = await place_order(client)
    intent_id = await open_pay_page(client, order_id)
    intent = as_dict(await confirm(runtime, intent_id))

    async def fulfil() -> None:
        async with runtime.db() as db:
            await PaymentSync(HandlerContext(db, runtime.stripe, settings, None, runtime.redis)).apply_payment_intent(
                intent
            )

    await asyncio.gather(*(fulfil() for _ in range(4)))
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Entitlement)) == 1
        assert (
            await db.scalar(select(func.count()).select_from(m.EmailMessage).where(m.EmailMessage.kind == "receipt"))
            == 1
        )
        row = await db.get(m.Product, product.id)
        assert row is not None
        assert row.stock == 9


async def test_a_declined_card_keeps_the_order_and_its_payment_intent_for_a_retry(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await add_to_cart(client, await factory.product(price=3000))
    order_id = await place_order(client)
    intent_id = await open_pay_page(client, order_id)
    declined = await confirm(runtime, intent_id, "pm_card_chargeDeclined")
    assert getattr(declined, "code", None) == "card_declined"
    await settle(stripe_emulator, queue, runtime)
    async with runtime.db() as db:
        payment = await db.scalar(select(m.Payment).where(m.Payment.order_id == order_id))
        assert payment is not None
        assert payment.status == "failed"
        assert "declined" in payment.failure_message
    # The return page (3-D Secure or a reload) sends the customer back to the form with Stripe's message.
    back = await client.get(f"/orders/{order_id}/complete")
    assert back.status_code == 303
    retry = await client.get(f"/orders/{order_id}/pay")
    assert "Your card was declined" in text_of(retry.text)
    assert await open_pay_page(client, order_id) == intent_id  # the same PaymentIntent, not a second one
    await confirm(runtime, intent_id)
    await settle(stripe_emulator, queue, runtime)
    assert (await load_order(runtime, order_id)).status == "paid"
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Order)) == 1
        payment = await db.scalar(select(m.Payment).where(m.Payment.order_id == order_id))
        assert payment is not None
        assert (payment.status, payment.failure_message) == ("succeeded", "")


async def test_refunds_from_stripe_update_the_order_and_revoke_downloads_when_full(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    product = await digital_product(factory, settings.storage_dir, price=2000)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="refund@example.com", region="AB", postal_code="T2P 1J9")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id)
    await settle(stripe_emulator, queue, runtime)
    assert (await load_order(runtime, order_id)).total == 2100

    await runtime.stripe.v1.refunds.create_async({"payment_intent": intent_id, "amount": 600})
    await settle(stripe_emulator, queue, runtime)
    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded) == ("partially_refunded", 600)
    async with runtime.db() as db:
        entitlement = await db.scalar(select(m.Entitlement).where(m.Entitlement.order_id == order_id))
        assert entitlement is not None
        assert entitlement.revoked_at is None

    await asyncio.to_thread(stripe_emulator.control, f"payment_intents/{intent_id}/refund", {})
    await settle(stripe_emulator, queue, runtime)
    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded) == ("refunded", 2100)
    async with runtime.db() as db:
        entitlement = await db.scalar(select(m.Entitlement).where(m.Entitlement.order_id == order_id))
        assert entitlement is not None
        assert entitlement.revoked_at is not None
        refunds = list(await db.scalars(select(m.Refund).where(m.Refund.order_id == order_id)))
        assert sorted(r.amount for r in refunds) == [600, 1500]
    notices = await mailbox.wait_for("refund@example.com", count=3)  # receipt + two refund notices
    subjects = sorted(n["Subject"] for n in notices)
    assert subjects.count(f"Refund for your Cartwright order #{order.number}") == 2


async def test_nobody_else_can_see_or_pay_an_order(
    client: httpx.AsyncClient, app: object, factory: Factory, runtime: Runtime
) -> None:
    await factory.user(email="owner@example.com")
    await factory.user(email="other@example.com")
    await sign_in(client, "owner@example.com")
    await add_to_cart(client, await factory.product())
    order_id = await place_order(client)
    assert (await client.get(f"/account/orders/{order_id}")).status_code == 200

    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 50001))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as stranger:
        for path in (f"/orders/{order_id}/pay", f"/orders/{order_id}/complete", f"/orders/{order_id}/status"):
            assert (await stranger.get(path)).status_code == 404, path
        await sign_in(stranger, "other@example.com")
        for path in (
            f"/orders/{order_id}/pay",
            f"/orders/{order_id}/complete",
            f"/account/orders/{order_id}",
        ):
            assert (await stranger.get(path)).status_code == 404, path
        history = text_of((await stranger.get("/account/orders")).text)
        assert "No orders yet" in history


async def test_order_history_lists_own_orders_newest_first_with_htmx_pages(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    rate_limits(place_order_ip=(20, 600))  # twelve orders from one address, to fill two pages
    await factory.user(email="history@example.com")
    await sign_in(client, "history@example.com")
    product = await factory.product()
    numbers = []
    for _ in range(12):
        await add_to_cart(client, product)
        numbers.append((await load_order(runtime, await place_order(client))).number)
    first = text_of((await client.get("/account/orders")).text)
    assert f"#{numbers[-1]}" in first
    assert f"#{numbers[0]}" not in first
    assert "Page 1 of 2" in first
    second = await client.get("/account/orders?page=2", headers={"HX-Request": "true"})
    assert second.status_code == 200
    assert "<html" not in second.text  # a fragment for HTMX
    assert f"#{numbers[0]}" in text_of(second.text)


async def test_a_payment_takes_only_what_it_bought_out_of_the_cart(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    # The cart is not emptied at order placement (the customer may come back from the pay page). A customer who
    # puts the same product in again, for a second order, before the first payment lands keeps it (the cluster
    # test's second purchase once found an empty cart and a 409 at checkout).
    user = await factory.user(email="again@example.com")
    await sign_in(client, "again@example.com")
    guide = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500)
    deck = await digital_product(factory, settings.storage_dir, name="Pitch Deck", price=2500)
    await add_to_cart(client, guide)
    order_id = await place_order(client, email="again@example.com")
    intent_id = await open_pay_page(client, order_id)
    await add_to_cart(client, guide)  # one more, for a friend
    await add_to_cart(client, deck)
    await confirm(runtime, intent_id)
    await settle(stripe_emulator, queue, runtime)
    assert (await load_order(runtime, order_id)).status == "paid"
    async with runtime.db() as db:
        rows = await db.scalars(select(m.CartItem).where(m.CartItem.user_id == user.id))
        cart = {row.product_id: row.quantity for row in rows}
    assert cart == {guide.id: 1, deck.id: 1}
    page = text_of((await client.get("/cart")).text)
    assert "Field Guide" in page and "Pitch Deck" in page
