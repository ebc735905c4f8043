"""Orders in the back office: list and search, the order page, and staff refunds through Stripe and its webhooks."""

from __future__ import annotations

import csv
import io
import re
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import func, select

from app.db import models as m
from app.lib.money import format_money
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.resources.balance_transactions import card_fee
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
    settle,
)
from tests.support import Mailbox, body_text

pytestmark = pytest.mark.usefixtures("app_server")


async def paid_order(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    emulator: EmulatorServer,
    queue: Queue,
    *,
    email: str,
    price: int = 2000,
) -> tuple[UUID, str]:
    """A guest's paid order (Alberta: 5% GST) and its PaymentIntent id; the client is signed out afterwards."""
    product = await digital_product(factory, settings.storage_dir, price=price)
    await add_to_cart(client, product)
    order_id = await place_order(client, email=email, region="AB", postal_code="T2P 1J9")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id)
    await settle(emulator, queue, runtime)
    assert (await load_order(runtime, order_id)).status == "paid"
    client.cookies.clear()
    return order_id, intent_id


async def refund_form(client: httpx.AsyncClient, order_id: UUID) -> str:
    page = await client.get(f"/admin/orders/{order_id}")
    assert page.status_code == 200, page.text
    match = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert match, "the order page has no refund form"
    return match.group(1)


async def stripe_refunds(runtime: Runtime, intent_id: str) -> list[int]:
    listing = await runtime.stripe.v1.refunds.list_async({"payment_intent": intent_id})
    return [r.amount async for r in listing.auto_paging_iter()]


async def test_admin_lists_and_searches_orders(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    first, _ = await paid_order(client, factory, runtime, settings, stripe_emulator, queue, email="ann@example.com")
    await add_to_cart(client, await factory.product(price=500))
    pending = await place_order(client, email="bob@example.com", region="AB", postal_code="T2P 1J9")
    client.cookies.clear()
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")

    page = await client.get("/admin/orders")
    assert page.status_code == 200, page.text[-3000:]
    assert "<html" in page.text
    text = text_of(page.text)
    assert text.index("bob@example.com") < text.index("ann@example.com")  # newest first
    assert "$21.00 CAD" in text
    assert 'hx-push-url="true"' in page.text

    fragment = await client.get("/admin/orders?q=ann%40example&status=", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert 'id="admin-orders"' in fragment.text
    assert fragment.headers["vary"].startswith("HX-Request")
    assert "ann@example.com" in fragment.text and "bob@example.com" not in fragment.text

    number = (await load_order(runtime, pending)).number
    by_number = text_of((await client.get(f"/admin/orders?q=%23{number}", headers={"HX-Request": "true"})).text)
    assert "bob@example.com" in by_number and "ann@example.com" not in by_number
    paid_only = text_of((await client.get("/admin/orders?status=paid", headers={"HX-Request": "true"})).text)
    assert "ann@example.com" in paid_only and "bob@example.com" not in paid_only

    detail = await client.get(f"/admin/orders/{first}")
    assert detail.status_code == 200
    body = text_of(detail.text)
    assert "GST 5%" in body
    assert "payment_intent.succeeded" in body  # the webhook events about its PaymentIntent
    assert "receipt" in body  # the email sent
    assert "Payment received." in body  # the timeline
    assert (await client.get(f"/admin/orders/{UUID(int=0)}")).status_code == 404


async def test_support_refunds_part_then_the_rest_and_downloads_are_revoked(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    order_id, intent_id = await paid_order(
        client, factory, runtime, settings, stripe_emulator, queue, email="cara@example.com"
    )
    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")

    token = await refund_form(client, order_id)
    form = {"amount": "6.00", "reason": "Chapter 3 missing", "form_token": token}
    response = await post_form(client, f"/admin/orders/{order_id}/refunds", form, htmx=True)
    assert response.status_code == 200, response.text
    assert response.headers["hx-redirect"] == f"/admin/orders/{order_id}"
    # The same form submitted again (a double click) replays the first refund instead of creating a second.
    again = await post_form(client, f"/admin/orders/{order_id}/refunds", form, htmx=True)
    assert again.status_code == 200, again.text
    assert await stripe_refunds(runtime, intent_id) == [600]

    await settle(stripe_emulator, queue, runtime)
    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded) == ("partially_refunded", 600)
    page = await client.get(f"/admin/orders/{order_id}")
    text = text_of(page.text)
    assert "Refund requested; the order updates when Stripe confirms it." in text
    assert "$6.00 CAD" in text and "succeeded" in text
    assert text.count("requested by support@example.com: Chapter 3 missing") == 1
    assert "charge.refunded" in text  # an event about the charge, found through its payment_intent field
    async with runtime.db() as db:
        refund = await db.scalar(select(m.Refund).where(m.Refund.order_id == order_id))
        assert refund is not None and refund.reason == "requested_by_customer"
        # One audit row for the refund, the double click included: who, what, on which order, from where.
        audit = list(await db.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "order.refund")))
        assert [(a.actor_email, a.target_id, a.after, a.ip) for a in audit] == [
            (
                "support@example.com",
                str(order_id),
                {"refund_id": refund.stripe_refund_id, "amount": 600, "currency": "CAD"},
                "203.0.113.7",
            )
        ]

    # Empty amount: everything still refundable.
    token = await refund_form(client, order_id)
    response = await post_form(
        client, f"/admin/orders/{order_id}/refunds", {"amount": "", "reason": "Goodwill", "form_token": token}
    )
    assert response.status_code == 303, response.text
    await settle(stripe_emulator, queue, runtime)
    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded) == ("refunded", 2100)
    assert sorted(await stripe_refunds(runtime, intent_id)) == [600, 1500]
    async with runtime.db() as db:
        entitlement = await db.scalar(select(m.Entitlement).where(m.Entitlement.order_id == order_id))
        assert entitlement is not None and entitlement.revoked_at is not None
    assert 'name="form_token"' not in (await client.get(f"/admin/orders/{order_id}")).text  # nothing left to refund


async def test_invalid_refunds_are_refused_in_place_and_reach_no_stripe(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    order_id, intent_id = await paid_order(
        client, factory, runtime, settings, stripe_emulator, queue, email="dan@example.com"
    )
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    token = await refund_form(client, order_id)

    too_much = await post_form(
        client,
        f"/admin/orders/{order_id}/refunds",
        {"amount": "21.01", "reason": "Oops", "form_token": token},
        htmx=True,
    )
    assert too_much.status_code == 422
    assert "<html" not in too_much.text and 'id="refund-form"' in too_much.text
    assert "At most $21.00 CAD can still be refunded." in text_of(too_much.text)
    assert 'value="21.01"' in too_much.text

    no_reason = await post_form(
        client, f"/admin/orders/{order_id}/refunds", {"amount": "1.00", "reason": " ", "form_token": token}
    )
    assert no_reason.status_code == 422
    assert "<html" in no_reason.text  # a plain post gets the whole page back
    assert "Say why the order is refunded" in text_of(no_reason.text)

    nonsense = await post_form(
        client, f"/admin/orders/{order_id}/refunds", {"amount": "abc", "reason": "x", "form_token": token}, htmx=True
    )
    assert nonsense.status_code == 422
    assert "Enter an amount such as 12.50." in text_of(nonsense.text)

    assert await stripe_refunds(runtime, intent_id) == []
    async with runtime.db() as db:
        kinds = list(await db.scalars(select(m.OrderEvent.kind).where(m.OrderEvent.order_id == order_id)))
        assert "refund_requested" not in kinds


async def test_customers_cannot_list_orders_or_refund(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="nosy@example.com")
    await sign_in(client, "nosy@example.com")
    assert (await client.get("/admin/orders")).status_code == 403
    response = await post_form(
        client, f"/admin/orders/{UUID(int=1)}/refunds", {"amount": "1", "reason": "x", "form_token": "t"}
    )
    assert response.status_code == 403


async def test_a_refund_stripe_refuses_shows_its_message_and_records_nothing(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings
) -> None:
    # No worker: the return page fulfils the order, and our records never hear of the refund made behind our back.
    await add_to_cart(client, await digital_product(factory, settings.storage_dir, price=1000))
    order_id = await place_order(client, email="eve@example.com")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id)
    await client.get(f"/orders/{order_id}/complete?redirect_status=succeeded&payment_intent={intent_id}")
    assert (await load_order(runtime, order_id)).status == "paid"
    await runtime.stripe.v1.refunds.create_async({"payment_intent": intent_id})
    client.cookies.clear()
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")

    token = await refund_form(client, order_id)
    response = await post_form(
        client,
        f"/admin/orders/{order_id}/refunds",
        {"amount": "1.00", "reason": "Late", "form_token": token},
        htmx=True,
    )
    assert response.status_code == 422, response.text
    assert "Stripe refused the refund" in text_of(response.text)
    assert len(await stripe_refunds(runtime, intent_id)) == 1
    async with runtime.db() as db:
        kinds = list(await db.scalars(select(m.OrderEvent.kind).where(m.OrderEvent.order_id == order_id)))
        assert "refund_requested" not in kinds


