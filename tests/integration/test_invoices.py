"""Invoices for one-off orders (#13 item 7): a gap-free number issued at fulfilment, the seller from the shop
settings, tax per component, refunds as credit notes, the same as a PDF, and only for the owner and staff."""

from __future__ import annotations

import asyncio
import io
import re
from uuid import UUID

import httpx
import pytest
from pypdf import PdfReader
from saq import Queue, Worker
from sqlalchemy import delete, select

from app.db import models as m
from app.domain.orders.fulfilment import PaymentSync
from app.domain.orders.invoices import issue_invoice
from app.lib.handler_context import HandlerContext
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.lib.shop_settings import announce_change
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory, SetLimits
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

SELLER = {
    "legal_name": "Cartwright Digital Inc.",
    "address": "100 King St W\nToronto ON M5X 1A9",
    "gst_hst_number": "123456789 RT0001",
    "qst_number": "1234567890 TQ0001",
    "support_email": "help@cartwright.test",
    "receipt_footer": "Merci et à bientôt.",
}
QUEBEC = {"region": "QC", "postal_code": "H2X 1Y4"}


async def set_seller(runtime: Runtime) -> None:
    async with runtime.db() as db:
        db.add(m.ShopSettingsRow(**SELLER))
        await db.commit()
    await announce_change(runtime.redis)


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


async def bought(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    emulator: EmulatorServer,
    queue: Queue,
    *,
    price: int = 2000,
) -> tuple[UUID, str]:
    """The signed-in customer's paid order (Quebec: GST 5% + QST 9.975%) and its PaymentIntent id."""
    product = await digital_product(factory, settings.storage_dir, price=price, name="Field Guide")
    await add_to_cart(client, product)
    order_id = await place_order(client, **QUEBEC)
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id)
    await settle(emulator, queue, runtime)
    assert (await load_order(runtime, order_id)).status == "paid"
    return order_id, intent_id


