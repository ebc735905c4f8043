"""Subscriptions and refunds in the back office: read-only tables with CSV export."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.admin.refunds import REFUNDS_CSV_HEADER, REFUNDS_TABLE, refund_csv_row, refunds_query
from app.domain.admin.subscriptions import (
    SUBSCRIPTIONS_CSV_HEADER,
    SUBSCRIPTIONS_TABLE,
    subscription_csv_row,
    subscriptions_query,
)
from app.lib.htmx import render
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.tables import export_for, table_for
from app.server.auth import requires


class AdminSubscriptionController(Controller):
    path = "/admin/subscriptions"
    guards = [requires(Resource.SUBSCRIPTIONS, Access.READ)]

    @get("/", name="admin:subscriptions")
    async def subscriptions(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        table = await table_for(
            request, db_session, SUBSCRIPTIONS_TABLE, subscriptions_query, export_route="admin:subscriptions_export"
        )
        return render(
            request, "admin/subscriptions.html.j2", {"table": table}, fragment="admin/_subscriptions_table.html.j2"
        )

    @get("/export.csv", name="admin:subscriptions_export")
    async def export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(
            request,
            runtime,
            SUBSCRIPTIONS_TABLE,
            subscriptions_query,
            SUBSCRIPTIONS_CSV_HEADER,
            subscription_csv_row,
            name="subscriptions",
        )


class AdminRefundController(Controller):
    path = "/admin/refunds"
    guards = [requires(Resource.REFUNDS, Access.READ)]

    @get("/", name="admin:refunds")
    async def refunds(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(request, db_session, REFUNDS_TABLE, refunds_query, export_route="admin:refunds_export")
        return render(request, "admin/refunds.html.j2", {"table": table}, fragment="admin/_refunds_table.html.j2")

    @get("/export.csv", name="admin:refunds_export")
    async def export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(
            request, runtime, REFUNDS_TABLE, refunds_query, REFUNDS_CSV_HEADER, refund_csv_row, name="refunds"
        )
