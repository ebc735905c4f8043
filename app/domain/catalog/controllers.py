"""Public catalog pages: home, product listing (HTMX grid), product detail."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.catalog.covers import COVER_ROUTE, cover_key
from app.domain.catalog.services import CatalogService, ProductQuery, SortOrder
from app.lib.exceptions import NotFoundError
from app.lib.htmx import render
from app.lib.runtime import Runtime
from app.lib.storage import ObjectMissingError, StorageKeyError, stored_response


def provide_catalog_service(
    db_session: NamedDependency[AsyncSession], runtime: NamedDependency[Runtime]
) -> CatalogService:
    return CatalogService(db_session, runtime.redis)


class CatalogController(Controller):
    dependencies = {"catalog": Provide(provide_catalog_service, sync_to_thread=False)}

    @get("/", name="catalog:home")
    async def home(self, request: Request[Any, Any, Any], catalog: NamedDependency[CatalogService]) -> Template:
        return render(
            request,
            "catalog/home.html.j2",
            {"featured": await catalog.featured(), "categories": await catalog.categories()},
        )

    @get("/products", name="catalog:list")
    async def products(
        self,
        request: Request[Any, Any, Any],
        catalog: NamedDependency[CatalogService],
        category: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        sort: FromQuery[str | None] = None,
        page: FromQuery[str | None] = None,
    ) -> Template:
        query = ProductQuery.parse(category=category, q=q, sort=sort, page=page)
        result = await catalog.list_products(query)
        return render(
            request,
            "catalog/list.html.j2",
            {"result": result, "query": query, "categories": await catalog.categories(), "sort_orders": SortOrder},
            fragment="catalog/_product_grid.html.j2",
        )

    @get("/products/{slug:str}", name="catalog:detail")
    async def detail(
        self, request: Request[Any, Any, Any], slug: FromPath[str], catalog: NamedDependency[CatalogService]
    ) -> Template:
        found = await catalog.product_page(slug)
        if found is None:
            raise NotFoundError("That product doesn't exist or is no longer for sale.")
        product, related = found
        return render(request, "catalog/detail.html.j2", {"product": product, "related": related})

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
