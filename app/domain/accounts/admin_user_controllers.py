"""Accounts in the back office: admins list users, change roles and disable accounts (system:full)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.accounts.admin_users import ROLE_LABELS, USERS_TABLE, change_role, get_user, set_active, users_query
from app.domain.audit.services import Actor, recent_for
from app.lib.exceptions import FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render
from app.lib.permissions import Access, Resource
from app.lib.tables import table_for
from app.server.auth import requires


async def _user_page(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    user: m.User,
    *,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Template:
    history = await recent_for(db, "user", str(user.id))
    return render(
        request,
        "admin/user.html.j2",
        {"account": user, "roles": ROLE_LABELS, "errors": errors or {}, "history": history},
        status_code=status_code,
    )


class AdminUserController(Controller):
    path = "/admin/users"
    guards = [requires(Resource.SYSTEM, Access.FULL)]

    @get("/", name="admin:users")
    async def users(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(request, db_session, USERS_TABLE, users_query)
        return render(
            request,
            "admin/users.html.j2",
            {"table": table, "roles": ROLE_LABELS},
            fragment="admin/_users_table.html.j2",
        )

    @get("/{user_id:uuid}", name="admin:user")
    async def user(
        self, request: Request[Any, Any, Any], user_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return await _user_page(request, db_session, await get_user(db_session, user_id))

    @post("/{user_id:uuid}/role", name="admin:user_role")
    async def role(
        self,
        request: Request[Any, Any, Any],
        user_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        user = await get_user(db_session, user_id)
        try:
            changed = await change_role(db_session, user, data.get("role", ""), actor=actor)
        except FormError as exc:
            return await _user_page(request, db_session, user, errors=exc.errors, status_code=422)
        if changed:
            flash(
                request,
                f"{user.email} is now {ROLE_LABELS[user.role].lower()}; their sessions were signed out.",
                "success",
            )
        return redirect(request, request.app.route_reverse("admin:user", user_id=user_id))

    @post("/{user_id:uuid}/active", name="admin:user_active")
    async def active(
        self,
        request: Request[Any, Any, Any],
        user_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        user = await get_user(db_session, user_id)
        enable = data.get("active", "") == "1"
        try:
            changed = await set_active(db_session, user, active=enable, actor=actor)
        except FormError as exc:
            return await _user_page(request, db_session, user, errors=exc.errors, status_code=422)
        if changed:
            flash(
                request, "Account re-enabled." if enable else "Account disabled and signed out everywhere.", "success"
            )
        return redirect(request, request.app.route_reverse("admin:user", user_id=user_id))
