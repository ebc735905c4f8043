"""Customers in the back office: list and detail need customers:read; holder pricing and credits customers:full."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.accounts.admin_customers import (
    CUSTOMERS_CSV_HEADER,
    CUSTOMERS_TABLE,
    CustomerDetail,
    adjust_credits,
    customer_csv_row,
    customer_detail,
    customer_row,
    customers_query,
    get_customer,
    parse_credit_form,
    set_holder_pricing,
)
from app.domain.audit.services import Actor
from app.lib.exceptions import ApplicationError, FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render, render_form
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.tables import export_for, table_for
from app.lib.tokens import new_form_token
from app.server.auth import requires

log = structlog.get_logger()


def _detail_page(
    request: Request[Any, Any, Any],
    detail: CustomerDetail,
    *,
    form: dict[str, str] | None = None,
    error: ApplicationError | None = None,
) -> Template:
    return render_form(
        request,
        "admin/customer.html.j2",
        {
            "detail": detail,
            "customer": detail.user,
            # Every rendering of the credit form gets a fresh token; resubmitting one rendering adjusts once.
            "form_token": new_form_token(),
        },
        fragment="admin/_credit_form.html.j2",
        form=form or {},
        error=error,
    )


class AdminCustomerController(Controller):
    path = "/admin/customers"
    guards = [requires(Resource.CUSTOMERS, Access.READ)]

    @get("/", name="admin:customers")
    async def customers(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(
            request, db_session, CUSTOMERS_TABLE, customers_query, export_route="admin:customers_export"
        )
        table.rows = [customer_row(row) for row in table.rows]
        return render(request, "admin/customers.html.j2", {"table": table}, fragment="admin/_customers_table.html.j2")

    @get("/export.csv", name="admin:customers_export")
    async def export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(
            request, runtime, CUSTOMERS_TABLE, customers_query, CUSTOMERS_CSV_HEADER, customer_csv_row, name="customers"
        )

    @get("/{user_id:uuid}", name="admin:customer")
    async def customer(
        self, request: Request[Any, Any, Any], user_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return _detail_page(request, await customer_detail(db_session, user_id))

    @post(
        "/{user_id:uuid}/holder-pricing",
        name="admin:customer_holder",
        guards=[requires(Resource.CUSTOMERS, Access.FULL)],
    )
    async def holder_pricing(
        self,
        request: Request[Any, Any, Any],
        user_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        customer = await get_customer(db_session, user_id)
        # An unchecked checkbox sends nothing: absent means off.
        enabled = data.get("holder_pricing", "") in {"on", "true", "1"}
        await set_holder_pricing(db_session, customer, enabled=enabled, actor=actor)
        log.info("admin.holder_pricing", customer=str(user_id), enabled=enabled)
        flash(request, "Holder pricing turned on." if enabled else "Holder pricing turned off.", "success")
        return redirect(request, request.app.route_reverse("admin:customer", user_id=user_id))

    @post(
        "/{user_id:uuid}/credits",
        name="admin:customer_credits",
        guards=[requires(Resource.CUSTOMERS, Access.FULL)],
    )
    async def credits(
        self,
        request: Request[Any, Any, Any],
        user_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        detail = await customer_detail(db_session, user_id)
        try:
            adjustment = parse_credit_form(form, detail.credit_types)
            applied = await adjust_credits(db_session, detail.user, adjustment, actor=actor)
        except FormError as exc:
            # A refused adjustment rolled the session back: read the customer again before rendering.
            detail = await customer_detail(db_session, user_id)
            return _detail_page(request, detail, form=form, error=exc)
        if applied:
            log.info("admin.credits_adjusted", customer=str(user_id), amount=adjustment.amount)
            flash(request, "Credits adjusted.", "success")
        else:
            flash(request, "That adjustment was already applied.", "info")
        return redirect(request, request.app.route_reverse("admin:customer", user_id=user_id))
