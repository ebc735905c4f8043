"""Categories in the back office: reading needs products:read, changes products:full."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.audit.services import Actor
from app.domain.catalog.admin_categories import (
    categories_with_counts,
    category_form_values,
    create_category,
    delete_category,
    get_category,
    parse_category_form,
    update_category,
)
from app.domain.catalog.cache import invalidate_catalog
from app.lib.exceptions import ApplicationError, ConflictError, FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render, render_form
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.server.auth import requires

FULL = [requires(Resource.PRODUCTS, Access.FULL)]


def _form_page(
    request: Request[Any, Any, Any],
    category: Any,
    *,
    form: dict[str, str] | None = None,
    error: ApplicationError | None = None,
) -> Template:
    return render_form(
        request,
        "admin/category.html.j2",
        {"category": category},
        fragment="admin/_category_form.html.j2",
        form=form if form is not None else category_form_values(category),
        error=error,
    )


class AdminCategoryController(Controller):
    path = "/admin/categories"
    guards = [requires(Resource.PRODUCTS, Access.READ)]

    @get("/", name="admin:categories")
    async def categories(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        return render(request, "admin/categories.html.j2", {"rows": await categories_with_counts(db_session)})

    @get("/new", name="admin:category_new", guards=FULL)
    async def new(self, request: Request[Any, Any, Any]) -> Template:
        return _form_page(request, None)

    @post("/", name="admin:category_create", guards=FULL)
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        try:
            category = await create_category(db_session, parse_category_form(form), actor=actor)
        except FormError as exc:
            return _form_page(request, None, form=form, error=exc)
        await invalidate_catalog(runtime.redis)
        flash(request, f"Category “{category.name}” created.", "success")
        return redirect(request, request.app.route_reverse("admin:categories"))

    @get("/{category_id:uuid}", name="admin:category")
    async def category(
        self, request: Request[Any, Any, Any], category_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return _form_page(request, await get_category(db_session, category_id))

    @post("/{category_id:uuid}", name="admin:category_update", guards=FULL)
    async def update(
        self,
        request: Request[Any, Any, Any],
        category_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        category = await get_category(db_session, category_id)
        try:
            changed = await update_category(db_session, category, parse_category_form(form), actor=actor)
        except FormError as exc:
            category = await get_category(db_session, category_id)
            return _form_page(request, category, form=form, error=exc)
        if changed:
            await invalidate_catalog(runtime.redis)
        flash(request, "Saved." if changed else "Nothing changed.", "success")
        return redirect(request, request.app.route_reverse("admin:categories"))

    @post("/{category_id:uuid}/delete", name="admin:category_delete", guards=FULL)
    async def delete(
        self,
        request: Request[Any, Any, Any],
        category_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        category = await get_category(db_session, category_id)
        try:
            await delete_category(db_session, category, actor=actor)
        except ConflictError as exc:
            return _form_page(request, category, error=exc)
        await invalidate_catalog(runtime.redis)
        flash(request, f"Category “{category.name}” deleted.", "success")
        return redirect(request, request.app.route_reverse("admin:categories"))
