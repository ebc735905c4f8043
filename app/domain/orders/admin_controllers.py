"""Orders in the back office: list, detail and staff refunds (reading needs orders:read, refunding refunds:full),
and the list of every refund (refunds:read)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import stripe
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.audit.services import Actor
from app.domain.orders.admin import (
    ORDERS_CSV_HEADER,
    ORDERS_TABLE,
    REFUNDS_CSV_HEADER,
    REFUNDS_TABLE,
    OrderDetail,
    order_csv_row,
    order_detail,
    orders_export_query,
    orders_query,
    parse_order_refund_form,
    refund_csv_row,
    refunds_query,
    reissue_downloads,
    request_refund,
    resend_receipt,
)
from app.domain.orders.refunds import STRIPE_REASONS
from app.lib.exceptions import ApplicationError, FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render, render_form
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.stripe_gateway import outcome_unknown, stripe_message
from app.lib.tables import export_for, table_for
from app.lib.tokens import new_form_token
from app.server.auth import requires

log = structlog.get_logger()


def _detail_page(
    request: Request[Any, Any, Any],
    detail: OrderDetail,
    *,
    form: dict[str, str] | None = None,
    error: ApplicationError | None = None,
    form_token: str | None = None,
) -> Template:
    return render_form(
        request,
        "admin/order.html.j2",
        {
            "detail": detail,
            "order": detail.order,
            # Every rendering of the form gets a fresh token; a resubmission of one rendering replays its refund.
            "form_token": form_token or new_form_token(),
            "stripe_reasons": STRIPE_REASONS,
        },
        fragment="admin/_refund_form.html.j2",
        form=form or {},
        error=error,
    )


class AdminOrderController(Controller):
    path = "/admin/orders"
    guards = [requires(Resource.ORDERS, Access.READ)]

    @get("/", name="admin:orders")
    async def orders(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(request, db_session, ORDERS_TABLE, orders_query, export_route="admin:orders_export")
        return render(request, "admin/orders.html.j2", {"table": table}, fragment="admin/_orders_table.html.j2")

    @get("/export.csv", name="admin:orders_export")
    async def export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        """Every order of the current filter, streamed: fine for 100k rows."""
        return export_for(
            request, runtime, ORDERS_TABLE, orders_export_query, ORDERS_CSV_HEADER, order_csv_row, name="orders"
        )

    @get("/{order_id:uuid}", name="admin:order")
    async def order(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        return _detail_page(
            request, await order_detail(db_session, order_id, livemode=runtime.settings.stripe.livemode)
        )

    @post(
        "/{order_id:uuid}/resend-receipt", name="admin:resend_receipt", guards=[requires(Resource.ORDERS, Access.FULL)]
    )
    async def post_resend_receipt(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        order = (await order_detail(db_session, order_id)).order
        try:
            await resend_receipt(db_session, queue, runtime.settings, order, actor=actor)
        except FormError as exc:
            flash(request, str(exc), "error")
        else:
            flash(request, f"Receipt sent again to {order.email}.", "success")
        return redirect(request, request.app.route_reverse("admin:order", order_id=order_id))

    @post(
        "/{order_id:uuid}/reissue-downloads",
        name="admin:reissue_downloads",
        guards=[requires(Resource.ORDERS, Access.FULL)],
    )
    async def post_reissue_downloads(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        order = (await order_detail(db_session, order_id)).order
        try:
            count = await reissue_downloads(db_session, queue, runtime.settings, order, actor=actor)
        except FormError as exc:
            flash(request, str(exc), "error")
        else:
            noun = "download" if count == 1 else "downloads"
            flash(request, f"Fresh links for {count} {noun} sent to {order.email}; download counts reset.", "success")
        return redirect(request, request.app.route_reverse("admin:order", order_id=order_id))

    @post("/{order_id:uuid}/refunds", name="admin:refund", guards=[requires(Resource.REFUNDS, Access.FULL)])
    async def refund(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        detail = await order_detail(db_session, order_id, livemode=runtime.settings.stripe.livemode)
        try:
            refund = parse_order_refund_form(detail.order, form)
            refund_id = await request_refund(db_session, runtime.stripe, detail.order, refund, actor=actor)
        except FormError as exc:
            return _detail_page(request, detail, form=form, error=exc)
        except stripe.StripeError as exc:
            log.warning("admin.refund_refused", order=str(order_id), error=type(exc).__name__, code=exc.code)
            refused = FormError({}, f"Stripe refused the refund: {stripe_message(exc)}")
            # If Stripe may have made the refund, the next press must replay it: keep this form's token.
            token = form.get("form_token") if outcome_unknown(exc) else None
            return _detail_page(request, detail, form=form, error=refused, form_token=token)
        log.info("admin.refund_requested", order=str(order_id), refund=refund_id)
        flash(request, "Refund requested; the order updates when Stripe confirms it.", "success")
        return redirect(request, request.app.route_reverse("admin:order", order_id=order_id))


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
