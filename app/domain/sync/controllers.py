"""`/admin/sync`: "Sync now", live progress, cancel, run reports. Admins only (system: full)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Template
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.audit.services import Actor
from app.domain.sync.jobs import enqueue_sync_job
from app.domain.sync.services import (
    LABELS,
    RESOURCES,
    get_run,
    latest_run,
    parse_options,
    recent_runs,
    request_cancel,
    resource_views,
    start_sync,
)
from app.lib.exceptions import ConflictError, FormError
from app.lib.htmx import flash, redirect, render
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.server.auth import current_user, requires

log = structlog.get_logger()


async def _index(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str = "",
    status_code: int = 200,
) -> Template:
    run = await latest_run(db)
    return render(
        request,
        "admin/sync.html.j2",
        {
            "run": run,
            "views": resource_views(run) if run else [],
            "runs": await recent_runs(db),
            "form": form or {},
            "errors": errors or {},
            "message": message,
            "resources": [(r, LABELS[r]) for r in RESOURCES],
        },
        fragment="admin/_sync_form.html.j2",
        status_code=status_code,
    )


class AdminSyncController(Controller):
    path = "/admin/sync"
    guards = [requires(Resource.SYSTEM, Access.FULL)]

    @get("/", name="admin:sync")
    async def index(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        return await _index(request, db_session)

    @post("/", name="admin:sync_start")
    async def start(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[dict[str, Any]],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        staff = current_user(request)
        assert staff is not None
        form = dict(data)
        only = form.get("only") or []
        only = only if isinstance(only, list) else [only]
        form["only"] = only
        try:
            options = parse_options(str(form.get("since") or ""), only)
            run = await start_sync(
                db_session,
                runtime.redis,
                trigger=m.SyncTrigger.MANUAL,
                options=options,
                requested_by=staff,
                actor=actor,
            )
        except FormError as exc:
            return await _index(request, db_session, form=form, errors=exc.errors, message=str(exc), status_code=422)
        except ConflictError as exc:
            return await _index(request, db_session, form=form, message=str(exc), status_code=409)
        log.info("admin.sync_started", run=str(run.id), staff=str(staff.id), options=options.to_json())
        await enqueue_sync_job(queue, run.id)
        flash(
            request, "Sync started." if run.resumed_from_id is None else "Sync resumed from the last page.", "success"
        )
        return redirect(request, request.app.route_reverse("admin:sync_run", run_id=run.id))

    @get("/runs/{run_id:uuid}", name="admin:sync_run")
    async def run(
        self, request: Request[Any, Any, Any], run_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        run = await get_run(db_session, run_id)
        return render(
            request,
            "admin/sync_run.html.j2",
            {"run": run, "views": resource_views(run)},
            fragment="admin/_sync_progress.html.j2",
        )

    @post("/runs/{run_id:uuid}/cancel", name="admin:sync_cancel")
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        staff = current_user(request)
        assert staff is not None
        try:
            await request_cancel(db_session, run_id, actor=actor)
        except ConflictError as exc:
            flash(request, str(exc), "error")
            return redirect(request, request.app.route_reverse("admin:sync_run", run_id=run_id))
        log.info("admin.sync_cancel_requested", run=str(run_id), staff=str(staff.id))
        flash(request, "Cancelling: the sync stops after its current page.", "success")
        return redirect(request, request.app.route_reverse("admin:sync_run", run_id=run_id))

    @get("/status", name="admin:sync_status")
    async def status(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        """The "Last synced" card alone (the dashboard includes the same partial)."""
        return render(
            request,
            "admin/_sync_status.html.j2",
            {"last_sync": await latest_run(db_session)},
            fragment="admin/_sync_status.html.j2",
        )
