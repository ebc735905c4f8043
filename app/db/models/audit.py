from __future__ import annotations

from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.models.commerce import JsonB


class AuditEntry(UUIDv7AuditBase):
    """One staff action that changed data. Append-only: the audit service inserts, nothing updates or deletes."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_created", "created_at"),
        Index("ix_audit_log_target", "target_type", "target_id"),
    )

    # Kept as text too: the row must still say who acted after the account is gone.
    actor_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True)
    actor_email: Mapped[str] = mapped_column(String(320), default="")
    actor_role: Mapped[str] = mapped_column(String(16), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)  # "<noun>.<verb>": "order.refund", "user.role"
    target_type: Mapped[str] = mapped_column(String(40), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    target_label: Mapped[str] = mapped_column(String(200), default="")  # "#1042", "jane@example.com"
    summary: Mapped[str] = mapped_column(Text, default="")
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonB, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonB, default=None)
    ip: Mapped[str] = mapped_column(String(64), default="")
