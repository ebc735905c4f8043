"""Subscriptions and memberships: plans and their Stripe prices, mirrored subscriptions and invoices, the credit
ledger, and bookable resources.

Stripe owns subscription and invoice state (mirrored here from webhooks); credits and bookings are ours alone.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase, orm_registry
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.models.catalog import Product
from app.db.models.commerce import JsonB

# Products any active subscriber of the plan may download.
plan_products = Table(
    "plan_products",
    orm_registry.metadata,
    Column("plan_id", GUID, ForeignKey("plans.id", ondelete="CASCADE"), primary_key=True),
    Column("product_id", GUID, ForeignKey("products.id", ondelete="CASCADE"), primary_key=True),
)


class PriceInterval(StrEnum):
    MONTH = "month"
    YEAR = "year"


class PriceTier(StrEnum):
    STANDARD = "standard"
    MEMBER = "member"  # the "holder price": for customers an admin flagged as verified holders/partners


class CreditType(UUIDv7AuditBase):
    __tablename__ = "credit_types"

    code: Mapped[str] = mapped_column(String(40), unique=True)  # e.g. "room-hours", "day-passes"
    name: Mapped[str] = mapped_column(String(80))  # "Meeting-room hours"
    unit: Mapped[str] = mapped_column(String(20), default="credits")  # "hours", "passes"


class Plan(UUIDv7AuditBase):
    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(String(80))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    features: Mapped[list[str]] = mapped_column(JsonB, default=list)
    trial_days: Mapped[int] = mapped_column(default=0)
    is_active: Mapped[bool] = mapped_column(default=True)
    position: Mapped[int] = mapped_column(default=0)
    # Unused credits carried into the next cycle (else they expire at period end).
    credits_roll_over: Mapped[bool] = mapped_column(default=False)
    # The admin's choice: may members end this plan at once (no refund), or only at the end of the period?
    allow_cancel_now: Mapped[bool] = mapped_column(default=False)
    stripe_product_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)

    prices: Mapped[list[PlanPrice]] = relationship(
        back_populates="plan", lazy="selectin", cascade="all, delete-orphan", order_by="PlanPrice.amount"
    )
    credits: Mapped[list[PlanCredit]] = relationship(
        back_populates="plan", lazy="selectin", cascade="all, delete-orphan"
    )
    downloads: Mapped[list[Product]] = relationship(secondary=plan_products, lazy="selectin")

    def price_for(self, interval: str, tier: str = PriceTier.STANDARD) -> PlanPrice | None:
        """The current (active) price for an interval and tier; members fall back to the standard price."""
        for wanted in dict.fromkeys([tier, PriceTier.STANDARD.value]):
            for price in self.prices:
                if price.is_active and price.interval == interval and price.tier == wanted:
                    return price
        return None


class PlanPrice(UUIDv7AuditBase):
    """One Stripe Price. A price change creates a new row (and Price) and archives the old: subscribers keep it."""

    __tablename__ = "plan_prices"
    __table_args__ = (CheckConstraint("amount >= 0", name="plan_price_not_negative"),)

    plan_id: Mapped[UUID] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    interval: Mapped[str] = mapped_column(String(8))  # PriceInterval
    tier: Mapped[str] = mapped_column(String(16), default=PriceTier.STANDARD.value)
    amount: Mapped[int]  # minor units per interval
    currency: Mapped[str] = mapped_column(String(3), default="CAD")
    is_active: Mapped[bool] = mapped_column(default=True)
    stripe_price_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)

    plan: Mapped[Plan] = relationship(back_populates="prices", lazy="raise")


class PlanCredit(UUIDv7AuditBase):
    """Credits a plan grants per paid billing cycle."""

    __tablename__ = "plan_credits"
    __table_args__ = (
        UniqueConstraint("plan_id", "credit_type_id", name="uq_plan_credits_plan_type"),
        CheckConstraint("amount > 0", name="plan_credit_positive"),
    )

    plan_id: Mapped[UUID] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    credit_type_id: Mapped[UUID] = mapped_column(ForeignKey("credit_types.id", ondelete="CASCADE"))
    amount: Mapped[int]

    plan: Mapped[Plan] = relationship(back_populates="credits", lazy="raise")
    credit_type: Mapped[CreditType] = relationship(lazy="joined")


class SubscriptionStatus(StrEnum):
    """Stripe's subscription statuses, verbatim."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


# Statuses in which a subscription still gives access: Stripe retries a past_due renewal before giving up.
LIVE_SUBSCRIPTION_STATUSES = frozenset(
    {SubscriptionStatus.ACTIVE.value, SubscriptionStatus.TRIALING.value, SubscriptionStatus.PAST_DUE.value}
)


