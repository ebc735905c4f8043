"""Carts, orders, payments, refunds and download entitlements: the money side of the shop.

Amounts are integer minor units in the order's currency. Stripe is the source of truth for money; these rows
mirror it and record what we did about it (fulfilment, entitlements, emails).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

from advanced_alchemy.base import IdentityBase, UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.models.catalog import Product

# advanced-alchemy's JsonB trips over SQLAlchemy 2.1; this is the same thing spelled out: JSONB on PostgreSQL.
JsonB = JSON().with_variant(JSONB(), "postgresql")


class OrderStatus(StrEnum):
    PENDING = "pending"  # created at checkout, waiting for a successful payment (retryable)
    PAID = "paid"  # payment succeeded and the order is fulfilled
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELED = "canceled"


# Orders whose money was taken (a refund later changes how much is kept, not that it was paid).
PAID_ORDER_STATUSES = (OrderStatus.PAID.value, OrderStatus.PARTIALLY_REFUNDED.value, OrderStatus.REFUNDED.value)


class PaymentStatus(StrEnum):
    """Mirrors the PaymentIntent's status, plus ``failed`` for the last attempt's decline."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


# Stripe dispute statuses. Open ones await the bank; ``lost`` means the money went back to the cardholder.
OPEN_DISPUTE_STATUSES = frozenset({"needs_response", "under_review", "warning_needs_response", "warning_under_review"})
CLOSED_DISPUTE_STATUSES = frozenset({"won", "lost", "warning_closed", "prevented"})
# While a dispute is open or lost, the order's downloads are suspended.
SUSPENDING_DISPUTE_STATUSES = OPEN_DISPUTE_STATUSES | {"lost"}


class CartItem(UUIDv7AuditBase):
    """A logged-in customer's cart line. Anonymous carts live in the session and merge in on login."""

    __tablename__ = "cart_items"
    __table_args__ = (
        UniqueConstraint("user_id", "product_id", name="uq_cart_items_user_product"),
        CheckConstraint("quantity > 0", name="cart_quantity_positive"),
    )

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    quantity: Mapped[int] = mapped_column(default=1)

    product: Mapped[Product] = relationship(lazy="joined")


class OrderNumber(IdentityBase):
    """A counter row per order: the database hands out gap-tolerant, race-free order numbers on both dialects."""

    __tablename__ = "order_numbers"


