"""Promo codes: a discount the shop offers under a code, mirrored as a Stripe Coupon plus Promotion Code.

Stripe applies the code to subscriptions itself; for one-time orders Stripe does not discount PaymentIntents, so
the discount is computed by us (``app/domain/promotions``) and ``promo_redemptions`` counts what was redeemed.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase, orm_registry
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import Boolean, CheckConstraint, Column, ForeignKey, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.models.billing import Plan
from app.db.models.catalog import Product

promo_code_products = Table(
    "promo_code_products",
    orm_registry.metadata,
    Column("promo_code_id", GUID, ForeignKey("promo_codes.id", ondelete="CASCADE"), primary_key=True),
    Column("product_id", GUID, ForeignKey("products.id", ondelete="CASCADE"), primary_key=True),
)

promo_code_plans = Table(
    "promo_code_plans",
    orm_registry.metadata,
    Column("promo_code_id", GUID, ForeignKey("promo_codes.id", ondelete="CASCADE"), primary_key=True),
    Column("plan_id", GUID, ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True),
)


class PromoDuration(StrEnum):
    """How long a subscription keeps the discount (one-time orders are discounted once whatever this says)."""

    ONCE = "once"
    FOREVER = "forever"
    REPEATING = "repeating"


class PromoCode(UUIDv7AuditBase):
    __tablename__ = "promo_codes"
    __table_args__ = (
        # Exactly one kind of discount: a percentage in basis points (1250 = 12.5 %) or a fixed amount.
        CheckConstraint("(percent_off_bps IS NULL) <> (amount_off IS NULL)", name="promo_code_one_kind_of_discount"),
        CheckConstraint(
            "percent_off_bps IS NULL OR (percent_off_bps > 0 AND percent_off_bps <= 10000)",
            name="promo_code_percent_range",
        ),
        CheckConstraint("amount_off IS NULL OR amount_off > 0", name="promo_code_amount_positive"),
        CheckConstraint("times_redeemed >= 0", name="promo_code_redeemed_not_negative"),
    )

    # Stored upper-case: codes are case-insensitive, so the unique index is too.
    code: Mapped[str] = mapped_column(String(40), unique=True)
    percent_off_bps: Mapped[int | None] = mapped_column(default=None)
    amount_off: Mapped[int | None] = mapped_column(default=None)  # minor units of ``currency``
    currency: Mapped[str] = mapped_column(String(3), default="CAD")
    duration: Mapped[str] = mapped_column(String(16), default=PromoDuration.ONCE.value)
    duration_in_months: Mapped[int | None] = mapped_column(default=None)
    max_redemptions: Mapped[int | None] = mapped_column(default=None)
    times_redeemed: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    minimum_amount: Mapped[int | None] = mapped_column(default=None)  # order subtotal before tax, minor units
    first_order_only: Mapped[bool] = mapped_column(Boolean, default=False)
    stripe_coupon_id: Mapped[str | None] = mapped_column(String(255), default=None)
    stripe_promotion_code_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    archived_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    created_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)

    products: Mapped[list[Product]] = relationship(secondary=promo_code_products, lazy="selectin")
    plans: Mapped[list[Plan]] = relationship(secondary=promo_code_plans, lazy="selectin")

    @property
    def is_restricted(self) -> bool:
        return bool(self.products or self.plans)

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def is_used_up(self) -> bool:
        return self.max_redemptions is not None and self.times_redeemed >= self.max_redemptions


class PromoRedemption(UUIDv7AuditBase):
    """One use of a code: a paid order (counted once, at fulfilment) or a subscription created with it."""

    __tablename__ = "promo_redemptions"
    __table_args__ = (
        UniqueConstraint("order_id", name="uq_promo_redemptions_order"),
        UniqueConstraint("stripe_subscription_id", name="uq_promo_redemptions_subscription"),
    )

    promo_code_id: Mapped[UUID] = mapped_column(ForeignKey("promo_codes.id", ondelete="CASCADE"), index=True)
    order_id: Mapped[UUID | None] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), default=None)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), default=None)
    user_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    email: Mapped[str] = mapped_column(String(320), default="")
    amount: Mapped[int] = mapped_column(default=0)  # the discount given, minor units (0 if Stripe computes it)
    # False when the code had run out by the time the payment arrived: the paid order keeps its discount anyway.
    counted: Mapped[bool] = mapped_column(Boolean, default=True)
