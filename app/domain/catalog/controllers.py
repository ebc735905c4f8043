"""Public catalog pages: home, product listing (HTMX grid), product detail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from app.domain.catalog.covers import COVER_ROUTE, cover_key
from app.domain.catalog.services import CatalogService, ProductQuery, SortOrder
from app.lib.exceptions import NotFoundError
from app.lib.runtime import Runtime
from app.lib.storage import ObjectMissingError, StorageKeyError, stored_response
from app.server.page_cache import render_shared


@asynccontextmanager
async def _catalog(runtime: Runtime) -> AsyncIterator[CatalogService]:
    """The catalog with a database session of its own: opened only when a page is not already stored (render_shared),
    so a stored page costs no session, no connection and no commit."""
    async with runtime.db() as db:
        yield CatalogService(db, runtime.redis)


class CatalogController(Controller):
    @get("/", name="catalog:home")
    async def home(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]
    ) -> Response[bytes] | Template:
        async def build() -> dict[str, Any]:
            async with _catalog(runtime) as catalog:
                return {"featured": await catalog.featured(), "categories": await catalog.categories()}

        return await render_shared(request, "catalog/home.html.j2", build)

    @get("/products", name="catalog:list")
    async def products(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        category: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        sort: FromQuery[str | None] = None,
        page: FromQuery[str | None] = None,
    ) -> Response[bytes] | Template:
        query = ProductQuery.parse(category=category, q=q, sort=sort, page=page)

        async def build() -> dict[str, Any]:
            async with _catalog(runtime) as catalog:
                result = await catalog.list_products(query)
                categories = await catalog.categories()
            return {"result": result, "query": query, "categories": categories, "sort_orders": SortOrder}

        return await render_shared(request, "catalog/list.html.j2", build, fragment="catalog/_product_grid.html.j2")

    @get("/products/{slug:str}", name="catalog:detail")
    async def detail(
        self, request: Request[Any, Any, Any], slug: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> Response[bytes] | Template:
        async def build() -> dict[str, Any]:
            async with _catalog(runtime) as catalog:
                found = await catalog.product_page(slug)
            if found is None:
                raise NotFoundError("That product doesn't exist or is no longer for sale.")
            product, related = found
            return {"product": product, "related": related}

        return await render_shared(request, "catalog/detail.html.j2", build)

    @get(f"{COVER_ROUTE}/{{key:path}}", name="catalog:cover", cache_control=None)
    async def cover(self, key: FromPath[str], runtime: NamedDependency[Runtime]) -> Response[Any]:
        """An uploaded cover's thumbnail. Public: covers only (never a purchased file); immutable, since a new
        upload gets a new URL."""
        stored_key = cover_key(key.lstrip("/"))  # path parameters keep their leading /
        if stored_key is None:
            raise NotFoundError("No such image.")
        try:
            stored = await runtime.storage.open(stored_key)
        except (ObjectMissingError, StorageKeyError) as exc:
            raise NotFoundError("No such image.") from exc
        return stored_response(
            stored,
            filename=stored_key.rpartition("/")[2],
            media_type="image/webp",
            disposition="inline",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )
