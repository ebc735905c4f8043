"""The customer's order history and order detail (with its status timeline)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from app.domain.downloads.services import DownloadService
from app.domain.orders.dependencies import provide_order_service
from app.domain.orders.services import OrderService
from app.lib.htmx import render
from app.lib.runtime import Runtime
from app.server.auth import current_user, requires_login


class OrderController(Controller):
    path = "/account/orders"
    guards = [requires_login]
    dependencies = {"orders": Provide(provide_order_service, sync_to_thread=False)}

    @get("/", name="orders:list")
    async def history(
        self, request: Request[Any, Any, Any], orders: NamedDependency[OrderService], page: FromQuery[int] = 1
    ) -> Template:
        user = current_user(request)
        assert user is not None  # requires_login
        result = await orders.page_for_user(user, page)
        return render(request, "orders/list.html.j2", {"result": result}, fragment="orders/_table.html.j2")

    @get("/{order_id:uuid}", name="orders:detail")
    async def detail(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        orders: NamedDependency[OrderService],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        user = current_user(request)
        assert user is not None  # requires_login
        order = await orders.for_owner(order_id, user)
        downloads = DownloadService(orders.db, runtime.settings)
        return render(
            request,
            "orders/detail.html.j2",
            {
                "order": order,
                "timeline": await orders.timeline(order),
                "payment": await orders.payment(order),
                "refunds": await orders.refunds(order),
                "downloads": [
                    {"entitlement": e, "url": downloads.signed_url(e) if e.is_usable else ""}
                    for e in await orders.entitlements(order)
                ],
            },
        )
