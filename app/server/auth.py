"""Who is asking: loads the signed-in user from the session for every request; guards read the permission table."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy import bindparam, select
from sqlalchemy.sql.elements import BindParameter

from app.db import models as m
from app.db.queries import live_subscription_query
from app.lib.exceptions import PermissionDeniedError
from app.lib.permissions import Access, Resource, can, is_staff
from app.lib.runtime import Runtime
from app.server.logging import is_static_path

SESSION_USER_KEY = "uid"
SESSION_EPOCH_KEY = "epoch"
SESSION_AUTH_AT_KEY = "auth_at"

# A route with ``opt={MEMBER_PLAN_OPT: True}`` (the pricing page, which every visitor opens) gets the member's
# live plan price read with the user, in one round trip instead of two (#15): ``member_plan_price_id``.
MEMBER_PLAN_OPT = "member_plan"
_SCOPE_PLAN_PRICE = "member_plan_price_id"
_USER_ID: BindParameter[UUID] = bindparam("user_id")
_USER_AND_PLAN_PRICE = select(
    m.User,
    live_subscription_query(_USER_ID).with_only_columns(m.Subscription.plan_price_id).scalar_subquery(),
).where(m.User.id == _USER_ID)


class NotSignedInError(Exception):
    """Raised by guards for anonymous visitors; mapped to a redirect to the login page."""


class CurrentUserMiddleware(ASGIMiddleware):
    """Put the signed-in ``User`` (or ``None``) on ``scope["user"]``.

    One primary-key read per request, so a disabled account or a password change (``session_epoch``) takes effect
    on the very next request; staff sessions also end 12 hours after sign-in whatever their activity.
    """

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)
    should_bypass_for_scope = staticmethod(is_static_path)

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope["user"] = None
        session = scope.get("session")
        raw_id = session.get(SESSION_USER_KEY) if isinstance(session, dict) else None
        if raw_id and isinstance(session, dict):
            handler: Any = scope.get("route_handler")  # set by the router before any middleware runs
            with_plan = bool(handler is not None and handler.opt.get(MEMBER_PLAN_OPT))
            user, price_id = await self._load(raw_id, with_plan=with_plan)
            if user is not None and self._still_valid(user, session):
                scope["user"] = user
                if with_plan:
                    scope[_SCOPE_PLAN_PRICE] = price_id  # type: ignore[literal-required]
            else:
                session.clear()  # ends the session: the backend deletes it and the cookie
        await next_app(scope, receive, send)

    async def _load(self, raw_id: str, *, with_plan: bool) -> tuple[m.User | None, UUID | None]:
        try:
            user_id = UUID(raw_id)
        except ValueError:
            return None, None
        async with self.runtime.db() as db:
            # One read and nothing to roll back: without BEGIN and ROLLBACK it is one round trip instead of three
            # (about 0.4 ms of CPU per signed-in request, #15).
            await db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            if not with_plan:
                return await db.get(m.User, user_id), None
            row = (await db.execute(_USER_AND_PLAN_PRICE, {"user_id": user_id})).first()
            return (row[0], row[1]) if row is not None else (None, None)

    def _still_valid(self, user: m.User, session: dict[str, Any]) -> bool:
        if not user.is_active or session.get(SESSION_EPOCH_KEY) != user.session_epoch:
            return False
        if is_staff(user.role):
            signed_in_at = float(session.get(SESSION_AUTH_AT_KEY, 0))
            return time.time() - signed_in_at < self.runtime.settings.staff_absolute_seconds
        return True


def current_user(connection: ASGIConnection[Any, Any, Any, Any]) -> m.User | None:
    user = connection.scope.get("user")
    return user if isinstance(user, m.User) else None


def member_plan_price_id(connection: ASGIConnection[Any, Any, Any, Any]) -> UUID | None:
    """The price of the signed-in member's live plan, read with the user; only on a ``MEMBER_PLAN_OPT`` route."""
    price_id = connection.scope.get(_SCOPE_PLAN_PRICE)  # our own key, beside Litestar's
    return price_id if isinstance(price_id, UUID) else None


def requires_login(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if current_user(connection) is None:
        raise NotSignedInError


def requires(resource: Resource, access: Access = Access.READ) -> Any:
    """Guard factory: the signed-in user's role must grant ``access`` to ``resource`` in the permission table."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        user = current_user(connection)
        if user is None:
            raise NotSignedInError
        if not can(user.role, resource, access):
            raise PermissionDeniedError

    guard.__name__ = f"requires_{resource.value}_{access.name.lower()}"
    # Read by the access-matrix test: every guarded route declares what it needs.
    guard.permission = (resource, access)  # type: ignore[attr-defined]
    return guard
