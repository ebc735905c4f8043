"""An order's invoice, as a printable page and as a PDF: for the customer who owns the order, for staff, and for a
guest through the signed link in their receipt (app/domain/orders/invoice_links.py).

Another customer's order answers 404, like an order that does not exist (no probing of order ids).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.orders.invoice_links import INVOICE_LINK_PATH, read_invoice_token
from app.domain.orders.invoice_pdf import render_invoice_pdf
from app.domain.orders.invoices import InvoiceView, invoice_for
from app.domain.orders.services import OrderService
from app.domain.settings.services import shop_settings
from app.lib.exceptions import NotFoundError
from app.lib.htmx import render
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.server.auth import current_user, requires, requires_login


async def _view(db: AsyncSession, runtime: Runtime, order: m.Order) -> InvoiceView:
    return await invoice_for(db, order, await shop_settings(runtime))


def _page(
    request: Request[Any, Any, Any], order: m.Order, view: InvoiceView, *, pdf_url: str, back_url: str | None
) -> Template:
    return render(
        request, "orders/invoice.html.j2", {"order": order, "invoice": view, "pdf_url": pdf_url, "back_url": back_url}
    )


def _pdf(view: InvoiceView) -> Response[bytes]:
    return Response(
        content=render_invoice_pdf(view),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{view.filename}"',
            "Cache-Control": "private, no-store",
        },
    )


class InvoiceController(Controller):
    """The customer's own orders."""

    path = "/account/orders"
    guards = [requires_login]

    async def _order(self, request: Request[Any, Any, Any], db: AsyncSession, order_id: UUID) -> m.Order:
        user = current_user(request)
        assert user is not None  # requires_login
        return await OrderService(db).for_owner(order_id, user)

    @get("/{order_id:uuid}/invoice", name="orders:invoice")
    async def page(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        order = await self._order(request, db_session, order_id)
        return _page(
            request,
            order,
            await _view(db_session, runtime, order),
            pdf_url=request.app.route_reverse("orders:invoice_pdf", order_id=order.id),
            back_url=request.app.route_reverse("orders:detail", order_id=order.id),
        )

    @get("/{order_id:uuid}/invoice.pdf", name="orders:invoice_pdf")
    async def pdf(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Response[bytes]:
        order = await self._order(request, db_session, order_id)
        return _pdf(await _view(db_session, runtime, order))


class AdminInvoiceController(Controller):
    """Any order, for staff who can read orders."""

    path = "/admin/orders"
    guards = [requires(Resource.ORDERS, Access.READ)]

    @staticmethod
    async def _order(db: AsyncSession, order_id: UUID) -> m.Order:
        order = await OrderService(db).get(order_id)
        if order is None:
            raise NotFoundError("We couldn't find that order.")
        return order

    @get("/{order_id:uuid}/invoice", name="admin:order_invoice")
    async def page(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        order = await self._order(db_session, order_id)
        return _page(
            request,
            order,
            await _view(db_session, runtime, order),
            pdf_url=request.app.route_reverse("admin:order_invoice_pdf", order_id=order.id),
            back_url=request.app.route_reverse("admin:order", order_id=order.id),
        )

    @get("/{order_id:uuid}/invoice.pdf", name="admin:order_invoice_pdf")
    async def pdf(
        self, order_id: FromPath[UUID], db_session: NamedDependency[AsyncSession], runtime: NamedDependency[Runtime]
    ) -> Response[bytes]:
        return _pdf(await _view(db_session, runtime, await self._order(db_session, order_id)))


class GuestInvoiceController(Controller):
    """A guest's invoice, through the signed link in their receipt: no account, the link is the key."""

    path = INVOICE_LINK_PATH

    @staticmethod
    async def _order(db: AsyncSession, runtime: Runtime, token: str) -> m.Order:
        order_id = read_invoice_token(runtime.settings.secret_key, token)
        order = await OrderService(db).get(order_id) if order_id else None
        if order is None:
            raise NotFoundError(
                "This invoice link is not valid. Check that you copied the whole link from your receipt."
            )
        return order

    @get("/{token:str}", name="orders:guest_invoice")
    async def page(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        order = await self._order(db_session, runtime, token)
        return _page(
            request,
            order,
            await _view(db_session, runtime, order),
            pdf_url=request.app.route_reverse("orders:guest_invoice_pdf", token=token),
            back_url=None,
        )

    @get("/{token:str}/pdf", name="orders:guest_invoice_pdf")
    async def pdf(
        self, token: FromPath[str], db_session: NamedDependency[AsyncSession], runtime: NamedDependency[Runtime]
    ) -> Response[bytes]:
        return _pdf(await _view(db_session, runtime, await self._order(db_session, runtime, token)))
