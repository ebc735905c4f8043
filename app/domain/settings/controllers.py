"""/admin/settings: the shop settings form (admins only: settings:full)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.audit.services import Actor
from app.domain.settings.services import (
    load_shop_settings,
    parse_settings_form,
    save_shop_settings,
    settings_form_values,
)
from app.lib.exceptions import FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.server.auth import requires


def _page(
    request: Request[Any, Any, Any],
    settings: Settings,
    form: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    message: str = "",
    status_code: int = 200,
) -> Template:
    return render(
        request,
        "admin/settings.html.j2",
        {"form": form, "errors": errors or {}, "message": message, "env_time_zone": settings.shop_time_zone},
        fragment="admin/_settings_form.html.j2",
        status_code=status_code,
    )


class AdminSettingsController(Controller):
    path = "/admin/settings"
    guards = [requires(Resource.SETTINGS, Access.FULL)]

    @get("/", name="admin:settings")
    async def show(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        # Straight from the database: the form shows what is stored, whatever this process has cached.
        return _page(request, runtime.settings, settings_form_values(await load_shop_settings(db_session)))

    @post("/", name="admin:settings_update")
    async def update(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        try:
            changed = await save_shop_settings(db_session, runtime.redis, parse_settings_form(form), actor=actor)
        except FormError as exc:
            return _page(request, runtime.settings, form, errors=exc.errors, message=str(exc), status_code=422)
        flash(request, "Settings saved." if changed else "Nothing changed.", "success")
        return redirect(request, request.app.route_reverse("admin:settings"))
