"""Purchased files: the signed download link, "Your downloads", fresh links for owners and by email for guests."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.downloads.services import (
    DEFAULT_LINK_TTL,
    DownloadItem,
    DownloadRefusedError,
    DownloadService,
    ResendThrottle,
    support_address,
)
from app.domain.notifications.dependencies import provide_email_service
from app.domain.notifications.services import EmailService
from app.lib.email_address import email_problem
from app.lib.exceptions import NotFoundError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render, wants_fragment
from app.lib.ratelimit import enforce
from app.lib.runtime import Runtime
from app.lib.storage import stored_response
from app.server.auth import current_user, requires_login

LINK_HOURS = int(DEFAULT_LINK_TTL.total_seconds() // 3600)


def provide_download_service(
    db_session: NamedDependency[AsyncSession], runtime: NamedDependency[Runtime]
) -> DownloadService:
    return DownloadService(db_session, runtime.settings, runtime.storage)


def provide_resend_throttle(runtime: NamedDependency[Runtime]) -> ResendThrottle:
    return ResendThrottle(runtime.redis)


def _resend_form(*, email: str = "", errors: dict[str, str] | None = None, sent: bool = False) -> dict[str, Any]:
    return {"form": {"email": email}, "errors": errors or {}, "sent": sent, "link_hours": LINK_HOURS}


def _list_context(downloads: DownloadService, items: list[DownloadItem]) -> dict[str, Any]:
    return {
        "items": items,
        "fresh_id": None,
        "link_hours": LINK_HOURS,
        "support_email": support_address(downloads.settings),
    }


class DownloadController(Controller):
    dependencies = {
        "downloads": Provide(provide_download_service, sync_to_thread=False),
        "email_service": Provide(provide_email_service, sync_to_thread=False),
        "resend_throttle": Provide(provide_resend_throttle, sync_to_thread=False),
    }

    @get("/downloads/{token:str}", name="downloads:file")
    async def download(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        downloads: NamedDependency[DownloadService],
    ) -> Response[Any]:
        try:
            found = await downloads.consume(token, user=current_user(request))
        except DownloadRefusedError as exc:
            context = {
                "reason": exc.reason.value,
                "title": exc.message,
                "entitlement": exc.entitlement,
                "support_email": support_address(downloads.settings),
                **_resend_form(),
            }
            return render(request, "downloads/refused.html.j2", context, status_code=exc.status_code)
        return stored_response(
            found.stored,
            filename=found.filename,
            media_type=found.media_type,
            disposition="attachment",
            headers={"Cache-Control": "private, no-store"},
        )

    @get("/account/downloads", name="downloads:list", guards=[requires_login])
    async def list_page(self, request: Request[Any, Any, Any], downloads: NamedDependency[DownloadService]) -> Template:
        user = current_user(request)
        assert user is not None  # guaranteed by requires_login
        items = await downloads.items_for_user(user)
        return render(request, "downloads/list.html.j2", _list_context(downloads, items))

    @post("/account/downloads/{entitlement_id:uuid}/link", name="downloads:link", guards=[requires_login])
    async def fresh_link(
        self,
        request: Request[Any, Any, Any],
        entitlement_id: FromPath[UUID],
        downloads: NamedDependency[DownloadService],
    ) -> Response[Any]:
        user = current_user(request)
        assert user is not None  # guaranteed by requires_login
        item = await downloads.item_for_user(entitlement_id, user)
        if item is None:  # someone else's purchase, or none at all: the same answer
            raise NotFoundError
        if wants_fragment(request):
            return render(
                request,
                "downloads/list.html.j2",
                {**_list_context(downloads, [item]), "item": item, "fresh_id": item.entitlement.id},
                fragment="downloads/_item.html.j2",
            )
        if item.url is None:
            flash(request, f"{item.entitlement.product_name} can't be downloaded any more.", "error")
            return redirect(request, request.app.route_reverse("downloads:list"))
        # Without JavaScript the button means "download now": send the browser to the fresh link.
        return redirect(request, item.url)

    @get("/downloads/resend", name="downloads:resend")
    async def resend_page(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "downloads/resend.html.j2", _resend_form())

    @post("/downloads/resend", name="downloads:resend.submit")
    async def resend(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        downloads: NamedDependency[DownloadService],
        email_service: NamedDependency[EmailService],
        resend_throttle: NamedDependency[ResendThrottle],
    ) -> Template:
        email = data.get("email", "").strip()
        if problem := email_problem(email):
            return render(
                request,
                "downloads/resend.html.j2",
                _resend_form(email=email, errors={"email": problem}),
                fragment="downloads/_resend_form.html.j2",
                status_code=422,
            )
        await enforce(request, "download_resend_ip")
        await downloads.email_fresh_links(email, emails=email_service, throttle=resend_throttle)
        # The same answer whether or not that address bought anything, and whether or not it was throttled.
        return render(
            request,
            "downloads/resend.html.j2",
            _resend_form(email=email, sent=True),
            fragment="downloads/_resend_form.html.j2",
        )
