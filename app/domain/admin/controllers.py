"""The back office: dashboard shell and the email outbox. Every route declares its permission."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.accounts.deps import provide_email_service
from app.domain.bookings.services import admin_bookings_page
from app.domain.notifications.services import EmailService
from app.domain.sync.services import latest_run
from app.lib.exceptions import NotFoundError
from app.lib.htmx import render
from app.lib.permissions import Access, Resource
from app.server.auth import requires


class AdminController(Controller):
    path = "/admin"
    guards = [requires(Resource.ADMIN_AREA, Access.READ)]
    dependencies = {"email_service": Provide(provide_email_service, sync_to_thread=False)}

    @get("/", name="admin:dashboard")
    async def dashboard(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        counts = {
            "products": await db_session.scalar(select(func.count()).select_from(m.Product)) or 0,
            "customers": await db_session.scalar(
                select(func.count()).select_from(m.User).where(m.User.role == "customer")
            )
            or 0,
            "emails": await db_session.scalar(select(func.count()).select_from(m.EmailMessage)) or 0,
        }
        # "Last synced" with Stripe (admins see it; app/domain/sync).
        return render(request, "admin/dashboard.html.j2", {"counts": counts, "last_sync": await latest_run(db_session)})

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
