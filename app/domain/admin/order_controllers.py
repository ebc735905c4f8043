"""Orders in the back office: list, detail and staff refunds. Reading needs orders:read, refunding refunds:full."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import stripe
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.admin.orders import (
    PER_PAGE,
    STATUSES,
    OrderDetail,
    admin_orders_page,
    new_form_token,
    order_detail,
    parse_refund_form,
    request_refund,
)
from app.domain.payments.refunds import STRIPE_REASONS
from app.lib.exceptions import FormError
from app.lib.htmx import flash, redirect, render
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.server.auth import current_user, requires

log = structlog.get_logger()


def _detail_page(
    request: Request[Any, Any, Any],
    detail: OrderDetail,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    message: str = "",
    status_code: int = 200,
) -> Template:
    return render(
        request,
        "admin/order.html.j2",
        {
            "detail": detail,
            "order": detail.order,
            "form": form or {},
            "errors": errors or {},
            "message": message,
            # Every rendering of the form gets a fresh token; a resubmission of one rendering replays its refund.
            "form_token": new_form_token(),
            "stripe_reasons": STRIPE_REASONS,
        },
        fragment="admin/_refund_form.html.j2",
        status_code=status_code,
    )


class AdminOrderController(Controller):
    path = "/admin/orders"
    guards = [requires(Resource.ORDERS, Access.READ)]

    @get("/", name="admin:orders")
    async def orders(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        page: FromQuery[int] = 1,
        status: FromQuery[str] = "",
        q: FromQuery[str] = "",
    ) -> Template:
        page = max(1, page)
        status = status if status in STATUSES else ""
        rows, total = await admin_orders_page(db_session, page=page, status=status, q=q)
        return render(
            request,
            "admin/orders.html.j2",
            {
                "orders": rows,
                "total": total,
                "page": page,
                "pages": max(1, -(-total // PER_PAGE)),
                "status": status,
                "q": q.strip(),
                "statuses": STATUSES,
            },
            fragment="admin/_orders_table.html.j2",
        )

    @get("/{order_id:uuid}", name="admin:order")
    async def order(
        self, request: Request[Any, Any, Any], order_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return _detail_page(request, await order_detail(db_session, order_id))

    @post("/{order_id:uuid}/refunds", name="admin:refund", guards=[requires(Resource.REFUNDS, Access.FULL)])
    async def refund(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        data: URLEncodedBody[dict[str, str]],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Template | Response[Any]:
        staff = current_user(request)
        assert staff is not None  # the guard let only signed-in staff through
        form = dict(data)
        detail = await order_detail(db_session, order_id)
        try:
            refund = parse_refund_form(detail.order, form)
            refund_id = await request_refund(db_session, runtime.stripe, detail.order, refund, staff=staff)
        except FormError as exc:
            return _detail_page(request, detail, form=form, errors=exc.errors, message=str(exc), status_code=422)
        except stripe.StripeError as exc:
            log.warning("admin.refund_refused", order=str(order_id), error=type(exc).__name__, code=exc.code)
            said = exc.error.message if exc.error is not None else None
            message = f"Stripe refused the refund: {said or exc.user_message or type(exc).__name__}"
            return _detail_page(request, detail, form=form, message=message, status_code=422)
        log.info("admin.refund_requested", order=str(order_id), refund=refund_id, staff=str(staff.id))
        flash(request, "Refund requested; the order updates when Stripe confirms it.", "success")
        return redirect(request, request.app.route_reverse("admin:order", order_id=order_id))
