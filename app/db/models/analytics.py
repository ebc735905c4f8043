"""Derived analytics tables: MRR movements per customer and daily MRR snapshots, rebuilt from the mirrored
subscriptions and invoices by ``app.domain.analytics.movements`` (never edited by hand: safe to drop and rebuild).

Also declares the indexes the dashboard's range aggregates need on tables other modules own (kept here, next to
the queries' reason for them).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from advanced_alchemy.base import orm_registry
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.models.billing import CreditEntry, Subscription
from app.db.models.commerce import Order, Payment, Refund
from app.db.models.user import User


class _Base(DeclarativeBase):
    registry = orm_registry


class MovementKind(StrEnum):
    NEW = "new"  # a customer's first paid MRR
    EXPANSION = "expansion"  # more MRR (upgrade, more seats, monthly -> dearer yearly)
    CONTRACTION = "contraction"  # less MRR, still paying
    CHURN = "churn"  # down to zero
    REACTIVATION = "reactivation"  # back from zero after a churn


class MrrMovement(_Base):
    """One change of a customer's MRR. ``(user_id, seq)`` is the key, so a rebuild writes identical rows."""

    __tablename__ = "mrr_movements"
    __table_args__ = (Index("ix_mrr_movements_occurred_kind", "occurred_at", "kind"),)

    user_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # The subscription whose change caused the movement (informational; SET NULL if it is deleted).
    subscription_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("subscriptions.id", ondelete="SET NULL"), default=None
    )
    occurred_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    kind: Mapped[str] = mapped_column(String(16))  # MovementKind
    mrr_delta: Mapped[int] = mapped_column(Integer)  # minor units per month, signed
    mrr_after: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="CAD")


class MrrDailySnapshot(_Base):
    """MRR and paying subscribers at the end of each UTC day (from the first movement to the last rebuild)."""

    __tablename__ = "mrr_daily_snapshots"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    mrr: Mapped[int] = mapped_column(Integer, default=0)
    subscribers: Mapped[int] = mapped_column(Integer, default=0)


# Range aggregates on the dashboard: each filters one timestamp column by a [from, to) range.
Index("ix_orders_paid_at", Order.paid_at)
Index("ix_refunds_created_at", Refund.created_at)
Index("ix_payments_created_at", Payment.created_at)
Index("ix_users_created_at", User.created_at)
Index("ix_credit_entries_kind_created", CreditEntry.kind, CreditEntry.created_at)
Index("ix_subscriptions_trial_end", Subscription.trial_end)