class Subscription(UUIDv7AuditBase):
    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_user_status", "user_id", "status"),)

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    plan_id: Mapped[UUID | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"), default=None)
    plan_price_id: Mapped[UUID | None] = mapped_column(ForeignKey("plan_prices.id", ondelete="SET NULL"), default=None)
    stripe_subscription_id: Mapped[str] = mapped_column(String(255), unique=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), index=True)
    stripe_price_id: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(24), default=SubscriptionStatus.INCOMPLETE.value)
    quantity: Mapped[int] = mapped_column(default=1)
    current_period_start: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    current_period_end: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    canceled_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    trial_end: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    latest_invoice_id: Mapped[str | None] = mapped_column(String(255), default=None)
    # Stripe's pause_collection: "" when invoices are collected; otherwise its behavior (keep_as_draft,
    # mark_uncollectible, void) and when collection resumes by itself (None: until staff resume it).
    pause_collection: Mapped[str] = mapped_column(String(24), default="", server_default="")
    pause_resumes_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Set by a conditional UPDATE when the "membership ended" email is queued: once, whoever notices first.
    ended_notified_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Newest Stripe event applied (its `created`): an older event never overwrites newer state.
    last_event_created: Mapped[int] = mapped_column(default=0)

    plan: Mapped[Plan | None] = relationship(lazy="joined")
    price: Mapped[PlanPrice | None] = relationship(lazy="joined")

    @property
    def is_live(self) -> bool:
        """Shown in the account as the customer's plan (Stripe said active or trialing, or it is in dunning)."""
        return self.status in LIVE_SUBSCRIPTION_STATUSES


class Invoice(UUIDv7AuditBase):
    """A mirrored Stripe invoice of a subscription (history, dunning, credit allocation)."""

    __tablename__ = "invoices"

    stripe_invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    subscription_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), index=True, default=None
    )
    number: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(24))  # draft | open | paid | uncollectible | void
    billing_reason: Mapped[str] = mapped_column(String(40), default="")
    amount_due: Mapped[int] = mapped_column(default=0)
    amount_paid: Mapped[int] = mapped_column(default=0)
    currency: Mapped[str] = mapped_column(String(3), default="CAD")
    hosted_invoice_url: Mapped[str] = mapped_column(String(1000), default="")
    invoice_pdf: Mapped[str] = mapped_column(String(1000), default="")
    period_start: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    period_end: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    attempt_count: Mapped[int] = mapped_column(default=0)
    next_payment_attempt: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    stripe_created: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    last_event_created: Mapped[int] = mapped_column(default=0)
    # Sales tax Stripe charged (exclusive Tax Rates): the total, and per component [{code, label, rate, amount}].
    tax: Mapped[int] = mapped_column(default=0, server_default="0")
    tax_breakdown: Mapped[list[dict[str, Any]]] = mapped_column(JsonB, default=list, server_default="[]")

    @property
    def amount_paid_excluding_tax(self) -> int:
        """What was paid for the plan itself: revenue figures (MRR) never count the tax collected for the state."""
        return max(0, self.amount_paid - (self.tax or 0)) if self.amount_paid else 0  # tax unset before a flush


class StripeTaxRate(UUIDv7AuditBase):
    """One component of the sales-tax table (app/domain/tax/services.py) as a Stripe Tax Rate, per province.

    ``key`` names the table row (component, province, rate, effective date), so a changed rate is a new key and a
    new Tax Rate while the old one is archived; the same key is in the Tax Rate's metadata so it is found again.
    """

    __tablename__ = "stripe_tax_rates"

    key: Mapped[str] = mapped_column(String(80), unique=True)
    code: Mapped[str] = mapped_column(String(8))  # GST, HST, PST, QST, RST
    country: Mapped[str] = mapped_column(String(2))
    province: Mapped[str] = mapped_column(String(2), index=True)
    rate: Mapped[str] = mapped_column(String(16))  # the table's Decimal, as text ("0.09975")
    stripe_tax_rate_id: Mapped[str] = mapped_column(String(255), index=True)
    active: Mapped[bool] = mapped_column(default=True)


class CreditEntryKind(StrEnum):
    ALLOCATION = "allocation"  # a paid cycle's credits (reference: the invoice id)
    USAGE = "usage"  # spent on a booking (reference: the booking id)
    REFUND = "refund"  # a cancelled booking's credits back (reference: the booking id)
    EXPIRY = "expiry"  # unused credits lapsing at period end (reference: the invoice id that granted them)
    ADJUSTMENT = "adjustment"  # by an admin, with a reason


