"""Providers for routes that send email: shared by every domain's controllers (a route module never imports
another domain's controllers)."""

from __future__ import annotations

from litestar.di import NamedDependency
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.notifications.services import EmailService


def provide_email_service(db_session: NamedDependency[AsyncSession], queue: NamedDependency[Queue]) -> EmailService:
    return EmailService(db_session, queue)
