"""Dialect-aware SQL pieces shared by the analytics queries."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Date, cast, func
from sqlalchemy.sql.elements import ColumnElement


def day_bucket(column: Any, dialect: str) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column: a ``GROUP BY`` key.

    PostgreSQL stores ``timestamptz``: convert to UTC first (the session's time zone may be anything).
    SQLite stores UTC ``YYYY-MM-DD HH:MM:SS`` text: ``date()`` takes its first ten characters' worth.
    """
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def as_date(value: Any) -> date:
    """A bucket value as a ``date`` (PostgreSQL returns dates, SQLite ISO strings)."""
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
