"""Catalog queries: listing with filter, search, sort and pagination; product and category look-ups.

The public pages read plain views (``ProductView``, ``CategoryView``) built from the database and cached in Redis
(``app/domain/catalog/cache.py``); admin changes invalidate the cache.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from typing import Any

from markupsafe import Markup
from redis.asyncio import Redis
from sqlalchemy import Select, UnaryExpression, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.catalog.cache import cached
from app.domain.catalog.markdown import render_markdown


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


@dataclass(frozen=True, slots=True)
class CategoryView:
    id: str
    name: str
    slug: str
    description: str

    @classmethod
    def of(cls, category: m.Category) -> CategoryView:
        return cls(id=str(category.id), name=category.name, slug=category.slug, description=category.description)


@dataclass(frozen=True, slots=True)
class ProductView:
    """What the public pages show of a product: plain data, so it can be cached as JSON."""

    id: str
    name: str
    slug: str
    summary: str
    description: str
    description_html: str
    price: int
    currency: str
    stock: int | None
    cover_image: str
    cover_upload: str | None
    seo_title: str
    seo_description: str
    category: CategoryView | None

    @classmethod
    def of(cls, product: m.Product) -> ProductView:
        return cls(
            id=str(product.id),
            name=product.name,
            slug=product.slug,
            summary=product.summary,
            description=product.description,
            description_html=str(render_markdown(product.description)),
            price=product.price,
            currency=product.currency,
            stock=product.stock,
            cover_image=product.cover_image,
            cover_upload=product.cover_upload,
            seo_title=product.seo_title,
            seo_description=product.seo_description,
            category=CategoryView.of(product.category) if product.category is not None else None,
        )

    @classmethod
    def load(cls, data: dict[str, Any]) -> ProductView:
        category = data.get("category")
        return cls(**{**data, "category": CategoryView(**category) if category else None})

    def dump(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def description_markup(self) -> Markup:
        return Markup(self.description_html)  # noqa: S704 - rendered by render_markdown, which escapes raw HTML

    @property
    def in_stock(self) -> bool:
        return self.stock is None or self.stock > 0

    @property
    def page_title(self) -> str:
        return self.seo_title or self.name

    @property
    def meta_description(self) -> str:
        return self.seo_description or self.summary or self.description[:160]


@dataclass(frozen=True)
class ProductPage:
    items: list[ProductView]
    total: int
    query: ProductQuery
    category: CategoryView | None = None
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
    """The public catalog. With ``redis`` every read is cached under the catalog's current version."""

    def __init__(self, db: AsyncSession, redis: Redis | None = None) -> None:
        self.db = db
        self.redis = redis

    async def _categories(self) -> list[m.Category]:
        return list(await self.db.scalars(select(m.Category).order_by(m.Category.position, m.Category.name)))

    async def categories(self) -> list[CategoryView]:
        async def build() -> list[dict[str, Any]]:
            return [asdict(CategoryView.of(c)) for c in await self._categories()]

        return [CategoryView(**c) for c in await cached(self.redis, "categories", {}, build)]

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
        async def build() -> dict[str, Any]:
            category = await self.category_by_slug(query.category) if query.category else None
            if query.category and category is None:
                return {"items": [], "total": 0, "category": None}
            stmt = self._filtered(query, category)
            total = await self.db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
            rows = await self.db.scalars(
                stmt.order_by(*_ORDER_BY[query.sort]).limit(PER_PAGE).offset((query.page - 1) * PER_PAGE)
            )
            return {
                "items": [ProductView.of(p).dump() for p in rows.unique()],
                "total": total,
                "category": asdict(CategoryView.of(category)) if category is not None else None,
            }

        data = await cached(self.redis, "list", query.params(page=query.page, sort=query.sort.value), build)
        return ProductPage(
            items=[ProductView.load(p) for p in data["items"]],
            total=data["total"],
            query=query,
            category=CategoryView(**data["category"]) if data["category"] else None,
        )

    async def featured(self, limit: int = 8) -> list[ProductView]:
        async def build() -> list[dict[str, Any]]:
            rows = await self.db.scalars(
                select(m.Product)
                .where(m.Product.is_active.is_(True), m.Product.is_featured.is_(True))
                .order_by(m.Product.created_at.desc())
                .limit(limit)
            )
            return [ProductView.of(p).dump() for p in rows.unique()]

        return [ProductView.load(p) for p in await cached(self.redis, "featured", {"limit": limit}, build)]

    async def product_page(self, slug: str) -> tuple[ProductView, list[ProductView]] | None:
        """An active product by slug with up to four others of its category; None when there is none to sell."""

        async def build() -> dict[str, Any] | None:
            product = await self.db.scalar(
                select(m.Product).where(m.Product.slug == slug, m.Product.is_active.is_(True))
            )
            if product is None:
                return None
            return {
                "product": ProductView.of(product).dump(),
                "related": [ProductView.of(p).dump() for p in await self.related(product)],
            }

        data = await cached(self.redis, "product", {"slug": slug}, build)
        if data is None:
            return None
        return ProductView.load(data["product"]), [ProductView.load(p) for p in data["related"]]

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
