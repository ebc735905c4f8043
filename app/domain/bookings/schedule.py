"""Slots from opening hours: wall-clock times in the shop's zone, turned into UTC instants, right across DST.

Opening hours are what a sign on the door says ("Mon 09:00-17:00"), so they are local wall-clock times. A slot
starts at ``open``, ``open + length``, ... on the wall clock and lasts ``length`` of real time; it is offered when it
ends by closing time. Across the two DST changes (America/Toronto: 2027-03-14 02:00 -> 03:00, 2026-11-01
02:00 -> 01:00):

- a start time the clock skips (02:00 in March) does not exist: no slot there;
- a start time the clock shows twice (01:00 in November) is offered once, at its first occurrence: the repeated
  hour is not doubled;
- a 09:00-17:00 day has 8 one-hour slots on the change days and on either side of them.

Pure functions, no database: unit-tested in tests/unit/test_booking_schedule.py.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Monday first, as date.weekday() counts.
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

Window = tuple[time, time]
OpeningHours = dict[int, list[Window]]  # weekday (0 = Monday) -> opening windows, earliest first

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*[-\u2013]\s*(\d{1,2}):(\d{2})\s*$")


def exists_locally(moment: datetime) -> bool:
    """False for a wall-clock time the clock skips (it comes back different after a round trip through UTC)."""
    back = moment.astimezone(UTC).astimezone(moment.tzinfo)
    return back.replace(tzinfo=None) == moment.replace(tzinfo=None)


def slots_for_day(day: date, hours: OpeningHours, slot_minutes: int, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The ``(starts_at, ends_at)`` UTC pairs offered on the local ``day``, earliest first."""
    length = timedelta(minutes=slot_minutes)
    slots: list[tuple[datetime, datetime]] = []
    for opens, closes in hours.get(day.weekday(), []):
        # fold=0: the first occurrence of a repeated time; a skipped closing time resolves to the same instant as
        # the wall clock's next existing time, which is what "closes at 02:30" means that night.
        closing = datetime.combine(day, closes, tzinfo=zone).astimezone(UTC)
        wall = datetime.combine(day, opens)
        while wall.date() == day:
            local = wall.replace(tzinfo=zone)
            wall += length
            if not exists_locally(local):
                continue
            starts_at = local.astimezone(UTC)
            ends_at = starts_at + length
            if ends_at > closing:
                break
            if slots and starts_at < slots[-1][1]:
                continue  # only on the repeated hour: this wall time is already inside the previous slot
            slots.append((starts_at, ends_at))
    return sorted(set(slots))


# --- the stored form (JSON) and the admin's text form -------------------------------------------------------------


def parse_windows(text: str) -> list[Window]:
    """``"09:00-12:00, 13:00-17:00"`` -> windows; empty text is a closed day. Raises ValueError with a message."""
    windows: list[Window] = []
    for part in (p for p in re.split(r"[,;]", text) if p.strip()):
        match = _WINDOW.match(part)
        if match is None:
            raise ValueError("Write opening hours like 09:00-17:00, or 09:00-12:00, 13:00-17:00; empty when closed.")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError("Use times from 00:00 to 23:59.")
        opens, closes = time(h1, m1), time(h2, m2)
        if closes <= opens:
            raise ValueError(f"{format_window((opens, closes))}: closing time must be after opening time.")
        windows.append((opens, closes))
    windows.sort()
    for (_, first_close), (second_open, _) in itertools.pairwise(windows):
        if second_open < first_close:
            raise ValueError("Opening windows on one day must not overlap.")
    return windows


def format_window(window: Window) -> str:
    return f"{window[0]:%H:%M}\u2013{window[1]:%H:%M}"


def format_windows(windows: Sequence[Window]) -> str:
    """The admin form's text for one day: ``09:00-12:00, 13:00-17:00`` (a plain hyphen, easy to type back)."""
    return ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in windows)


def to_json(hours: OpeningHours) -> dict[str, list[list[str]]]:
    return {str(d): [[f"{a:%H:%M}", f"{b:%H:%M}"] for a, b in ws] for d, ws in sorted(hours.items()) if ws}


def from_json(data: Mapping[str, Sequence[Sequence[str]]] | None) -> OpeningHours:
    hours: OpeningHours = {}
    for key, windows in (data or {}).items():
        hours[int(key)] = [(time.fromisoformat(a), time.fromisoformat(b)) for a, b in windows]
    return hours
