"""Membership plans in the back office: the list needs plans:read (admin, support); every change plans:full (admin)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Stream, Template
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.audit.services import Actor
from app.domain.catalog.cache import invalidate_catalog
from app.domain.plans.admin import (
    PLANS_CSV_HEADER,
    PLANS_TABLE,
    PRICE_FIELDS,
    STATUS_LABELS,
    choices,
    create_plan,
    current_price,
    form_values,
    get_plan,
    move_key_prefix,
    old_price_groups,
    parse_plan_form,
    plan_csv_row,
    plans_query,
    request_move,
    set_archived,
    sync_to_stripe,
    update_plan,
)
from app.lib.exceptions import ApplicationError, FormError, NotFoundError
from app.lib.htmx import flash, redirect, render, render_form
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.tables import export_for, table_for
from app.server.auth import requires

CHANGE = [requires(Resource.PLANS, Access.FULL)]
STRIPE_LATER = " Stripe could not be reached: its prices follow at the next subscription or `cartwright plans sync`."


async def _form_page(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    plan: m.Plan | None,
    *,
    form: dict[str, str] | None = None,
    downloads: list[str] | None = None,
    error: ApplicationError | None = None,
    move_key: str = "",
) -> Template:
    credit_types, products = await choices(db)
    if downloads is None:
        downloads = [str(p.id) for p in plan.downloads] if plan is not None else []
    return render_form(
        request,
        "admin/plan.html.j2",
        {
            "plan": plan,
            "selected_downloads": set(downloads),
            "credit_types": credit_types,
            "products": products,
            "price_fields": PRICE_FIELDS,
            "old_groups": await old_price_groups(db, plan) if plan is not None else [],
            "move_key": move_key,
        },
        fragment="admin/_plan_form.html.j2",
        form=form if form is not None else form_values(plan),
        error=error,
    )


async def _read_form(request: Request[Any, Any, Any]) -> tuple[dict[str, str], list[str]]:
    raw = await request.form()
    form = {key: str(value) for key, value in raw.items() if key != "download_ids"}
    downloads = [str(v) for v in raw.getall("download_ids")] if "download_ids" in raw else []
    return form, downloads


class AdminPlanController(Controller):
    path = "/admin/plans"
    guards = [requires(Resource.PLANS, Access.READ)]

    @get("/", name="admin:plans")
    async def index(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(request, db_session, PLANS_TABLE, plans_query, export_route="admin:plans_export")
        return render(
            request,
            "admin/plans.html.j2",
            {"table": table, "labels": STATUS_LABELS, "current_price": current_price},
            fragment="admin/_plans_table.html.j2",
        )

    @get("/export.csv", name="admin:plans_export")
    async def export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(request, runtime, PLANS_TABLE, plans_query, PLANS_CSV_HEADER, plan_csv_row, name="plans")

    @get("/new", name="admin:plan_new", guards=CHANGE)
    async def new(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        return await _form_page(request, db_session, None)

    @post("/", name="admin:plan_create", guards=CHANGE)
    async def create(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form, downloads = await _read_form(request)
        credit_types, products = await choices(db_session)
        try:
            parsed = parse_plan_form(
                form, download_ids=downloads, credit_types=credit_types, product_ids={p.id for p in products}
            )
            plan = await create_plan(db_session, parsed, actor=actor)
        except FormError as exc:
            await db_session.rollback()
            return await _form_page(request, db_session, None, form=form, downloads=downloads, error=exc)
        name, plan_id = plan.name, plan.id  # read now: a refused sync rolls back and expires the row
        synced = await sync_to_stripe(db_session, runtime.stripe, plan)
        await invalidate_catalog(runtime.redis)  # committed: the pricing page shows it on the next request
        flash(
            request,
            f"{name} created: it is on the pricing page now." + ("" if synced else STRIPE_LATER),
            "success" if synced else "info",
        )
        return redirect(request, request.app.route_reverse("admin:plan", plan_id=plan_id))

    @get("/{plan_id:uuid}", name="admin:plan")
    async def show(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        move: FromQuery[str] = "",
    ) -> Template:
        plan = await get_plan(db_session, plan_id)
        return await _form_page(
            request, db_session, plan, move_key=move if move.startswith(move_key_prefix(plan.id)) else ""
        )

    @post("/{plan_id:uuid}", name="admin:plan_update", guards=CHANGE)
    async def update(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        plan = await get_plan(db_session, plan_id)
        form, downloads = await _read_form(request)
        credit_types, products = await choices(db_session)
        try:
            parsed = parse_plan_form(
                form, download_ids=downloads, credit_types=credit_types, product_ids={p.id for p in products}
            )
            changed = await update_plan(db_session, plan, parsed, actor=actor)
        except FormError as exc:
            await db_session.rollback()
            plan = await get_plan(db_session, plan_id)
            return await _form_page(request, db_session, plan, form=form, downloads=downloads, error=exc)
        if not changed:
            flash(request, "Nothing changed.", "info")
        else:
            plan = await get_plan(db_session, plan_id)
            name = plan.name  # read now: a refused sync rolls back and expires the row
            synced = await sync_to_stripe(db_session, runtime.stripe, plan)
            await invalidate_catalog(runtime.redis)
            flash(request, f"{name} saved." + ("" if synced else STRIPE_LATER), "success" if synced else "info")
        return redirect(request, request.app.route_reverse("admin:plan", plan_id=plan_id))

    @post("/{plan_id:uuid}/archive", name="admin:plan_archive", guards=CHANGE)
    async def archive(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        plan = await get_plan(db_session, plan_id)
        changed = await set_archived(db_session, plan, True, actor=actor)
        await db_session.commit()
        await invalidate_catalog(runtime.redis)  # after the commit: off the (cached) pricing page at once
        note = "Its subscribers keep it and renew as before." if changed else "It was already archived."
        flash(request, f"{plan.name} archived: it is off the pricing page. {note}", "info")
        return redirect(request, request.app.route_reverse("admin:plans"))

    @post("/{plan_id:uuid}/restore", name="admin:plan_restore", guards=CHANGE)
    async def restore(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        plan = await get_plan(db_session, plan_id)
        await set_archived(db_session, plan, False, actor=actor)
        await db_session.commit()
        await invalidate_catalog(runtime.redis)
        flash(request, f"{plan.name} is on sale again.", "success")
        return redirect(request, request.app.route_reverse("admin:plan", plan_id=plan.id))

    @post("/{plan_id:uuid}/move-subscribers", name="admin:plan_move", guards=CHANGE)
    async def move(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        plan = await get_plan(db_session, plan_id)
        key = await request_move(db_session, queue, plan, actor=actor)
        flash(request, "Moving subscribers: the result shows below when it is done.", "info")
        return redirect(request, request.app.route_reverse("admin:plan", plan_id=plan.id) + f"?move={key}")

    @get("/{plan_id:uuid}/move-subscribers/{key:str}", name="admin:plan_move_status")
    async def move_status(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[UUID],
        key: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        queue: NamedDependency[Queue],
    ) -> Template:
        """The move's progress fragment, polled by the plan page until the job has finished."""
        plan = await get_plan(db_session, plan_id)
        if not key.startswith(move_key_prefix(plan.id)):
            raise NotFoundError("No such move.")
        job = await queue.job(key)
        # Finished jobs expire from Redis after a while; the audit log keeps every run's summary.
        move = {"status": "gone", "result": None}
        if job is not None:
            move = {"status": getattr(job.status, "value", str(job.status)), "result": job.result}
        return render(
            request,
            "admin/_plan_move.html.j2",
            {"plan": plan, "move_key": key, "move": move, "old_groups": await old_price_groups(db_session, plan)},
        )
