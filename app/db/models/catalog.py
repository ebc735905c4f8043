from __future__ import annotations

from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
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
    # None = unlimited (a digital good); a number = limited edition, decremented on fulfilment.
    stock: Mapped[int | None] = mapped_column(default=None)
    cover_image: Mapped[str] = mapped_column(String(255), default="")  # path under static/ or storage key
    digital_file: Mapped[str | None] = mapped_column(String(255), default=None)  # storage key, never public
    download_limit: Mapped[int] = mapped_column(default=5)

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
