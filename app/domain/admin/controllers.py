"""The back office: the analytics dashboard, bookings and the email outbox. Every route declares its permission."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.accounts.deps import provide_email_service
from app.domain.admin.bookings import (
    BOOKING_STATUS_LABELS,
    BOOKINGS_CSV_HEADER,
    BOOKINGS_TABLE,
    booking_csv_row,
    bookings_query,
)
from app.domain.admin.emails import EMAILS_CSV_HEADER, email_csv_row, emails_query, emails_table
from app.domain.analytics.ranges import PRESETS, parse_range
from app.domain.analytics.services import dashboard_data
from app.domain.notifications.services import EmailService
from app.domain.payments.health import webhook_health
from app.domain.sync.services import latest_run
from app.lib.exceptions import NotFoundError
from app.lib.htmx import render, wants_fragment
from app.lib.permissions import Access, Resource, access_for, can
from app.lib.redact import mask_secret_links
from app.lib.runtime import Runtime
from app.lib.tables import export_for, table_for
from app.server.auth import current_user, requires
from app.server.security_headers import SANDBOXED_DOCUMENT_CSP


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
        context: dict[str, Any] = {"data": data, "date_range": date_range, "presets": PRESETS}
        if not wants_fragment(request) and can(user.role if user else None, Resource.SYSTEM, Access.FULL):
            # Admins also see how the Stripe mirror is doing: webhooks and the last full sync.
            context["health"] = await webhook_health(db_session, runtime.redis, runtime.settings)
            context["last_sync"] = await latest_run(db_session)
        return render(request, "admin/dashboard.html.j2", context, fragment="admin/_analytics.html.j2")

    @get("/bookings", name="admin:bookings", guards=[requires(Resource.SUBSCRIPTIONS, Access.READ)])
    async def bookings(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(
            request, db_session, BOOKINGS_TABLE, bookings_query, export_route="admin:bookings_export"
        )
        return render(
            request,
            "admin/bookings.html.j2",
            {"table": table, "labels": BOOKING_STATUS_LABELS},
            fragment="admin/_bookings_table.html.j2",
        )

    @get("/bookings/export.csv", name="admin:bookings_export", guards=[requires(Resource.SUBSCRIPTIONS, Access.READ)])
    async def bookings_export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(
            request, runtime, BOOKINGS_TABLE, bookings_query, BOOKINGS_CSV_HEADER, booking_csv_row, name="bookings"
        )

    @get("/emails", name="admin:emails", guards=[requires(Resource.SYSTEM, Access.FULL)])
    async def emails(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        spec = await emails_table(db_session)
        table = await table_for(request, db_session, spec, emails_query, export_route="admin:emails_export")
        return render(request, "admin/emails.html.j2", {"table": table}, fragment="admin/_emails_table.html.j2")

    @get("/emails/export.csv", name="admin:emails_export", guards=[requires(Resource.SYSTEM, Access.FULL)])
    async def emails_export(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        db_session: NamedDependency[AsyncSession],
    ) -> Stream:
        spec = await emails_table(db_session)
        return export_for(request, runtime, spec, emails_query, EMAILS_CSV_HEADER, email_csv_row, name="emails")

    @get("/emails/{email_id:uuid}", name="admin:email", guards=[requires(Resource.SYSTEM, Access.FULL)])
    async def email(
        self, request: Request[Any, Any, Any], email_id: FromPath[UUID], email_service: NamedDependency[EmailService]
    ) -> Template:
        message = await email_service.get(email_id)
        if message is None:
            raise NotFoundError("That email doesn't exist.")
        # Staff read what was sent, not the customer's working reset, verification or download links.
        context = {"email": message, "text_body": mask_secret_links(message.text_body)}
        return render(request, "admin/email.html.j2", context)

    @get("/emails/{email_id:uuid}/html", name="admin:email_html", guards=[requires(Resource.SYSTEM, Access.FULL)])
    async def email_html(self, email_id: FromPath[UUID], email_service: NamedDependency[EmailService]) -> Response[str]:
        """The email's HTML as its own sandboxed document, framed by the email page: an email's inline styles
        need a policy of their own (a srcdoc frame inherits the page's ``style-src 'self'``). Secret links masked."""
        message = await email_service.get(email_id)
        if message is None:
            raise NotFoundError("That email doesn't exist.")
        return Response(
            mask_secret_links(message.html_body),
            media_type=MediaType.HTML,
            headers={"Content-Security-Policy": SANDBOXED_DOCUMENT_CSP, "Cache-Control": "private, no-store"},
        )
