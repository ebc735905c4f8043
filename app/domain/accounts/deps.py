from __future__ import annotations

from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.accounts.lockout import LoginThrottle
from app.domain.accounts.services import AccountService
from app.domain.notifications.services import EmailService
from app.lib.runtime import Runtime


def provide_email_service(db_session: AsyncSession, queue: Queue) -> EmailService:
    return EmailService(db_session, queue)


def provide_account_service(db_session: AsyncSession, runtime: Runtime, email_service: EmailService) -> AccountService:
    return AccountService(db_session, runtime.settings, email_service)


def provide_login_throttle(runtime: Runtime) -> LoginThrottle:
    return LoginThrottle(runtime.redis, runtime.settings)