class Order(UUIDv7AuditBase):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total = subtotal - discount_total + tax_total", name="order_total_adds_up"),
        CheckConstraint("discount_total >= 0 AND discount_total <= subtotal", name="order_discount_within_subtotal"),
        CheckConstraint("amount_refunded >= 0 AND amount_refunded <= total", name="order_refund_within_total"),
        Index("ix_orders_user_created", "user_id", "created_at"),
        # The webhook silence alert counts recent orders; the admin orders table sorts by placement time.
        Index("ix_orders_created_at", "created_at"),
    )

    # Human order number shown to customers and support ("#1042"); assigned from order_numbers.
    number: Mapped[int] = mapped_column(Integer, unique=True)
    user_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    email: Mapped[str] = mapped_column(String(320), index=True)
    billing_name: Mapped[str] = mapped_column(String(120))
    country: Mapped[str] = mapped_column(String(2))
    region: Mapped[str] = mapped_column(String(3), default="")  # province/state code
    postal_code: Mapped[str] = mapped_column(String(16), default="")
    status: Mapped[str] = mapped_column(String(24), default=OrderStatus.PENDING.value, index=True)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int]
    # A promo code's discount, taken off before tax; ``promo_code`` is the code as typed (a snapshot).
    discount_total: Mapped[int] = mapped_column(default=0, server_default="0")
    promo_code: Mapped[str] = mapped_column(String(40), default="", server_default="")
    promo_code_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("promo_codes.id", ondelete="SET NULL"), default=None, index=True
    )
    tax_total: Mapped[int]
    total: Mapped[int]
    amount_refunded: Mapped[int] = mapped_column(default=0)
    # [{"code": "GST", "label": "GST 5%", "rate": "0.05", "amount": 150}, ...] as computed at checkout.
    tax_breakdown: Mapped[list[dict[str, Any]]] = mapped_column(JsonB, default=list)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    # One per checkout form shown: a double-submitted form finds the order its first submission created.
    checkout_token: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    # SHA-256 of the secret kept in a guest's session: proves "this visitor placed this order" on the return page.
    visitor_token_hash: Mapped[str] = mapped_column(String(64), default="")
    paid_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Set exactly once, in the same transaction that grants entitlements and queues the receipt.
    fulfilled_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    refunded_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Set when the shop refunded a payment it could not deliver (wrong amount, archived product, stock gone).
    refund_reason: Mapped[str] = mapped_column(String(255), default="", server_default="")
    # The status of the order's latest Stripe dispute (``needs_response`` … ``won``/``lost``); "" if never disputed.
    # A flag beside ``status``, not a status of its own: refunds and disputes each move their own field.
    dispute_status: Mapped[str] = mapped_column(String(32), default="", server_default="")

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", lazy="selectin", cascade="all, delete-orphan", order_by="OrderLine.position"
    )
    events: Mapped[list[OrderEvent]] = relationship(
        back_populates="order", lazy="raise", cascade="all, delete-orphan", order_by="OrderEvent.created_at"
    )

    @property
    def display_number(self) -> str:
        return f"#{self.number}"

    @property
    def refundable(self) -> int:
        return self.total - self.amount_refunded

    @property
    def is_paid(self) -> bool:
        return self.status in PAID_ORDER_STATUSES

    @property
    def is_disputed(self) -> bool:
        """An open dispute, or one the shop lost: the money is (or may be) gone back to the bank."""
        return self.dispute_status in SUSPENDING_DISPUTE_STATUSES


class OrderLine(UUIDv7AuditBase):
    """A price snapshot: what the customer was charged for, whatever the product later becomes."""

    __tablename__ = "order_lines"
    __table_args__ = (CheckConstraint("quantity > 0", name="order_line_quantity_positive"),)

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    product_id: Mapped[UUID | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"), default=None)
    product_name: Mapped[str] = mapped_column(String(160))
    product_slug: Mapped[str] = mapped_column(String(160))
    unit_price: Mapped[int]
    quantity: Mapped[int]
    subtotal: Mapped[int]  # unit_price * quantity
    discount: Mapped[int] = mapped_column(default=0, server_default="0")  # this line's share of the order discount
    tax: Mapped[int]  # tax on (subtotal - discount), rounded per line and per tax component
    download_limit: Mapped[int] = mapped_column(default=5)
    has_download: Mapped[bool] = mapped_column(default=False)

    order: Mapped[Order] = relationship(back_populates="lines", lazy="raise")

    @property
    def total(self) -> int:
        return self.subtotal - self.discount + self.tax


class OrderEvent(UUIDv7AuditBase):
    """The order's status timeline, shown to the customer and to support."""

    __tablename__ = "order_events"

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text, default="")

    order: Mapped[Order] = relationship(back_populates="events", lazy="raise")


class Payment(UUIDv7AuditBase):
    """One per PaymentIntent (one PaymentIntent per order), mirrored from Stripe."""

    __tablename__ = "payments"

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), unique=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), unique=True)
    charge_id: Mapped[str | None] = mapped_column(String(255), default=None, index=True)
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32), default=PaymentStatus.REQUIRES_PAYMENT_METHOD.value)
    failure_message: Mapped[str] = mapped_column(Text, default="")
    # From the charge's balance transaction: Stripe's fee, and the amount less the fee (None until Stripe says).
    fee: Mapped[int | None] = mapped_column(default=None)
    net: Mapped[int | None] = mapped_column(default=None)
    last_event_id: Mapped[str | None] = mapped_column(String(255), default=None)
    # Stripe's `created` of the newest event applied: an older event never overwrites newer state.
    last_event_created: Mapped[int] = mapped_column(default=0)


