"""Date ranges of the dashboard: presets and custom ranges in whole UTC days, and the previous range."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

PRESETS = {"7d": "Last 7 days", "30d": "Last 30 days", "90d": "Last 90 days", "mtd": "Month to date"}
DEFAULT_PRESET = "30d"
MAX_DAYS = 366 * 2  # a custom range longer than two years is cut (the charts have one bar per day)


@dataclass(frozen=True, slots=True)
class DateRange:
    """``start`` inclusive, ``end`` exclusive, both UTC midnights expressed as dates."""

    start: date
    end: date
    preset: str  # a PRESETS key or "custom"

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def end_at(self) -> datetime:
        return datetime.combine(self.end, time(), UTC)

    def previous(self) -> DateRange:
        """The range of equal length that ends where this one starts."""
        return DateRange(self.start - timedelta(days=self.days), self.start, self.preset)

    def each_day(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    @property
    def label(self) -> str:
        if self.preset in PRESETS:
            return PRESETS[self.preset]
        return f"{self.start.isoformat()} to {self.last_day.isoformat()}"

    @property
    def key(self) -> str:
        return f"{self.start.isoformat()}:{self.end.isoformat()}"


def _parse_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def parse_range(preset: str | None, from_: str | None, to: str | None, today: date | None = None) -> DateRange:
    """A preset ("7d", "30d", "90d", "mtd"), or "custom" with inclusive ``from``/``to`` dates. Never fails:
    nonsense falls back to the default preset, reversed dates are swapped, ranges are capped at two years."""
    today = today or datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    if preset == "custom":
        first, last = _parse_date(from_), _parse_date(to)
        if first is not None and last is not None:
            if last < first:
                first, last = last, first
            first = max(first, last - timedelta(days=MAX_DAYS - 1))
            return DateRange(first, last + timedelta(days=1), "custom")
        preset = DEFAULT_PRESET
    if preset == "mtd":
        return DateRange(today.replace(day=1), tomorrow, "mtd")
    if preset not in PRESETS:
        preset = DEFAULT_PRESET
    days = int(preset.removesuffix("d"))
    return DateRange(tomorrow - timedelta(days=days), tomorrow, preset)
