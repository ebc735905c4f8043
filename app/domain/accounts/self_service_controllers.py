"""The customer's own account: name and email, signed-in devices, a copy of their data, closing the account."""

from __future__ import annotations

from typing import Any

import stripe
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.accounts.self_service import (
    CHANGE_SENT,
    SESSION_MARKER_KEY,
    SelfService,
    devices,
    sign_out_everywhere,
)
from app.domain.notifications.dependencies import provide_email_service
from app.domain.notifications.services import EmailService
from app.lib.exceptions import FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render
from app.lib.ratelimit import enforce
from app.lib.runtime import Runtime
from app.server.auth import SESSION_EPOCH_KEY, current_user, requires_login
from app.server.sessions import end_session


def provide_self_service(
    db_session: NamedDependency[AsyncSession],
    runtime: NamedDependency[Runtime],
    email_service: NamedDependency[EmailService],
) -> SelfService:
    return SelfService(db_session, runtime.settings, email_service)


class SelfServiceController(Controller):
    guards = [requires_login]
    dependencies = {
        "email_service": Provide(provide_email_service, sync_to_thread=False),
        "self_service": Provide(provide_self_service, sync_to_thread=False),
    }

    async def _page(
        self,
        request: Request[Any, Any, Any],
        runtime: Runtime,
        *,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Template:
        user = current_user(request)
        assert user is not None
        return render(
            request,
            "accounts/profile.html.j2",
            {
                "user": user,
                "errors": errors or {},
                "form": form or {"name": user.name},
                "devices": await devices(runtime.redis, user.id),
                "this_device": request.session.get(SESSION_MARKER_KEY),
            },
            status_code=status_code,
        )

    @get("/account/profile", name="accounts:profile")
    async def profile(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Template:
        return await self._page(request, runtime)

    @post("/account/profile/name", name="accounts:profile.name")
    async def rename(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        self_service: NamedDependency[SelfService],
        runtime: NamedDependency[Runtime],
    ) -> Response[Any]:
        user = current_user(request)
        assert user is not None
        try:
            await self_service.rename(user, data.get("name", ""))
        except FormError as exc:
            return await self._page(request, runtime, errors=exc.errors, form=dict(data), status_code=422)
        flash(request, "Your name is saved.", "success")
        return redirect(request, request.app.route_reverse("accounts:profile"))

    @post("/account/profile/email", name="accounts:profile.email")
    async def change_email(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        self_service: NamedDependency[SelfService],
        runtime: NamedDependency[Runtime],
    ) -> Response[Any]:
        user = current_user(request)
        assert user is not None
        await enforce(request, "password_change_account")  # each try checks the password
        try:
            await self_service.request_email_change(
                user, new_email=data.get("email", ""), password=data.get("password", "")
            )
        except FormError as exc:
            form = {"name": user.name, "email": data.get("email", "")}
            return await self._page(request, runtime, errors=exc.errors, form=form, status_code=422)
        flash(request, CHANGE_SENT, "success")
        return redirect(request, request.app.route_reverse("accounts:profile"))

    @post("/account/sessions/sign-out-others", name="accounts:sign_out_others")
    async def sign_out_others(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Response[Any]:
        user = current_user(request)
        assert user is not None
        epoch = await sign_out_everywhere(db_session, runtime.redis, user, keep=request.session.get(SESSION_MARKER_KEY))
        request.session[SESSION_EPOCH_KEY] = epoch  # this browser stays signed in
        flash(request, "Every other device is signed out.", "success")
        return redirect(request, request.app.route_reverse("accounts:profile"))

    @get("/account/export", name="accounts:export")
    async def export(
        self, request: Request[Any, Any, Any], self_service: NamedDependency[SelfService]
    ) -> Response[bytes]:
        user = current_user(request)
        assert user is not None
        return Response(
            await self_service.export(user),
            media_type="application/zip",
            headers={
                "Content-Disposition": 'attachment; filename="cartwright-my-data.zip"',
                "Cache-Control": "private, no-store",
            },
        )

    @get("/account/delete", name="accounts:delete")
    async def delete_page(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "accounts/delete.html.j2", {"errors": {}})

    @post("/account/delete", name="accounts:delete.submit")
    async def delete(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        self_service: NamedDependency[SelfService],
        runtime: NamedDependency[Runtime],
    ) -> Response[Any]:
        user = current_user(request)
        assert user is not None
        await enforce(request, "password_change_account")
        try:
            await self_service.delete_account(user, password=data.get("password", ""), stripe_client=runtime.stripe)
        except FormError as exc:
            return render(request, "accounts/delete.html.j2", {"errors": exc.errors}, status_code=422)
        except stripe.StripeError:
            errors = {"password": "We couldn't reach the payment processor to end your plan. Nothing was deleted."}
            return render(request, "accounts/delete.html.j2", {"errors": errors}, status_code=503)
        end_session(request)
        flash(request, "Your account is closed. Thank you for shopping with us.", "success")
        return redirect(request, request.app.route_reverse("catalog:home"))
