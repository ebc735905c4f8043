"""Catalog queries: listing with filter, search, sort and pagination; product and category look-ups."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import Select, UnaryExpression, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m


class SortOrder(StrEnum):
    NEWEST = "newest"
    PRICE_ASC = "price_asc"
    PRICE_DESC = "price_desc"
    NAME = "name"

    @property
    def label(self) -> str:
        return {
            SortOrder.NEWEST: "Newest",
            SortOrder.PRICE_ASC: "Price: low to high",
            SortOrder.PRICE_DESC: "Price: high to low",
            SortOrder.NAME: "Name",
        }[self]


_ORDER_BY: dict[SortOrder, tuple[UnaryExpression[Any], ...]] = {
    SortOrder.NEWEST: (m.Product.created_at.desc(), m.Product.id.desc()),
    SortOrder.PRICE_ASC: (m.Product.price.asc(), m.Product.name.asc(), m.Product.id.asc()),
    SortOrder.PRICE_DESC: (m.Product.price.desc(), m.Product.name.asc(), m.Product.id.asc()),
    SortOrder.NAME: (m.Product.name.asc(), m.Product.id.asc()),
}

PER_PAGE = 12


@dataclass(frozen=True)
class ProductQuery:
    """What the visitor asked for; parsed leniently from the query string so any shared link still renders."""

    category: str = ""
    q: str = ""
    sort: SortOrder = SortOrder.NEWEST
    page: int = 1

    @classmethod
    def parse(cls, *, category: str | None, q: str | None, sort: str | None, page: str | None) -> ProductQuery:
        try:
            sort_order = SortOrder(sort or SortOrder.NEWEST.value)
        except ValueError:
            sort_order = SortOrder.NEWEST
        try:
            page_number = max(1, min(int(page or 1), 10_000))
        except ValueError:
            page_number = 1
        return cls(category=(category or "").strip()[:80], q=(q or "").strip()[:100], sort=sort_order, page=page_number)

    def params(self, **changes: object) -> dict[str, str]:
        """Query parameters for a link to this listing with ``changes`` applied; defaults are left out."""
        values = {"category": self.category, "q": self.q, "sort": self.sort.value, "page": str(self.page)}
        values.update({k: str(v.value if isinstance(v, Enum) else v) for k, v in changes.items()})
        defaults = {"sort": SortOrder.NEWEST.value, "page": "1"}
        return {k: v for k, v in values.items() if v and defaults.get(k) != v}


@dataclass(frozen=True)
class ProductPage:
    items: list[m.Product]
    total: int
    query: ProductQuery
    category: m.Category | None = None
    per_page: int = PER_PAGE

    @property
    def title(self) -> str:
        parts = [f"“{self.query.q}”"] if self.query.q else []
        parts += [self.category.name] if self.category else []
        parts += [f"Page {self.query.page}"] if self.query.page > 1 else []
        return " — ".join([*parts, "Products — Cartwright"])

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.query.page > 1

    @property
    def has_next(self) -> bool:
        return self.query.page < self.pages


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class CatalogService:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def categories(self) -> list[m.Category]:
        return list(await self.db.scalars(select(m.Category).order_by(m.Category.position, m.Category.name)))

    async def category_by_slug(self, slug: str) -> m.Category | None:
        return await self.db.scalar(select(m.Category).where(m.Category.slug == slug))

    def _filtered(self, query: ProductQuery, category: m.Category | None) -> Select[Any]:
        stmt = select(m.Product).where(m.Product.is_active.is_(True))
        if category is not None:
            stmt = stmt.where(m.Product.category_id == category.id)
        for word in query.q.split()[:8]:
            pattern = f"%{_escape_like(word.lower())}%"
            stmt = stmt.where(
                or_(
                    func.lower(m.Product.name).like(pattern, escape="\\"),
                    func.lower(m.Product.description).like(pattern, escape="\\"),
                )
            )
        return stmt

    async def list_products(self, query: ProductQuery) -> ProductPage:
        category = await self.category_by_slug(query.category) if query.category else None
        if query.category and category is None:
            return ProductPage(items=[], total=0, query=query)
        stmt = self._filtered(query, category)
        total = await self.db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
        rows = await self.db.scalars(
            stmt.order_by(*_ORDER_BY[query.sort]).limit(PER_PAGE).offset((query.page - 1) * PER_PAGE)
        )
        return ProductPage(items=list(rows.unique()), total=total, query=query, category=category)

    async def featured(self, limit: int = 8) -> list[m.Product]:
        rows = await self.db.scalars(
            select(m.Product)
            .where(m.Product.is_active.is_(True), m.Product.is_featured.is_(True))
            .order_by(m.Product.created_at.desc())
            .limit(limit)
        )
        return list(rows.unique())

    async def product_by_slug(self, slug: str) -> m.Product | None:
        return await self.db.scalar(select(m.Product).where(m.Product.slug == slug, m.Product.is_active.is_(True)))

    async def related(self, product: m.Product, limit: int = 4) -> list[m.Product]:
        if product.category_id is None:
            return []
        rows = await self.db.scalars(
            select(m.Product)
            .where(
                m.Product.is_active.is_(True),
                m.Product.category_id == product.category_id,
                m.Product.id != product.id,
            )
            .order_by(m.Product.name)
            .limit(limit)
        )
        return list(rows.unique())
