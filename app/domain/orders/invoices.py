"""Invoices and credit notes for one-off orders (#13 item 7): gap-free numbers, and the view model that both the
printable page and the PDF are built from.

Numbering: ``document_counters`` holds the last number of each sequence. A number is taken with
``UPDATE … SET last_value = last_value + 1 … RETURNING last_value`` inside the transaction that records the document,
so the counter row stays locked until that transaction commits or rolls back: concurrent issuers queue (a row lock on
PostgreSQL, the database write lock on SQLite), nobody shares a number, and a rolled-back issue gives its number back
(no gaps). An order's invoice is issued in the fulfilment transaction (:func:`issue_invoice`).

Documents that did not exist yet are issued on first view (:func:`ensure_documents`), still from the same counter:
orders paid before invoices existed get their number the first time anyone opens their invoice, and a refund gets
its credit note the first time the invoice is opened after the refund succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.lib.exceptions import NotFoundError
from app.lib.localtime import format_local
from app.lib.shop_settings import ShopSettings

INVOICE_PREFIX = "INV-"
CREDIT_NOTE_PREFIX = "CN-"
DATE_FORMAT = "%d %b %Y"


def invoice_label(number: int) -> str:
    return f"{INVOICE_PREFIX}{number:06d}"


def credit_note_label(number: int) -> str:
    return f"{CREDIT_NOTE_PREFIX}{number:06d}"


async def _serialise(db: AsyncSession, order_id: Any) -> None:
    """Make concurrent issuers for one order queue here, so the "already issued?" check below sees the winner's row.

    PostgreSQL: the order's row lock (fulfilment already holds it). SQLite: any write takes the database lock, and a
    write transaction reads the latest data; the counter rows' insert-if-absent is that write (and is needed anyway:
    the counters are created on first use)."""
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(select(m.Order.id).where(m.Order.id == order_id).with_for_update(key_share=True))
    for sequence in (m.INVOICE_SEQUENCE, m.CREDIT_NOTE_SEQUENCE):
        await insert_if_absent(db, m.DocumentCounter, "name", {"name": sequence, "last_value": 0})


async def next_number(db: AsyncSession, sequence: str) -> int:
    """The next number of ``sequence``, locked to this transaction until it ends (see the module docstring)."""
    await insert_if_absent(db, m.DocumentCounter, "name", {"name": sequence, "last_value": 0})
    result = await db.execute(
        update(m.DocumentCounter)
        .where(m.DocumentCounter.name == sequence)
        .values(last_value=m.DocumentCounter.last_value + 1, updated_at=datetime.now(UTC))
        .returning(m.DocumentCounter.last_value)
    )
    return int(result.scalar_one())


async def issue_invoice(db: AsyncSession, order: m.Order) -> int:
    """The order's invoice number, issued now if it has none. Call it inside the transaction that fulfils the order;
    it does not commit."""
    await _serialise(db, order.id)
    existing = await db.scalar(select(m.OrderInvoice.number).where(m.OrderInvoice.order_id == order.id))
    if existing is not None:
        return int(existing)
    number = await next_number(db, m.INVOICE_SEQUENCE)
    db.add(m.OrderInvoice(order_id=order.id, number=number, issued_at=datetime.now(UTC)))
    await db.flush()
    return number


async def ensure_documents(db: AsyncSession, order: m.Order) -> tuple[m.OrderInvoice, list[m.CreditNote]]:
    """The order's invoice and credit notes, issuing what is missing (an order paid before invoices existed, a refund
    that succeeded since). The caller commits. Raises ``NotFoundError`` for an order that was never paid."""
    if order.fulfilled_at is None or not order.is_paid:
        raise NotFoundError("This order has no invoice: it hasn't been paid.")
    await _serialise(db, order.id)
    invoice = await db.scalar(select(m.OrderInvoice).where(m.OrderInvoice.order_id == order.id))
    if invoice is None:
        invoice = m.OrderInvoice(
            order_id=order.id, number=await next_number(db, m.INVOICE_SEQUENCE), issued_at=datetime.now(UTC)
        )
        db.add(invoice)
    notes = {
        note.refund_id: note for note in await db.scalars(select(m.CreditNote).where(m.CreditNote.order_id == order.id))
    }
    refunds = await db.scalars(
        select(m.Refund)
        .where(m.Refund.order_id == order.id, m.Refund.status == "succeeded")
        .order_by(m.Refund.created_at, m.Refund.id)
    )
    for refund in refunds:
        if refund.id not in notes:
            notes[refund.id] = m.CreditNote(
                order_id=order.id,
                refund_id=refund.id,
                number=await next_number(db, m.CREDIT_NOTE_SEQUENCE),
                amount=refund.amount,
                currency=refund.currency.upper(),
                issued_at=datetime.now(UTC),
            )
            db.add(notes[refund.id])
    await db.flush()
    return invoice, sorted(notes.values(), key=lambda note: note.number)


# --- the view model: the HTML page and the PDF both render exactly this ------------------------------------------


@dataclass(frozen=True, slots=True)
class Amount:
    label: str
    amount: int


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    description: str
    quantity: int
    unit_price: int
    subtotal: int
    discount: int
    tax: int
    total: int


@dataclass(frozen=True, slots=True)
class CreditNoteView:
    number: str
    issued_on: str
    net: int  # negative
    taxes: list[Amount]  # negative, per component
    total: int  # negative
    note: str = ""


@dataclass(frozen=True, slots=True)
class InvoiceView:
    number: str
    issued_on: str
    order_number: str
    currency: str
    seller_name: str
    seller_address: list[str]
    seller_email: str
    gst_hst_number: str
    qst_number: str
    buyer_name: str
    buyer_email: str
    buyer_address: str
    lines: list[InvoiceLine]
    subtotal: int
    discount: int
    discount_label: str
    taxes: list[Amount]
    total: int
    credit_notes: list[CreditNoteView] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return f"invoice-{self.number}.pdf"


def _credit_note_taxes(order: m.Order, amount: int) -> list[Amount]:
    """The refunded share of each tax component (a credit note lets the buyer reverse the credit they claimed)."""
    if order.total <= 0:
        return []
    return [
        Amount(str(tax.get("label") or tax.get("code") or "Tax"), -round(amount * int(tax["amount"]) / order.total))
        for tax in order.tax_breakdown
        if int(tax.get("amount") or 0)
    ]


def invoice_view(
    order: m.Order,
    invoice: m.OrderInvoice,
    credit_notes: list[m.CreditNote],
    refund_status: dict[Any, str],
    seller: ShopSettings,
) -> InvoiceView:
    """Everything an invoice shows, as plain values (dates already in the shop's time zone)."""
    zone = seller.zone
    notes: list[CreditNoteView] = []
    for note in credit_notes:
        taxes = _credit_note_taxes(order, note.amount)
        status = refund_status.get(note.refund_id, "succeeded")
        notes.append(
            CreditNoteView(
                number=credit_note_label(note.number),
                issued_on=format_local(note.issued_at, DATE_FORMAT, zone),
                net=-note.amount - sum(t.amount for t in taxes),
                taxes=taxes,
                total=-note.amount,
                # A refund can fail after it succeeded (the bank returns it): the number stays used, the note says so.
                note="Void: the refund did not go through." if status == "failed" else "",
            )
        )
    buyer_address = " ".join(part for part in (order.postal_code, order.region, order.country) if part)
    return InvoiceView(
        number=invoice_label(invoice.number),
        issued_on=format_local(invoice.issued_at, DATE_FORMAT, zone),
        order_number=order.display_number,
        currency=order.currency.upper(),
        seller_name=seller.seller_name,
        seller_address=[line for line in seller.address.splitlines() if line.strip()],
        seller_email=seller.support_email,
        gst_hst_number=seller.gst_hst_number,
        qst_number=seller.qst_number,
        buyer_name=order.billing_name,
        buyer_email=order.email,
        buyer_address=buyer_address,
        lines=[
            InvoiceLine(
                description=line.product_name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                subtotal=line.subtotal,
                discount=line.discount,
                tax=line.tax,
                total=line.total,
            )
            for line in order.lines
        ],
        subtotal=order.subtotal,
        discount=order.discount_total,
        discount_label=f"Discount ({order.promo_code})" if order.promo_code else "Discount",
        taxes=[
            Amount(str(tax.get("label") or tax.get("code") or "Tax"), int(tax.get("amount") or 0))
            for tax in order.tax_breakdown
        ],
        total=order.total,
        credit_notes=notes,
    )


async def invoice_for(db: AsyncSession, order: m.Order, seller: ShopSettings) -> InvoiceView:
    """The order's invoice (issuing what is missing, see :func:`ensure_documents`) as a view model. Flushes; the
    request's autocommit keeps a number issued here."""
    invoice, notes = await ensure_documents(db, order)
    statuses = {
        refund.id: refund.status for refund in await db.scalars(select(m.Refund).where(m.Refund.order_id == order.id))
    }
    return invoice_view(order, invoice, notes, statuses, seller)
