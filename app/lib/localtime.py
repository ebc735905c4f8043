"""The shop's local time: storage is UTC, people read and type wall-clock times in the shop's time zone (the shop
settings' time zone, or ``SHOP_TIME_ZONE`` when none is set there).

A "day" for the shop (today's day pass, the booking page's day, a closure) is a local calendar day, which is 23,
24 or 25 hours long in UTC; :func:`day_bounds` gives its UTC bounds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from app.lib.shop_settings import current_shop_settings

DEFAULT_FORMAT = "%a %d %b %Y %H:%M %Z"


def shop_zone() -> ZoneInfo:
    return current_shop_settings().zone


def to_local(value: datetime, zone: ZoneInfo | None = None) -> datetime:
    return value.astimezone(zone or shop_zone())


def local_today(now: datetime | None = None, zone: ZoneInfo | None = None) -> date:
    return to_local(now or datetime.now(UTC), zone).date()


def local_day(value: datetime, zone: ZoneInfo | None = None) -> date:
    """The shop's calendar day ``value`` falls on."""
    return to_local(value, zone).date()


def day_bounds(day: date, zone: ZoneInfo | None = None) -> tuple[datetime, datetime]:
    """``[start, end)`` of the local day ``day``, in UTC (local midnight exists on every DST change day)."""
    zone = zone or shop_zone()
    start = datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
    return start, end


def format_local(value: datetime | None, fmt: str = DEFAULT_FORMAT, zone: ZoneInfo | None = None) -> str:
    """``Tue 03 Nov 2026 09:00 EST``: the Jinja ``local_time`` filter; ``%Z`` is the zone's abbreviation then."""
    if value is None:
        return ""
    if value.tzinfo is None:  # SQLite hands back naive datetimes for some columns: they are UTC
        value = value.replace(tzinfo=UTC)
    return to_local(value, zone).strftime(fmt)
