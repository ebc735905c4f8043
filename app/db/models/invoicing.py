"""Invoices and credit notes for one-off orders, numbered without gaps.

Numbers come from ``document_counters`` (one row per sequence), bumped with ``UPDATE … RETURNING`` inside the
transaction that issues the document: the row stays locked until that transaction ends, so concurrent issuers queue
behind it (a row lock on PostgreSQL, the write lock on SQLite), and a rolled-back transaction gives its number back.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

INVOICE_SEQUENCE = "invoice"
CREDIT_NOTE_SEQUENCE = "credit_note"


class DocumentCounter(UUIDv7AuditBase):
    """The last number handed out in one sequence ("invoice", "credit_note"); rows are made by the migration."""

    __tablename__ = "document_counters"

    name: Mapped[str] = mapped_column(String(32), unique=True)
    last_value: Mapped[int] = mapped_column(default=0)


class OrderInvoice(UUIDv7AuditBase):
    """An order's invoice number, issued once, when the order is fulfilled."""

    __tablename__ = "order_invoices"

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), unique=True)
    number: Mapped[int] = mapped_column(unique=True)
    issued_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class CreditNote(UUIDv7AuditBase):
    """A refund as a tax document: its own number, the amount it takes back (shown negative)."""

    __tablename__ = "credit_notes"

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), index=True)
    refund_id: Mapped[UUID] = mapped_column(ForeignKey("refunds.id", ondelete="RESTRICT"), unique=True)
    number: Mapped[int] = mapped_column(unique=True)
    amount: Mapped[int]  # positive minor units taken back; documents print it negative
    currency: Mapped[str] = mapped_column(String(3))
    issued_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
