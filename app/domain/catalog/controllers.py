"""Public catalog pages: home, product listing (HTMX grid), product detail."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.catalog.services import CatalogService, ProductQuery, SortOrder
from app.lib.exceptions import NotFoundError
from app.lib.htmx import render


def provide_catalog_service(db_session: NamedDependency[AsyncSession]) -> CatalogService:
    return CatalogService(db_session)


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
        product = await catalog.product_by_slug(slug)
        if product is None:
            raise NotFoundError("That product doesn't exist or is no longer for sale.")
        return render(
            request, "catalog/detail.html.j2", {"product": product, "related": await catalog.related(product)}
        )
