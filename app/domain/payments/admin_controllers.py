"""The webhook event log in the back office (admins only): list, export, detail, replay, mark ignored, health."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit
from uuid import UUID

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.audit.services import Actor
from app.domain.payments.admin import (
    EVENTS_CSV_HEADER,
    STATUS_LABELS,
    event_csv_row,
    event_detail,
    events_query,
    failed_matching,
    ignore_events,
    replay_events,
    replay_failed,
    request_catch_up,
    stored_types,
    webhooks_table,
)
from app.domain.payments.health import cached_alert, webhook_health
from app.lib.htmx import flash, redirect, render
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.tables import TableState, export_for, parse_ids, table_for
from app.server.auth import requires

log = structlog.get_logger()


def _back_to_list(request: Request[Any, Any, Any]) -> str:
    """Where a bulk action returns: the list as the admin was looking at it (HTMX says which URL that was)."""
    base = request.app.route_reverse("admin:webhooks")
    current = urlsplit(request.headers.get("hx-current-url", ""))
    if current.path == base:
        return f"{base}?{current.query}" if current.query else base
    return base


class AdminWebhookController(Controller):
    path = "/admin/webhooks"
    guards = [requires(Resource.SYSTEM, Access.FULL)]

    @get("/", name="admin:webhooks")
    async def webhooks(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        spec = webhooks_table(await stored_types(db_session))
        table = await table_for(request, db_session, spec, events_query, export_route="admin:webhooks_export")
        state = table.state
        health = await webhook_health(db_session, runtime.redis, runtime.settings)
        filter_params = {k: v for k, v in state.params().items() if k in {"type", "q"}}
        return render(
            request,
            "admin/webhooks.html.j2",
            {
                "table": table,
                "labels": STATUS_LABELS,
                "health": health,
                "failed_count": await failed_matching(db_session, state),
                "filter_params": filter_params,
                "row_id": lambda ev: ev.id,
            },
            fragment="admin/_webhooks_table.html.j2",
        )

    @get("/export.csv", name="admin:webhooks_export")
    async def export(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Stream:
        spec = webhooks_table(await stored_types(db_session))
        return export_for(request, runtime, spec, events_query, EVENTS_CSV_HEADER, event_csv_row, name="stripe-events")

    @get("/alert", name="admin:webhooks_alert")
    async def alert(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        """The banner every admin page loads (cached ~30 s): empty when all is well."""
        message = await cached_alert(db_session, runtime.redis, runtime.settings)
        return Template(
            template_name="admin/_webhook_alert.html.j2",
            context={"message": message},
            headers={"Cache-Control": "no-store"},
        )

    @get("/{event_id:uuid}", name="admin:webhook")
    async def webhook(
        self, request: Request[Any, Any, Any], event_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        detail = await event_detail(db_session, event_id)
        return render(
            request,
            "admin/webhook.html.j2",
            {"detail": detail, "ev": detail.event, "labels": STATUS_LABELS},
            fragment="admin/_webhook_summary.html.j2",
        )

    @post("/{event_id:uuid}/replay", name="admin:webhook_replay")
    async def replay_one(
        self,
        request: Request[Any, Any, Any],
        event_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
        queue: NamedDependency[Queue],
    ) -> Response[Any]:
        result = await replay_events(db_session, queue, [event_id], actor=actor)
        flash(
            request,
            "Replay queued: the status updates when the worker is done."
            if result.done
            else "That event can't be replayed now.",
            "success" if result.done else "error",
        )
        return redirect(request, request.app.route_reverse("admin:webhook", event_id=event_id))

    @post("/{event_id:uuid}/ignore", name="admin:webhook_ignore")
    async def ignore_one(
        self,
        request: Request[Any, Any, Any],
        event_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        result = await ignore_events(db_session, [event_id], actor=actor)
        flash(
            request,
            "Marked ignored." if result.done else "Only received or failed events can be ignored.",
            "success" if result.done else "error",
        )
        return redirect(request, request.app.route_reverse("admin:webhook", event_id=event_id))

    @post("/replay", name="admin:webhooks_replay")
    async def replay_selected(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
        queue: NamedDependency[Queue],
    ) -> Response[Any]:
        form = await request.form()
        result = await replay_events(db_session, queue, parse_ids(form.getall("ids", [])), actor=actor)
        flash(request, result.message("Replayed"), "success" if result.done else "info")
        return redirect(request, _back_to_list(request))

    @post("/ignore", name="admin:webhooks_ignore")
    async def ignore_selected(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession], actor: NamedDependency[Actor]
    ) -> Response[Any]:
        form = await request.form()
        result = await ignore_events(db_session, parse_ids(form.getall("ids", [])), actor=actor)
        flash(request, result.message("Marked ignored"), "success" if result.done else "info")
        return redirect(request, _back_to_list(request))

    @post("/replay-failed", name="admin:webhooks_replay_failed")
    async def replay_all_failed(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
        queue: NamedDependency[Queue],
    ) -> Response[Any]:
        form = await request.form()
        params = {k: str(form.get(k) or "") for k in ("type", "q") if form.get(k)}
        spec = webhooks_table(await stored_types(db_session))
        state = TableState.from_query(spec, params)
        result = await replay_failed(db_session, queue, state, actor=actor)
        flash(request, result.message("Replayed"), "success" if result.done else "info")
        back = request.app.route_reverse("admin:webhooks")
        return redirect(request, f"{back}?{urlencode({**params, 'status': 'failed'})}")

    @post("/catch-up", name="admin:webhooks_catch_up")
    async def run_catch_up(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
        queue: NamedDependency[Queue],
    ) -> Response[Any]:
        """Run the Events API catch-up now instead of at the next 5-minute tick (the job's lock keeps runs apart)."""
        queued = await request_catch_up(db_session, queue, actor=actor)
        message = "Catch-up started: the health card shows its result." if queued else "A catch-up is already queued."
        flash(request, message, "success" if queued else "info")
        return redirect(request, request.app.route_reverse("admin:webhooks"))
