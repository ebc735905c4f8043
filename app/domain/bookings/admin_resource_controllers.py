"""Rooms and desks in the back office: the list needs rooms:read (admin, support); every change rooms:full (admin)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.audit.services import Actor
from app.domain.bookings.admin_resources import (
    KINDS,
    RESOURCES_CSV_HEADER,
    RESOURCES_TABLE,
    STATUS_LABELS,
    add_closure,
    closures,
    create_resource,
    credit_types,
    form_values,
    get_resource,
    hours_summary,
    parse_closure,
    parse_resource_form,
    remove_closure,
    resource_csv_row,
    resources_query,
    set_archived,
    update_resource,
)
from app.domain.bookings.schedule import WEEKDAYS
from app.lib.exceptions import ApplicationError, FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render, render_form
from app.lib.localtime import local_today
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.tables import export_for, table_for
from app.server.auth import requires

CHANGE = [requires(Resource.ROOMS, Access.FULL)]


async def _form_page(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    resource: m.BookableResource | None,
    *,
    form: dict[str, str] | None = None,
    error: ApplicationError | None = None,
    closure_form: dict[str, str] | None = None,
    closure_error: FormError | None = None,
    fragment: str = "admin/_resource_form.html.j2",
) -> Template:
    """The room or desk's page: its own form, and the form that closes it on given days (each with its errors)."""
    return render_form(
        request,
        "admin/resource.html.j2",
        {
            "resource": resource,
            "credit_types": await credit_types(db),
            "kinds": KINDS,
            "weekdays": WEEKDAYS,
            "closures": await closures(db, resource.id, today=local_today()) if resource else [],
            "closure_form": closure_form or {},
            "closure_errors": closure_error.errors if closure_error else {},
        },
        fragment=fragment,
        form=form if form is not None else form_values(resource),
        error=error,
        status_code=closure_error.status_code if closure_error else None,
    )


async def _holidays_page(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    return render(
        request,
        "admin/holidays.html.j2",
        {
            "closures": await closures(db, None, today=local_today()),
            "closure_form": form or {},
            "closure_errors": errors or {},
            "resource": None,
        },
        fragment="admin/_closures.html.j2",
        status_code=status_code,
    )


class AdminResourceController(Controller):
    path = "/admin/resources"
    guards = [requires(Resource.ROOMS, Access.READ)]

    @get("/", name="admin:resources")
    async def index(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(
            request, db_session, RESOURCES_TABLE, resources_query, export_route="admin:resources_export"
        )
        return render(
            request,
            "admin/resources.html.j2",
            {"table": table, "labels": STATUS_LABELS, "kinds": KINDS, "hours_summary": hours_summary},
            fragment="admin/_resources_table.html.j2",
        )

    @get("/export.csv", name="admin:resources_export")
    async def export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(
            request,
            runtime,
            RESOURCES_TABLE,
            resources_query,
            RESOURCES_CSV_HEADER,
            resource_csv_row,
            name="rooms-and-desks",
        )

    @get("/new", name="admin:resource_new", guards=CHANGE)
    async def new(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        return await _form_page(request, db_session, None)

    @post("/", name="admin:resource_create", guards=CHANGE)
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        try:
            parsed = parse_resource_form(form, {t.id for t in await credit_types(db_session)})
            resource = await create_resource(db_session, parsed, actor=actor)
        except FormError as exc:
            return await _form_page(request, db_session, None, form=form, error=exc)
        flash(request, f"{resource.name} created: customers can book it now.", "success")
        return redirect(request, request.app.route_reverse("admin:resource", resource_id=resource.id))

    @get("/holidays", name="admin:holidays")
    async def holidays(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        """Shop-wide closures: every room and desk at once (public holidays)."""
        return await _holidays_page(request, db_session)

    @post("/holidays", name="admin:holiday_add", guards=CHANGE)
    async def add_holiday(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        try:
            starts_on, ends_on, reason = parse_closure(form, today=local_today())
        except FormError as exc:
            return await _holidays_page(request, db_session, form=form, errors=exc.errors, status_code=422)
        await add_closure(db_session, None, starts_on, ends_on, reason, actor=actor)
        flash(request, "Every room and desk is closed on those days.", "success")
        return redirect(request, request.app.route_reverse("admin:holidays"))

    @get("/{resource_id:uuid}", name="admin:resource")
    async def show(
        self, request: Request[Any, Any, Any], resource_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return await _form_page(request, db_session, await get_resource(db_session, resource_id))

    @post("/{resource_id:uuid}", name="admin:resource_update", guards=CHANGE)
    async def update(
        self,
        request: Request[Any, Any, Any],
        resource_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        resource = await get_resource(db_session, resource_id)
        form = dict(data)
        try:
            parsed = parse_resource_form(form, {t.id for t in await credit_types(db_session)})
            changed = await update_resource(db_session, resource, parsed, actor=actor)
        except FormError as exc:
            await db_session.rollback()
            resource = await get_resource(db_session, resource_id)
            return await _form_page(request, db_session, resource, form=form, error=exc)
        flash(request, f"{resource.name} saved." if changed else "Nothing changed.", "success" if changed else "info")
        return redirect(request, request.app.route_reverse("admin:resource", resource_id=resource.id))

    @post("/{resource_id:uuid}/archive", name="admin:resource_archive", guards=CHANGE)
    async def archive(
        self,
        request: Request[Any, Any, Any],
        resource_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        resource = await get_resource(db_session, resource_id)
        changed = await set_archived(db_session, resource, True, actor=actor)
        note = "Bookings already made stay." if changed else "It was already archived."
        flash(request, f"{resource.name} archived: nobody can book it now. {note}", "info")
        return redirect(request, request.app.route_reverse("admin:resources"))

    @post("/{resource_id:uuid}/restore", name="admin:resource_restore", guards=CHANGE)
    async def restore(
        self,
        request: Request[Any, Any, Any],
        resource_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        resource = await get_resource(db_session, resource_id)
        await set_archived(db_session, resource, False, actor=actor)
        flash(request, f"{resource.name} can be booked again.", "success")
        return redirect(request, request.app.route_reverse("admin:resource", resource_id=resource.id))

    @post("/{resource_id:uuid}/closures", name="admin:resource_closure_add", guards=CHANGE)
    async def close_days(
        self,
        request: Request[Any, Any, Any],
        resource_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        resource = await get_resource(db_session, resource_id)
        form = dict(data)
        try:
            starts_on, ends_on, reason = parse_closure(form, today=local_today())
        except FormError as exc:
            return await _form_page(
                request,
                db_session,
                resource,
                closure_form=form,
                closure_error=exc,
                fragment="admin/_closures.html.j2",
            )
        await add_closure(db_session, resource, starts_on, ends_on, reason, actor=actor)
        flash(request, f"{resource.name} is closed on those days.", "success")
        return redirect(request, request.app.route_reverse("admin:resource", resource_id=resource.id))

    @post("/closures/{closure_id:uuid}/remove", name="admin:closure_remove", guards=CHANGE)
    async def reopen(
        self,
        request: Request[Any, Any, Any],
        closure_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        closure = await remove_closure(db_session, closure_id, actor=actor)
        flash(request, "Reopened: those days can be booked again.", "success")
        if closure.resource_id is None:
            return redirect(request, request.app.route_reverse("admin:holidays"))
        return redirect(request, request.app.route_reverse("admin:resource", resource_id=closure.resource_id))