async def test_the_customer_reads_the_invoice_page_and_pdf_of_a_paid_order(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    await set_seller(runtime)
    await factory.user(email="buyer@example.com", name="Marie Tremblay")
    await sign_in(client, "buyer@example.com")
    order_id, _ = await bought(client, factory, runtime, settings, stripe_emulator, queue)

    # The number was issued by the fulfilment, not by the first view.
    async with runtime.db() as db:
        issued = await db.scalar(select(m.OrderInvoice).where(m.OrderInvoice.order_id == order_id))
    assert issued is not None
    assert issued.number == 1
    # The receipt email carries the support address, the footer and the seller from the settings.
    receipt = (await mailbox.wait_for("buyer@example.com"))[0]
    ending = "Questions? Write to help@cartwright.test.\n\nMerci et à bientôt.\n\n— Cartwright Digital Inc."
    assert ending in body_text(receipt).replace("\r\n", "\n")

    detail = await client.get(f"/account/orders/{order_id}")
    assert f'href="/account/orders/{order_id}/invoice"' in detail.text
    assert f'href="/account/orders/{order_id}/invoice.pdf"' in detail.text

    page = await client.get(f"/account/orders/{order_id}/invoice")
    assert page.status_code == 200, page.text
    text = text_of(page.text)
    assert "Invoice INV-000001" in text
    assert "Cartwright Digital Inc." in text
    assert "GST/HST registration number: 123456789 RT0001" in text
    assert "QST registration number: 1234567890 TQ0001" in text
    assert "Billed to Gail Guest buyer@example.com H2X 1Y4 QC CA" in text  # the buyer as billed
    assert "GST 5% $1.00 CAD" in text  # 5% of $20.00
    assert "QST 9.975% $2.00 CAD" in text  # 9.975% of $20.00, rounded
    assert "Total $23.00 CAD" in text

    pdf = await client.get(f"/account/orders/{order_id}/invoice.pdf")
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == 'attachment; filename="invoice-INV-000001.pdf"'
    content = pdf_text(pdf.content)
    for expected in (
        "Invoice INV-000001",
        "Cartwright Digital Inc.",
        "GST/HST registration number: 123456789 RT0001",
        "QST registration number: 1234567890 TQ0001",
        "Billed to",
        "Gail Guest",
        "Field Guide",
        "GST 5%",
        "QST 9.975%",
        "$23.00 CAD",
    ):
        assert expected in content, (expected, content)

    # Viewing again issues nothing new.
    await client.get(f"/account/orders/{order_id}/invoice.pdf")
    async with runtime.db() as db:
        counter = await db.scalar(select(m.DocumentCounter).where(m.DocumentCounter.name == m.INVOICE_SEQUENCE))
    assert counter is not None
    assert counter.last_value == 1


async def test_another_customer_gets_404_and_staff_read_any_invoice(  # reliability case A5
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await factory.user(email="owner@example.com")
    await sign_in(client, "owner@example.com")
    order_id, _ = await bought(client, factory, runtime, settings, stripe_emulator, queue)
    client.cookies.clear()

    await factory.user(email="other@example.com")
    await sign_in(client, "other@example.com")
    for path in (f"/account/orders/{order_id}/invoice", f"/account/orders/{order_id}/invoice.pdf"):
        response = await client.get(path)
        assert response.status_code == 404, path  # exactly like an order that does not exist
        assert "INV-" not in response.text
    assert (await client.get(f"/admin/orders/{order_id}/invoice")).status_code == 403
    assert (await client.get(f"/admin/orders/{order_id}/invoice.pdf")).status_code == 403
    client.cookies.clear()

    anonymous = await client.get(f"/account/orders/{order_id}/invoice.pdf")
    assert anonymous.status_code in {302, 303, 401}
    assert anonymous.headers.get("content-type") != "application/pdf"

    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")
    admin_page = await client.get(f"/admin/orders/{order_id}")
    assert f'href="/admin/orders/{order_id}/invoice"' in admin_page.text
    page = await client.get(f"/admin/orders/{order_id}/invoice")
    assert page.status_code == 200
    assert "Invoice INV-000001" in text_of(page.text)
    pdf = await client.get(f"/admin/orders/{order_id}/invoice.pdf")
    assert "INV-000001" in pdf_text(pdf.content)


async def test_a_guest_opens_the_invoice_from_the_link_in_their_receipt(  # reliability case A5
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    # A guest has no account page to open the invoice from: the receipt carries a signed link to it.
    await set_seller(runtime)
    order_id, _ = await bought(client, factory, runtime, settings, stripe_emulator, queue)
    receipt = body_text((await mailbox.wait_for("guest@example.com"))[0])
    match = re.search(r"Your invoice \(to print or save as PDF\): (\S+)", receipt)
    assert match, receipt
    path = httpx.URL(match.group(1)).path
    assert path.startswith("/invoices/")

    client.cookies.clear()  # another browser: the link alone opens it
    page = await client.get(path)
    assert page.status_code == 200, page.text
    assert page.headers["referrer-policy"] == "no-referrer"  # the link is the key: it must not leak onwards
    text = text_of(page.text)
    assert "Invoice INV-000001" in text and "Total $23.00 CAD" in text and "Cartwright Digital Inc." in text
    assert f'href="{path}/pdf"' in page.text
    pdf = await client.get(f"{path}/pdf")
    assert pdf.headers["content-type"] == "application/pdf"
    assert "INV-000001" in pdf_text(pdf.content)

    # A link we did not sign, or one altered by a character, opens nothing and names no order.
    token = path.rsplit("/", 1)[1]
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for wrong in (f"/invoices/{altered}", f"/invoices/{altered}/pdf", f"/invoices/{order_id}", "/invoices/x"):
        response = await client.get(wrong)
        assert response.status_code == 404, wrong
        assert "INV-" not in response.text and "This invoice link is not valid" in text_of(response.text)


async def test_a_refund_becomes_a_credit_note_with_its_own_number_and_negative_amounts(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await set_seller(runtime)
    await factory.user(email="buyer@example.com")
    await sign_in(client, "buyer@example.com")
    order_id, _ = await bought(client, factory, runtime, settings, stripe_emulator, queue)
    client.cookies.clear()

    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    page = await client.get(f"/admin/orders/{order_id}")
    match = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert match
    form = {"amount": "11.50", "reason": "Half of it", "form_token": match.group(1)}
    refunded = await post_form(client, f"/admin/orders/{order_id}/refunds", form, htmx=True)
    assert refunded.status_code == 200, refunded.text
    await settle(stripe_emulator, queue, runtime)

    text = text_of((await client.get(f"/admin/orders/{order_id}/invoice")).text)
    assert "Invoice INV-000001" in text
    assert "Credit note CN-000001" in text
    assert "Total credited -$11.50 CAD" in text
    assert "GST 5% -$0.50 CAD" in text  # the refunded share of each tax component
    assert "QST 9.975% -$1.00 CAD" in text
    content = pdf_text((await client.get(f"/admin/orders/{order_id}/invoice.pdf")).content)
    assert "Credit note CN-000001 (refers to invoice INV-000001)" in content
    assert "-$11.50 CAD" in content


async def test_concurrent_fulfilments_never_share_or_skip_an_invoice_number(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    rate_limits: SetLimits,
) -> None:
    """Six orders fulfilled at the same moment, plus an issuer that rolls back in the middle: numbers 1..6 exactly."""
    rate_limits(place_order_ip=(100, 600), payment_intent_ip=(100, 600))
    product = await digital_product(factory, settings.storage_dir, price=1000)
    intents: list[str] = []
    orders: list[UUID] = []
    for _ in range(7):
        await add_to_cart(client, product)
        order_id = await place_order(client, email="racer@example.com", region="ON", postal_code="M5V 2T6")
        intent_id = await open_pay_page(client, order_id)
        await confirm(runtime, intent_id)
        intents.append(intent_id)
        orders.append(order_id)
    doomed_order = orders.pop()
    intents.pop()

    async def fulfil(intent_id: str) -> None:
        async with runtime.db() as db:
            ctx = HandlerContext(db, runtime.stripe, settings, None, runtime.redis)
            await PaymentSync(ctx).refresh_payment_intent(intent_id)

    taken: list[int] = []

    async def doomed() -> None:
        # Takes a number, then its transaction fails: the number must go to somebody else, leaving no gap.
        async with runtime.db() as db:
            order = await db.get(m.Order, doomed_order)
            assert order is not None
            taken.append(await issue_invoice(db, order))
            await asyncio.sleep(0)  # let the others queue behind the counter's lock
            await db.rollback()

    await asyncio.gather(doomed(), *(fulfil(intent) for intent in intents))

    async with runtime.db() as db:
        rows = list(await db.execute(select(m.OrderInvoice.order_id, m.OrderInvoice.number)))
        statuses = set(await db.scalars(select(m.Order.status).where(m.Order.id.in_(orders))))
    assert statuses == {"paid"}
    assert sorted(number for _, number in rows) == [1, 2, 3, 4, 5, 6]
    assert taken[0] in range(1, 7)  # the rolled-back number was handed out again
    assert {order_id for order_id, _ in rows} == set(orders)


async def test_an_order_paid_before_invoices_existed_gets_one_number_on_its_first_views(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    """The page and the PDF opened at the same moment, for an order without a number yet: one number, no gap."""
    await factory.user(email="early@example.com")
    await sign_in(client, "early@example.com")
    order_id, _ = await bought(client, factory, runtime, settings, stripe_emulator, queue)
    async with runtime.db() as db:  # as if it had been paid before this change: no invoice, a fresh counter
        await db.execute(delete(m.OrderInvoice))
        await db.execute(delete(m.DocumentCounter))
        await db.commit()

    page, pdf = await asyncio.gather(
        client.get(f"/account/orders/{order_id}/invoice"), client.get(f"/account/orders/{order_id}/invoice.pdf")
    )
    assert page.status_code == 200, page.text
    assert "Invoice INV-000001" in text_of(page.text)
    assert "Invoice INV-000001" in pdf_text(pdf.content)
    async with runtime.db() as db:
        numbers = list(await db.scalars(select(m.OrderInvoice.number)))
        counter = await db.scalar(select(m.DocumentCounter.last_value).where(m.DocumentCounter.name == "invoice"))
    assert numbers == [1]
    assert counter == 1
