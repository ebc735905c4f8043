"""Sign-up, sign-in, sign-out, password reset and change."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.accounts.deps import provide_account_service, provide_login_throttle
from app.domain.accounts.lockout import LoginThrottle
from app.domain.accounts.self_service import SESSION_MARKER_KEY, remember_device
from app.domain.accounts.services import AccountService
from app.domain.cart.services import CART_SESSION_KEYS, CartService
from app.domain.notifications.dependencies import provide_email_service
from app.lib.client_ip import client_ip
from app.lib.email_address import email_problem
from app.lib.exceptions import FormError, RateLimitedError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render
from app.lib.permissions import is_staff
from app.lib.ratelimit import enforce
from app.lib.runtime import Runtime
from app.lib.urls import same_site_path
from app.server.auth import SESSION_AUTH_AT_KEY, SESSION_EPOCH_KEY, SESSION_USER_KEY, current_user, requires_login
from app.server.sessions import end_session, rotate_session, set_session_lifetime


def safe_next(url: str | None, default: str = "/") -> str:
    """Only same-site relative paths: an open redirect after login is a phishing tool."""
    return same_site_path(url, default)


async def start_session(
    request: Request[Any, Any, Any], user: m.User, runtime: NamedDependency[Runtime], *, remember: bool
) -> None:
    """Sign ``user`` in on a fresh session id (no fixation); staff get short, non-persistent sessions.

    Only the cart survives from the old session: an anonymous cart until it is merged, and the badge count. The
    sign-in joins the account's list of sessions (``/account/profile``).
    """
    request.set_session({key: request.session[key] for key in CART_SESSION_KEYS if key in request.session})
    request.session.update(
        {SESSION_USER_KEY: str(user.id), SESSION_EPOCH_KEY: user.session_epoch, SESSION_AUTH_AT_KEY: time.time()}
    )
    rotate_session(request)
    settings = runtime.settings
    if is_staff(user.role):
        lifetime = settings.staff_absolute_seconds
        set_session_lifetime(request, settings.staff_idle_seconds)
    elif remember:
        lifetime = settings.remember_me_seconds
        set_session_lifetime(request, settings.remember_me_seconds, persistent=True)
    else:
        lifetime = settings.customer_session_seconds
        set_session_lifetime(request, settings.customer_session_seconds)
    ip = client_ip(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        settings.trusted_proxies,
    )
    request.session[SESSION_MARKER_KEY] = await remember_device(
        runtime.redis, user.id, ip=ip, agent=request.headers.get("user-agent", ""), lifetime=lifetime
    )


class AccountController(Controller):
    dependencies = {
        "email_service": Provide(provide_email_service, sync_to_thread=False),
        "account_service": Provide(provide_account_service, sync_to_thread=False),
        "login_throttle": Provide(provide_login_throttle, sync_to_thread=False),
    }

    @get("/login", name="accounts:login")
    async def login_page(self, request: Request[Any, Any, Any], next_url: FromQuery[str | None] = None) -> Template:
        return render(request, "accounts/login.html.j2", {"form": {}, "errors": {}, "next": safe_next(next_url, "")})

    @post("/login", name="accounts:login.submit")
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        account_service: NamedDependency[AccountService],
        login_throttle: NamedDependency[LoginThrottle],
        runtime: NamedDependency[Runtime],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[Any]:
        await enforce(request, "login_ip")
        email = data.get("email", "")
        next_url = safe_next(data.get("next"), "")
        ip = client_ip(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            runtime.settings.trusted_proxies,
        )
        try:
            user = await account_service.authenticate(
                email=email, password=data.get("password", ""), ip=ip, throttle=login_throttle
            )
        except (FormError, RateLimitedError) as exc:
            errors = exc.errors if isinstance(exc, FormError) else {"password": exc.message}
            page = render(
                request,
                "accounts/login.html.j2",
                {"form": {"email": email, "remember": data.get("remember")}, "errors": errors, "next": next_url},
                fragment="accounts/_login_form.html.j2",
                status_code=exc.status_code,
            )
            if isinstance(exc, RateLimitedError):
                page.headers.update(exc.headers)  # Retry-After: how long this address waits
            return page
        await start_session(request, user, runtime, remember=data.get("remember") == "on")
        await CartService(db_session, request.session).merge_session_cart(user)
        flash(request, f"Welcome back, {user.display_name}.", "success")
        default = (
            request.app.route_reverse("admin:dashboard")
            if is_staff(user.role)
            else request.app.route_reverse("accounts:overview")
        )
        return redirect(request, next_url or default)

    @post("/logout", name="accounts:logout")
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        end_session(request)
        return redirect(request, request.app.route_reverse("catalog:home"))

    @get("/register", name="accounts:register")
    async def register_page(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "accounts/register.html.j2", {"form": {}, "errors": {}, "sent": False})

    @post("/register", name="accounts:register.submit")
    async def register(
        self, request: Request[Any, Any, Any], data: FormData, account_service: NamedDependency[AccountService]
    ) -> Template:
        email = data.get("email", "").strip()
        form = {"email": email, "name": data.get("name", "")}
        await enforce(request, "register_ip")
        if not email_problem(email):
            await enforce(request, "register_email", email=email)
        try:
            await account_service.register(email=email, password=data.get("password", ""), name=form["name"])
        except FormError as exc:
            return render(
                request,
                "accounts/register.html.j2",
                {"form": form, "errors": exc.errors, "sent": False},
                fragment="accounts/_register_form.html.j2",
                status_code=exc.status_code,
            )
        # The same answer whether the address is new (a confirmation link) or has an account (a note to its owner),
        # and no sign-in: signing in here would tell which it was.
        return render(
            request,
            "accounts/register.html.j2",
            {"form": form, "errors": {}, "sent": True},
            fragment="accounts/_register_form.html.j2",
        )

    @get("/verify-email/{token:str}", name="accounts:verify_email")
    async def verify_email(
        self, request: Request[Any, Any, Any], token: FromPath[str], account_service: NamedDependency[AccountService]
    ) -> Response[Any]:
        user = await account_service.verify_email(token)
        if user is None:
            return render(request, "accounts/verify_failed.html.j2", {}, status_code=410)
        signed_in = current_user(request)
        if signed_in is not None and signed_in.id == user.id:
            flash(request, "Thanks, your email is confirmed.", "success")
            return redirect(request, request.app.route_reverse("accounts:overview"))
        # Not signed in: a link alone never signs anyone in (whoever created the account chose its password).
        flash(request, "Thanks, your email is confirmed. Sign in to continue.", "success")
        return redirect(request, request.app.route_reverse("accounts:login"))

    @post("/account/verify-email", name="accounts:verify_email.resend", guards=[requires_login])
    async def resend_verification(
        self, request: Request[Any, Any, Any], account_service: NamedDependency[AccountService]
    ) -> Response[Any]:
        user = current_user(request)
        assert user is not None  # guaranteed by requires_login
        if not user.email_verified:
            await enforce(request, "verify_resend_account")
            await account_service.send_verification(user)
            flash(request, f"We've sent a new confirmation link to {user.email}.", "success")
        return redirect(request, request.app.route_reverse("accounts:overview"))

    @get("/forgot-password", name="accounts:forgot")
    async def forgot_page(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "accounts/forgot.html.j2", {"form": {}, "errors": {}, "sent": False})

    @post("/forgot-password", name="accounts:forgot.submit")
    async def forgot(
        self, request: Request[Any, Any, Any], data: FormData, account_service: NamedDependency[AccountService]
    ) -> Template:
        email = data.get("email", "").strip()
        if problem := email_problem(email):
            return render(
                request,
                "accounts/forgot.html.j2",
                {"form": {"email": email}, "errors": {"email": problem}, "sent": False},
                fragment="accounts/_forgot_form.html.j2",
                status_code=422,
            )
        await enforce(request, "forgot_password_ip", "forgot_password_email", email=email)
        await account_service.request_password_reset(email)
        # The same answer whether or not the account exists.
        return render(
            request,
            "accounts/forgot.html.j2",
            {"form": {"email": email}, "errors": {}, "sent": True},
            fragment="accounts/_forgot_form.html.j2",
        )

    @get("/reset-password/{token:str}", name="accounts:reset")
    async def reset_page(
        self, request: Request[Any, Any, Any], token: FromPath[str], account_service: NamedDependency[AccountService]
    ) -> Template:
        valid = await account_service.valid_reset_token(token) is not None
        return render(
            request,
            "accounts/reset.html.j2",
            {"token": token, "valid": valid, "errors": {}},
            status_code=200 if valid else 410,
        )

    @post("/reset-password/{token:str}", name="accounts:reset.submit")
    async def reset(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        data: FormData,
        account_service: NamedDependency[AccountService],
        login_throttle: NamedDependency[LoginThrottle],
    ) -> Response[Any]:
        password = data.get("password", "")
        if password != data.get("password_confirm", ""):
            errors = {"password_confirm": "The two passwords don't match."}
            return render(
                request,
                "accounts/reset.html.j2",
                {"token": token, "valid": True, "errors": errors},
                fragment="accounts/_reset_form.html.j2",
                status_code=422,
            )
        try:
            user = await account_service.reset_password(token, password, throttle=login_throttle)
        except FormError as exc:
            return render(
                request,
                "accounts/reset.html.j2",
                {"token": token, "valid": True, "errors": exc.errors},
                fragment="accounts/_reset_form.html.j2",
                status_code=422,
            )
        if user is None:
            return render(
                request,
                "accounts/reset.html.j2",
                {"token": token, "valid": False, "errors": {}},
                fragment="accounts/_reset_form.html.j2",
                status_code=410,
            )
        end_session(request)
        flash(request, "Your password has been changed. Sign in with your new password.", "success")
        return redirect(request, request.app.route_reverse("accounts:login"))

    @get("/account", name="accounts:overview", guards=[requires_login])
    async def overview(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "accounts/overview.html.j2", {"user": current_user(request)})

    @get("/account/password", name="accounts:password", guards=[requires_login])
    async def password_page(self, request: Request[Any, Any, Any]) -> Template:
        return render(request, "accounts/password.html.j2", {"errors": {}})

    @post("/account/password", name="accounts:password.submit", guards=[requires_login])
    async def change_password(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        account_service: NamedDependency[AccountService],
        runtime: NamedDependency[Runtime],
    ) -> Response[Any]:
        user = current_user(request)
        assert user is not None  # guaranteed by requires_login
        await enforce(request, "password_change_account")
        errors: dict[str, str] = {}
        if data.get("new_password", "") != data.get("new_password_confirm", ""):
            errors["new_password_confirm"] = "The two passwords don't match."
        else:
            try:
                user = await account_service.change_password(
                    user, current=data.get("current_password", ""), new=data.get("new_password", "")
                )
            except FormError as exc:
                errors = exc.errors
        if errors:
            return render(
                request,
                "accounts/password.html.j2",
                {"errors": errors},
                fragment="accounts/_password_form.html.j2",
                status_code=422,
            )
        await start_session(request, user, runtime, remember=bool(request.session.get("_persistent")))
        flash(request, "Your password has been changed. Other devices have been signed out.", "success")
        return redirect(request, request.app.route_reverse("accounts:overview"))