async def test_support_resends_the_receipt_and_reissues_exhausted_downloads(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    order_id, _ = await paid_order(client, factory, runtime, settings, stripe_emulator, queue, email="dee@example.com")
    await mailbox.wait_for("dee@example.com")  # the original receipt
    async with runtime.db() as db:  # every download used up
        entitlement = await db.scalar(select(m.Entitlement).where(m.Entitlement.order_id == order_id))
        assert entitlement is not None
        entitlement.download_count = entitlement.download_limit
        await db.commit()
    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")

    response = await post_form(client, f"/admin/orders/{order_id}/resend-receipt", {})
    assert response.status_code == 303
    [_, again] = await mailbox.wait_for("dee@example.com", count=2)
    assert again["Subject"].startswith("Your Cartwright receipt for order #")

    response = await post_form(client, f"/admin/orders/{order_id}/reissue-downloads", {})
    assert response.status_code == 303
    [*_, links_email] = await mailbox.wait_for("dee@example.com", count=3)
    body = body_text(links_email)
    assert "5 of 5 downloads left" in body
    [link] = re.findall(r"http://testserver\.local/downloads/(?!resend)\S+", body)
    page = text_of((await client.get(f"/admin/orders/{order_id}")).text)
    assert "Fresh links for 1 download sent to dee@example.com; download counts reset." in page
    assert "Receipt sent again to dee@example.com." in page  # on the timeline
    client.cookies.clear()  # the buyer, a guest, follows the link
    download = await client.get(link.replace("http://testserver.local", ""))
    assert download.status_code == 200
    async with runtime.db() as db:
        actions = list(await db.scalars(select(m.AuditEntry.action).order_by(m.AuditEntry.created_at)))
    assert actions == ["order.resend_receipt", "order.reissue_downloads"]


async def test_nothing_to_reissue_after_a_full_refund_says_so(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    async with runtime.db() as db:
        order = m.Order(
            number=777,
            email="gone@example.com",
            billing_name="Gone",
            country="CA",
            status="refunded",
            currency="CAD",
            subtotal=1000,
            tax_total=0,
            total=1000,
            amount_refunded=1000,
        )
        db.add(order)
        await db.commit()
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    response = await post_form(client, f"/admin/orders/{order.id}/reissue-downloads", {})
    assert response.status_code == 303
    page = text_of((await client.get(f"/admin/orders/{order.id}")).text)
    assert "This order has no downloads to reissue (none, or all revoked by a refund)." in page
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.AuditEntry)) == 0


async def test_the_order_page_and_the_export_show_stripes_fee_and_the_net(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    """Issue #16 item 7: the fee comes from the charge's balance transaction; Stripe keeps it on a refund."""
    order_id, intent_id = await paid_order(
        client, factory, runtime, settings, stripe_emulator, queue, email="fees@example.com"
    )
    await runtime.stripe.v1.refunds.create_async({"payment_intent": intent_id, "amount": 500})
    await settle(stripe_emulator, queue, runtime)
    async with runtime.db() as db:
        order = await db.get(m.Order, order_id)
        payment = await db.scalar(select(m.Payment).where(m.Payment.order_id == order_id))
    assert order is not None and payment is not None
    fee = card_fee(order.total)
    assert (payment.fee, payment.net) == (fee, order.total - fee)
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    page = text_of((await client.get(f"/admin/orders/{order_id}")).text)
    assert f"Stripe fee {format_money(fee, 'CAD')}" in page
    assert f"Net after fees {format_money(order.total - fee - 500, 'CAD')}" in page
    export = await client.get("/admin/orders/export.csv")
    [header, row] = list(csv.reader(io.StringIO(export.text)))[:2]
    values = dict(zip(header, row, strict=True))
    assert values["stripe_fee"] == f"{fee / 100:.2f}"
    assert values["net_after_fees"] == f"{(order.total - fee - 500) / 100:.2f}"