class CreditEntry(UUIDv7AuditBase):
    """The credit ledger. A balance is always the sum of these rows, never a counter kept on its own."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        # Idempotency: one allocation per invoice, one usage and one refund per booking, per credit type.
        UniqueConstraint("user_id", "credit_type_id", "kind", "reference", name="uq_credit_entries_once"),
        Index("ix_credit_entries_user_type", "user_id", "credit_type_id"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    credit_type_id: Mapped[UUID] = mapped_column(ForeignKey("credit_types.id", ondelete="CASCADE"))
    amount: Mapped[int]  # signed: + grants, - spends
    kind: Mapped[str] = mapped_column(String(16))  # CreditEntryKind
    reason: Mapped[str] = mapped_column(Text, default="")
    reference: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    created_by_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)

    credit_type: Mapped[CreditType] = relationship(lazy="joined")


class BookableResource(UUIDv7AuditBase):
    """Something members book by the slot: a meeting room, a desk day pass."""

    __tablename__ = "bookable_resources"

    name: Mapped[str] = mapped_column(String(120))
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    credit_type_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("credit_types.id", ondelete="SET NULL"), default=None
    )
    credit_cost: Mapped[int] = mapped_column(default=1)  # credits per slot
    price: Mapped[int] = mapped_column(default=0)  # minor units per slot when paid by card
    currency: Mapped[str] = mapped_column(String(3), default="CAD")
    # The cancellation window: cancelling (and getting the credits or the card payment back) closes this many hours
    # before the slot starts.
    cancel_cutoff_hours: Mapped[int] = mapped_column(default=24)
    is_active: Mapped[bool] = mapped_column(default=True)  # False: archived (never deleted: bookings point at it)
    kind: Mapped[str] = mapped_column(String(10), default="room")  # "room" | "desk"
    capacity: Mapped[int] = mapped_column(default=1)  # seats per slot
    slot_minutes: Mapped[int] = mapped_column(default=60)
    # Local wall-clock opening windows per weekday ({"0": [["09:00", "17:00"]]}, Monday = "0"; see
    # app/domain/bookings/schedule.py). Empty: the resource's slots are rows created by hand (the seed's before #16).
    opening_hours: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    book_ahead_days: Mapped[int] = mapped_column(default=14)  # how far ahead (in local days) one can book

    credit_type: Mapped[CreditType | None] = relationship(lazy="joined")

    @property
    def is_scheduled(self) -> bool:
        """Slots come from the opening hours (created when a day is first looked at), not from hand-made rows."""
        return bool(self.opening_hours)


class ResourceClosure(UUIDv7AuditBase):
    """Days a resource (or, with no resource, every resource: a holiday) cannot be booked; local dates, inclusive."""

    __tablename__ = "resource_closures"
    __table_args__ = (CheckConstraint("ends_on >= starts_on", name="closure_dates_in_order"),)

    resource_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("bookable_resources.id", ondelete="CASCADE"), index=True, default=None
    )
    starts_on: Mapped[date]
    ends_on: Mapped[date]
    reason: Mapped[str] = mapped_column(String(200), default="")


class BookingSlot(UUIDv7AuditBase):
    __tablename__ = "booking_slots"
    __table_args__ = (
        CheckConstraint("booked >= 0 AND booked <= capacity", name="slot_within_capacity"),
        UniqueConstraint("resource_id", "starts_at", name="uq_booking_slots_resource_start"),
    )

    resource_id: Mapped[UUID] = mapped_column(ForeignKey("bookable_resources.id", ondelete="CASCADE"), index=True)
    starts_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    capacity: Mapped[int] = mapped_column(default=1)
    # Seats taken, changed only by a conditional UPDATE: two customers cannot both take the last one.
    booked: Mapped[int] = mapped_column(default=0)

    resource: Mapped[BookableResource] = relationship(lazy="joined")

    @property
    def seats_left(self) -> int:
        return self.capacity - self.booked


class BookingStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    CONFIRMED = "confirmed"
    CANCELED = "canceled"


class Booking(UUIDv7AuditBase):
    __tablename__ = "bookings"
    __table_args__ = (Index("ix_bookings_user_status", "user_id", "status"),)

    slot_id: Mapped[UUID] = mapped_column(ForeignKey("booking_slots.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default=BookingStatus.CONFIRMED.value)
    paid_with: Mapped[str] = mapped_column(String(10))  # "credits" | "card"
    credits_spent: Mapped[int] = mapped_column(default=0)
    order_id: Mapped[UUID | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"), default=None)
    canceled_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)

    slot: Mapped[BookingSlot] = relationship(lazy="joined")
