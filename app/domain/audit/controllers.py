"""The audit log, read-only, for admins (system:full)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.audit.services import audit_query, audit_table
from app.lib.htmx import render
from app.lib.permissions import Access, Resource
from app.lib.tables import table_for
from app.server.auth import requires


class AuditController(Controller):
    path = "/admin/audit"
    guards = [requires(Resource.SYSTEM, Access.FULL)]

    @get("/", name="admin:audit")
    async def audit(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(request, db_session, await audit_table(db_session), audit_query)
        return render(request, "admin/audit.html.j2", {"table": table}, fragment="admin/_audit_table.html.j2")
