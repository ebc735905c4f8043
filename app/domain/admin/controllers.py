"""The back office's shell: the analytics dashboard every staff member lands on. Each screen lives with its noun
(``app/domain/<noun>/admin*.py``); see docs/architecture.md."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.analytics.ranges import PRESETS, parse_range
from app.domain.analytics.services import dashboard_data
from app.domain.payments.health import webhook_health
from app.domain.sync.services import latest_run
from app.lib.htmx import render, wants_fragment
from app.lib.permissions import Access, Resource, access_for, can
from app.lib.runtime import Runtime
from app.server.auth import current_user, requires


class AdminController(Controller):
    path = "/admin"
    guards = [requires(Resource.ADMIN_AREA, Access.READ)]

    @get("/", name="admin:dashboard")
    async def dashboard(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        period: FromQuery[str | None] = None,
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
    ) -> Template:
        """KPIs and charts of a date range against the range before it, and the live activity feed."""
        user = current_user(request)
        access = access_for(user.role if user else None, Resource.ANALYTICS)
        date_range = parse_range(period, start, end)
        data = await dashboard_data(db_session, runtime.redis, date_range, access)
        context: dict[str, Any] = {"data": data, "date_range": date_range, "presets": PRESETS}
        if not wants_fragment(request) and can(user.role if user else None, Resource.SYSTEM, Access.FULL):
            # Admins also see how the Stripe mirror is doing: webhooks and the last full sync.
            context["health"] = await webhook_health(db_session, runtime.redis, runtime.settings)
            context["last_sync"] = await latest_run(db_session)
        return render(request, "admin/dashboard.html.j2", context, fragment="admin/_analytics.html.j2")
