"""The full re-sync with Stripe: one row per run (its log and its resume point), and a fingerprint per mirrored
Stripe object (so a second sync can tell created/updated/unchanged without keeping Stripe's JSON twice)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.models.commerce import JsonB


class SyncStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SyncTrigger(StrEnum):
    MANUAL = "manual"  # "Sync now" in the admin
    CRON = "cron"
    CLI = "cli"


class SyncRun(UUIDv7AuditBase):
    """One full re-sync. ``progress`` holds, per resource, the cursor of the last completed page: the resume point."""

    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_status_started", "status", "started_at"),)

    started_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    trigger: Mapped[str] = mapped_column(String(16), default=SyncTrigger.MANUAL.value)
    status: Mapped[str] = mapped_column(String(16), default=SyncStatus.RUNNING.value)
    requested_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    requested_by: Mapped[str] = mapped_column(String(320), default="")  # who, as shown (kept if the user goes)
    # {"since": "2026-01-31" | None, "only": ["customers", ...] | None}
    options: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    # {"customers": {"created": 0, "updated": 0, "unchanged": 0, "skipped": 0, "failed": 0}, ...}
    counts: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    # {"customers": {"objects": 250, "pages": 3, "cursor": "cus_...", "done": false}, ...}
    progress: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    errors: Mapped[list[str]] = mapped_column(JsonB, default=list)
    divergences: Mapped[list[str]] = mapped_column(JsonB, default=list)
    current_resource: Mapped[str] = mapped_column(String(32), default="")
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # A run that continued an interrupted one (cancelled, failed or crashed) from its last completed page.
    resumed_from_id: Mapped[UUID | None] = mapped_column(ForeignKey("sync_runs.id", ondelete="SET NULL"), default=None)
    duration_ms: Mapped[int | None] = mapped_column(default=None)
    summary: Mapped[str] = mapped_column(Text, default="")

    @property
    def is_finished(self) -> bool:
        return self.status != SyncStatus.RUNNING


class StripeObject(UUIDv7AuditBase):
    """A Stripe object the sync has seen: its id, type and a fingerprint of its content (not the content)."""

    __tablename__ = "stripe_objects"

    stripe_id: Mapped[str] = mapped_column(String(255), unique=True)
    object_type: Mapped[str] = mapped_column(String(40), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    stripe_created: Mapped[int] = mapped_column(default=0)
