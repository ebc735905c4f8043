"""The back office: the analytics dashboard, bookings and the email outbox. Every route declares its permission."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.accounts.deps import provide_email_service
from app.domain.analytics.ranges import PRESETS, parse_range
from app.domain.analytics.services import dashboard_data
from app.domain.bookings.services import admin_bookings_page
from app.domain.notifications.services import EmailService
from app.lib.exceptions import NotFoundError
from app.lib.htmx import render
from app.lib.permissions import Access, Resource, access_for
from app.lib.runtime import Runtime
from app.server.auth import current_user, requires


class AdminController(Controller):
    path = "/admin"
    guards = [requires(Resource.ADMIN_AREA, Access.READ)]
    dependencies = {"email_service": Provide(provide_email_service, sync_to_thread=False)}

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
        return render(
            request,
            "admin/dashboard.html.j2",
            {"data": data, "date_range": date_range, "presets": PRESETS},
            fragment="admin/_analytics.html.j2",
        )

    @get("/bookings", name="admin:bookings", guards=[requires(Resource.SUBSCRIPTIONS, Access.READ)])
    async def bookings(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        page: FromQuery[int] = 1,
        show: FromQuery[str] = "upcoming",
    ) -> Template:
        upcoming = show != "all"
        rows, total = await admin_bookings_page(db_session, page=max(1, page), upcoming_only=upcoming)
        return render(
            request,
            "admin/bookings.html.j2",
            {
                "rows": rows,
                "total": total,
                "page": max(1, page),
                "pages": max(1, -(-total // 25)),
                "show": "upcoming" if upcoming else "all",
            },
            fragment="admin/_bookings_table.html.j2",
        )

    @get("/emails", name="admin:emails", guards=[requires(Resource.SYSTEM, Access.FULL)])
    async def emails(
        self, request: Request[Any, Any, Any], email_service: NamedDependency[EmailService], page: FromQuery[int] = 1
    ) -> Template:
        page = max(1, page)
        rows, total = await email_service.list_page(page=page)
        pages = max(1, -(-total // 25))
        return render(
            request,
            "admin/emails.html.j2",
            {"emails": rows, "total": total, "page": page, "pages": pages},
            fragment="admin/_emails_table.html.j2",
        )

    @get("/emails/{email_id:uuid}", name="admin:email", guards=[requires(Resource.SYSTEM, Access.FULL)])
    async def email(
        self, request: Request[Any, Any, Any], email_id: FromPath[UUID], email_service: NamedDependency[EmailService]
    ) -> Template:
        message = await email_service.get(email_id)
        if message is None:
            raise NotFoundError("That email doesn't exist.")
        return render(request, "admin/email.html.j2", {"email": message})
