"""The public pricing page (monthly/yearly with HTMX) and the member downloads in the account."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.plans.services import (
    MemberDownloadRefusedError,
    MemberDownloads,
    PlanService,
    parse_interval,
    pricing_province,
    tier_for,
)
from app.domain.tax.services import PROVINCES
from app.lib.htmx import render
from app.lib.runtime import Runtime
from app.lib.storage import stored_response
from app.server.auth import MEMBER_PLAN_OPT, current_user, member_plan_price_id, requires_login
from app.server.page_cache import PRICING_TTL, render_shared


def provide_plan_service(db_session: NamedDependency[AsyncSession]) -> PlanService:
    return PlanService(db_session)


def provide_member_downloads(
    db_session: NamedDependency[AsyncSession], runtime: NamedDependency[Runtime]
) -> MemberDownloads:
    return MemberDownloads(db_session, runtime.settings, runtime.storage)


class PlanController(Controller):
    dependencies = {
        "plans": Provide(provide_plan_service, sync_to_thread=False),
        "member_downloads": Provide(provide_member_downloads, sync_to_thread=False),
    }

    @get("/pricing", name="plans:pricing", opt={MEMBER_PLAN_OPT: True})
    async def pricing(
        self,
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        interval: FromQuery[str | None] = None,
        province: FromQuery[str | None] = None,
    ) -> Response[bytes] | Template:
        user = current_user(request)
        # What the page shows besides the plans: the member's tier, their plan's price, the tax province. The
        # price was read with the user (MEMBER_PLAN_OPT), so a stored page needs no database at all (#15): the
        # session below takes a connection only to build a page not stored.
        price_id = member_plan_price_id(request)
        async with runtime.db() as db:
            plans = PlanService(db)
            variant = f"{tier_for(user).value}|{price_id or '-'}|{pricing_province(user, province)}"

            async def build() -> dict[str, Any]:
                pricing = await plans.pricing(parse_interval(interval), user, province)
                return {"pricing": pricing, "provinces": PROVINCES}

            return await render_shared(
                request,
                "plans/pricing.html.j2",
                build,
                fragment="plans/_plans.html.j2",
                variant=variant,
                ttl=PRICING_TTL,
            )

    @get("/account/member-downloads", name="plans:downloads", guards=[requires_login])
    async def downloads(
        self,
        request: Request[Any, Any, Any],
        plans: NamedDependency[PlanService],
        member_downloads: NamedDependency[MemberDownloads],
    ) -> Template:
        subscription = await plans.live_subscription(current_user(request))
        products = await member_downloads.products_for(subscription)
        return render(request, "plans/downloads.html.j2", {"subscription": subscription, "products": products})

    @get("/account/member-downloads/{product_id:uuid}", name="plans:download", guards=[requires_login])
    async def download(
        self,
        request: Request[Any, Any, Any],
        product_id: FromPath[UUID],
        member_downloads: NamedDependency[MemberDownloads],
    ) -> Response[Any]:
        user = current_user(request)
        assert user is not None  # guaranteed by requires_login
        try:
            _, found = await member_downloads.file_for(user, product_id)
        except MemberDownloadRefusedError as exc:
            context = {"reason": exc.reason.value, "title": exc.message, "product": exc.product}
            return render(request, "plans/refused.html.j2", context, status_code=exc.status_code)
        return stored_response(
            found.stored,
            filename=found.filename,
            media_type=found.media_type,
            disposition="attachment",
            headers={"Cache-Control": "private, no-store"},
        )
