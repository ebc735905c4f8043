"""Accounts in the back office (admins only): every user with role and status, role changes and disabling.

Disabling bumps the user's session epoch, so every session they hold stops working on its next request
(``CurrentUserMiddleware``); so does a role change, so new rights (or fewer) start with a fresh sign-in.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.queries import get_or_404
from app.domain.audit.services import Actor, record_audit
from app.lib.exceptions import FormError
from app.lib.permissions import Role
from app.lib.tables import Column, Filter, Query, TableSpec, TableState

ROLE_LABELS = {Role.ADMIN.value: "Admin", Role.SUPPORT.value: "Support", Role.CUSTOMER.value: "Customer"}

USERS_TABLE = TableSpec(
    dom_id="admin-users",
    noun="accounts",
    columns=(
        Column("email", "Email", m.User.email),
        Column("name", "Name", m.User.name),
        Column("role", "Role", m.User.role),
        Column("active", "Status", m.User.is_active),
        Column("last_login", "Last sign-in (UTC)", m.User.last_login_at),
        Column("created", "Joined (UTC)", m.User.created_at, newest_first=True),
    ),
    default_sort="email",
    filters=(
        Filter("role", "Role", tuple(ROLE_LABELS.items()), "Any role"),
        Filter("status", "Status", (("active", "Active"), ("disabled", "Disabled")), "Active or disabled"),
    ),
    search_label="Email or name",
    tiebreak=(m.User.id,),
)


def users_query(state: TableState) -> Query:
    stmt: Query = select(m.User)
    if role := state.filters.get("role"):
        stmt = stmt.where(m.User.role == role)
    if status := state.filters.get("status"):
        stmt = stmt.where(m.User.is_active.is_(status == "active"))
    if term := state.q:
        stmt = stmt.where(or_(m.User.email.ilike(f"%{term}%"), m.User.name.ilike(f"%{term}%")))
    return stmt


async def get_user(db: AsyncSession, user_id: UUID) -> m.User:
    return await get_or_404(db, m.User, user_id, "That account doesn't exist.")


def _not_yourself(user: m.User, actor: Actor, field: str, what: str) -> None:
    # Nobody locks themselves out; with it, an admin who is alone can never be demoted or disabled by anyone.
    if actor.user is not None and actor.user.id == user.id:
        raise FormError({field: f"You can't {what} your own account: ask another admin."})


async def change_role(db: AsyncSession, user: m.User, role: str, *, actor: Actor) -> bool:
    """Give ``user`` another role and commit; False when it already had it."""
    if role not in ROLE_LABELS:
        raise FormError({"role": "Choose admin, support or customer."})
    if role == user.role:
        return False
    _not_yourself(user, actor, "role", "change the role of")
    before: dict[str, Any] = {"role": user.role}
    user.role = role
    user.session_epoch += 1
    await record_audit(
        db,
        actor,
        "user.role",
        target=("user", user.id, user.email),
        summary=f"Role changed from {ROLE_LABELS[before['role']]} to {ROLE_LABELS[role]}",
        before=before,
        after={"role": role},
    )
    await db.commit()
    return True


async def set_active(db: AsyncSession, user: m.User, *, active: bool, actor: Actor) -> bool:
    """Disable (signing the user out everywhere) or re-enable an account and commit; False when unchanged."""
    if user.is_active == active:
        return False
    _not_yourself(user, actor, "active", "disable")
    user.is_active = active
    if not active:
        user.session_epoch += 1
    await record_audit(
        db,
        actor,
        "user.enable" if active else "user.disable",
        target=("user", user.id, user.email),
        summary="Account re-enabled" if active else "Account disabled; every session signed out",
        before={"is_active": not active},
        after={"is_active": active},
    )
    await db.commit()
    return True
