"""Every member's bookings in the back office: the list and its CSV export (subscriptions:read)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.bookings.admin_bookings import (
    BOOKING_STATUS_LABELS,
    BOOKINGS_CSV_HEADER,
    BOOKINGS_TABLE,
    booking_csv_row,
    bookings_query,
)
from app.lib.htmx import render
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.tables import export_for, table_for
from app.server.auth import requires


class AdminBookingController(Controller):
    path = "/admin"
    guards = [requires(Resource.SUBSCRIPTIONS, Access.READ)]

    @get("/bookings", name="admin:bookings")
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

    @get("/bookings/export.csv", name="admin:bookings_export")
    async def bookings_export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(
            request, runtime, BOOKINGS_TABLE, bookings_query, BOOKINGS_CSV_HEADER, booking_csv_row, name="bookings"
        )
