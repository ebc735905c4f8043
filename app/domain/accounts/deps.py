from __future__ import annotations

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.accounts.lockout import LoginThrottle
from app.domain.accounts.services import AccountService
from app.domain.notifications.services import EmailService
from app.lib.runtime import Runtime


def provide_account_service(
    db_session: NamedDependency[AsyncSession],
    runtime: NamedDependency[Runtime],
    email_service: NamedDependency[EmailService],
) -> AccountService:
    return AccountService(db_session, runtime.settings, email_service)


def provide_login_throttle(runtime: NamedDependency[Runtime]) -> LoginThrottle:
    return LoginThrottle(runtime.redis, runtime.settings)
