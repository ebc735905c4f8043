from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column


class EmailStatus(StrEnum):
    QUEUED = "queued"  # rendered and waiting for the worker
    SENT = "sent"  # handed to the SMTP server
    OUTBOX = "outbox"  # no SMTP_URL configured: kept here, readable at /admin/emails
    FAILED = "failed"


class EmailMessage(UUIDv7AuditBase):
    """Every email the shop sends, rendered once and kept: the outbox and the record of what went out."""

    __tablename__ = "email_messages"

    kind: Mapped[str] = mapped_column(String(40), index=True)
    to_address: Mapped[str] = mapped_column(String(320), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=EmailStatus.QUEUED.value, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class SentNotice(UUIDv7AuditBase):
    """One row per notice that must go out at most once (``"invoice-action:<invoice>:<attempt>"``): the first
    writer's insert wins, so a webhook, a retry and a sweep racing over the same fact send one email."""

    __tablename__ = "sent_notices"

    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