class Refund(UUIDv7AuditBase):
    __tablename__ = "refunds"

    # Stripe counts pending refunds in `amount_refunded` too: money promised back is no longer ours. Revenue
    # (analytics) and an order's refunded total (orders) both count these.
    COUNTED_STATUSES: ClassVar[frozenset[str]] = frozenset({"succeeded", "pending", "requires_action"})

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    stripe_refund_id: Mapped[str] = mapped_column(String(255), unique=True)
    charge_id: Mapped[str | None] = mapped_column(String(255), default=None)
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))  # pending | requires_action | succeeded | failed | canceled
    reason: Mapped[str] = mapped_column(String(64), default="")
    notified_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class Dispute(UUIDv7AuditBase):
    """A chargeback on an order's payment, mirrored from Stripe's dispute object (one row per ``dp_`` id)."""

    __tablename__ = "disputes"

    # Stripe's reason codes as the admin pages and the alert email put them.
    REASON_LABELS: ClassVar[dict[str, str]] = {
        "fraudulent": "Fraudulent (the cardholder says they did not make this payment)",
        "product_not_received": "Product not received",
        "product_unacceptable": "Product unacceptable",
        "duplicate": "Duplicate charge",
        "subscription_canceled": "Subscription canceled",
        "credit_not_processed": "Refund not processed",
        "unrecognized": "Unrecognised payment",
        "general": "General",
    }

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    stripe_dispute_id: Mapped[str] = mapped_column(String(255), unique=True)
    charge_id: Mapped[str] = mapped_column(String(255), default="")
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), default=None)
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(64), default="")
    # "" until the first writer has applied Stripe's copy: the change from "" is what opens the dispute here.
    status: Mapped[str] = mapped_column(String(32), default="")
    evidence_due_by: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    opened_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))  # Stripe's ``created``
    closed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_DISPUTE_STATUSES


class Entitlement(UUIDv7AuditBase):
    """The right to download one purchased file, a limited number of times, until revoked."""

    __tablename__ = "entitlements"
    __table_args__ = (
        UniqueConstraint("order_line_id", name="uq_entitlements_order_line"),
        CheckConstraint("download_count >= 0", name="entitlement_count_not_negative"),
    )

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    order_line_id: Mapped[UUID] = mapped_column(ForeignKey("order_lines.id", ondelete="CASCADE"))
    product_id: Mapped[UUID | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"), default=None)
    user_id: Mapped[UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    product_name: Mapped[str] = mapped_column(String(160))
    download_limit: Mapped[int] = mapped_column(default=5)
    download_count: Mapped[int] = mapped_column(default=0)
    last_downloaded_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Set while the order's payment is disputed (and kept if the dispute is lost); cleared when it is won.
    suspended_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    product: Mapped[Product | None] = relationship(lazy="joined")

    @property
    def downloads_left(self) -> int:
        return max(self.download_limit - self.download_count, 0)

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and self.suspended_at is None and self.downloads_left > 0


class StripeEventStatus(StrEnum):
    RECEIVED = "received"
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"
    IGNORED = "ignored"


class StripeEvent(UUIDv7AuditBase):
    """Every Stripe event we accepted, stored before anything acts on it: the webhook's durable inbox."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        Index("ix_stripe_events_status_received", "status", "received_at"),
        # The webhook health card and alert count recent events whatever their status; the event log sorts by it.
        Index("ix_stripe_events_received_at", "received_at"),
    )

    stripe_id: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(80), index=True)
    object_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    api_created: Mapped[int] = mapped_column(default=0)  # the event's `created` (Unix seconds)
    livemode: Mapped[bool] = mapped_column(default=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonB)
    status: Mapped[str] = mapped_column(String(16), default=StripeEventStatus.RECEIVED.value)
    source: Mapped[str] = mapped_column(String(16), default="webhook")  # webhook | catch-up | sync
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int | None] = mapped_column(default=None)
    received_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
