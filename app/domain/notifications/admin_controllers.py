"""The email outbox in the back office (admins only, system:full): every email the shop rendered, its delivery
status, and one email as sent, with the customer's secret links masked."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.notifications.admin import EMAILS_CSV_HEADER, email_csv_row, emails_query, emails_table
from app.domain.notifications.dependencies import provide_email_service
from app.domain.notifications.services import EmailService
from app.lib.exceptions import NotFoundError
from app.lib.htmx import render
from app.lib.permissions import Access, Resource
from app.lib.redact import mask_secret_links
from app.lib.runtime import Runtime
from app.lib.tables import export_for, table_for
from app.server.auth import requires
from app.server.security_headers import SANDBOXED_DOCUMENT_CSP


class AdminEmailController(Controller):
    path = "/admin/emails"
    guards = [requires(Resource.SYSTEM, Access.FULL)]
    dependencies = {"email_service": Provide(provide_email_service, sync_to_thread=False)}

    @get("/", name="admin:emails")
    async def emails(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        spec = await emails_table(db_session)
        table = await table_for(request, db_session, spec, emails_query, export_route="admin:emails_export")
        return render(request, "admin/emails.html.j2", {"table": table}, fragment="admin/_emails_table.html.j2")

    @get("/export.csv", name="admin:emails_export")
    async def emails_export(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        db_session: NamedDependency[AsyncSession],
    ) -> Stream:
        spec = await emails_table(db_session)
        return export_for(request, runtime, spec, emails_query, EMAILS_CSV_HEADER, email_csv_row, name="emails")

    @get("/{email_id:uuid}", name="admin:email")
    async def email(
        self, request: Request[Any, Any, Any], email_id: FromPath[UUID], email_service: NamedDependency[EmailService]
    ) -> Template:
        message = await email_service.get(email_id)
        if message is None:
            raise NotFoundError("That email doesn't exist.")
        # Staff read what was sent, not the customer's working reset, verification or download links.
        context = {"email": message, "text_body": mask_secret_links(message.text_body)}
        return render(request, "admin/email.html.j2", context)

    @get("/{email_id:uuid}/html", name="admin:email_html")
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
