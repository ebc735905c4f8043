from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship


class Category(UUIDv7AuditBase):
    __tablename__ = "categories"

    name: Mapped[str] = mapped_column(String(80))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(default=0)

    products: Mapped[list[Product]] = relationship(back_populates="category", lazy="raise")


class Product(UUIDv7AuditBase):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="stock_not_negative"),
        Index("ix_products_active_created", "is_active", "created_at"),
    )

    name: Mapped[str] = mapped_column(String(160))
    slug: Mapped[str] = mapped_column(String(160), unique=True)
    summary: Mapped[str] = mapped_column(String(280), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    price: Mapped[int]  # minor units
    currency: Mapped[str] = mapped_column(String(3), default="CAD")
    category_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("categories.id", ondelete="SET NULL"), index=True, default=None
    )
    is_active: Mapped[bool] = mapped_column(default=True)
    is_featured: Mapped[bool] = mapped_column(default=False)
    seo_title: Mapped[str] = mapped_column(String(160), default="")
    seo_description: Mapped[str] = mapped_column(String(320), default="")
    # None = unlimited (a digital good); a number = limited edition: the units still for sale (held ones are off it).
    stock: Mapped[int | None] = mapped_column(default=None)
    cover_image: Mapped[str] = mapped_column(String(255), default="")  # path under static/ (the seeded covers)
    # An uploaded cover: a storage folder "covers/<product id>/<token>" holding 400.webp and 800.webp thumbnails,
    # served publicly by catalog:cover. Wins over cover_image when set. A new upload gets a new token (new URL).
    cover_upload: Mapped[str | None] = mapped_column(String(255), default=None)
    digital_file: Mapped[str | None] = mapped_column(String(255), default=None)  # storage key, never public
    # What the admin uploaded: the name and type downloads are served with, its size and SHA-256 (hex).
    digital_file_name: Mapped[str] = mapped_column(String(255), default="")
    digital_file_content_type: Mapped[str] = mapped_column(String(120), default="")
    digital_file_size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    digital_file_sha256: Mapped[str] = mapped_column(String(64), default="")
    download_limit: Mapped[int] = mapped_column(default=5)
    # Mirrored to Stripe by app/domain/catalog/stripe_sync.py; stripe_synced_at is None while a sync is pending.
    stripe_product_id: Mapped[str | None] = mapped_column(String(64), default=None)
    stripe_price_id: Mapped[str | None] = mapped_column(String(64), default=None)
    stripe_synced_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    category: Mapped[Category | None] = relationship(back_populates="products", lazy="joined")

    @property
    def in_stock(self) -> bool:
        return self.stock is None or self.stock > 0

    @property
    def page_title(self) -> str:
        return self.seo_title or self.name

    @property
    def meta_description(self) -> str:
        return self.seo_description or self.summary or self.description[:160]


class StockHold(UUIDv7AuditBase):
    """Units of a limited product set aside for one pending order (already taken off ``products.stock``).

    Ends exactly once: ``converted_at`` (the order was fulfilled: a sale) or ``released_at`` (expired, the payment
    failed or the order was canceled: the units went back to ``products.stock``)."""

    __tablename__ = "stock_holds"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="stock_hold_quantity_positive"),
        Index("ix_stock_holds_open_expires", "released_at", "converted_at", "expires_at"),
    )

    order_id: Mapped[UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[UUID] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    quantity: Mapped[int]
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    converted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
