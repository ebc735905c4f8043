"""Dashboard date ranges: presets, custom ranges, nonsense, and the previous range of equal length."""

from __future__ import annotations

from datetime import date

from app.domain.analytics.movements import monthly
from app.domain.analytics.ranges import parse_range

TODAY = date(2026, 3, 10)


def test_presets_end_today_inclusive() -> None:
    week = parse_range("7d", None, None, TODAY)
    assert (week.start, week.last_day, week.days) == (date(2026, 3, 4), TODAY, 7)
    assert parse_range("90d", None, None, TODAY).days == 90
    mtd = parse_range("mtd", None, None, TODAY)
    assert (mtd.start, mtd.end) == (date(2026, 3, 1), date(2026, 3, 11))
    assert (mtd.previous().start, mtd.previous().end) == (date(2026, 2, 19), date(2026, 3, 1))


def test_custom_ranges_are_inclusive_swapped_and_capped() -> None:
    custom = parse_range("custom", "2026-01-31", "2026-01-01", TODAY)
    assert (custom.start, custom.last_day, custom.days, custom.preset) == (
        date(2026, 1, 1),
        date(2026, 1, 31),
        31,
        "custom",
    )
    assert (custom.previous().start, custom.previous().last_day) == (date(2025, 12, 1), date(2025, 12, 31))
    assert parse_range("custom", "1900-01-01", "2026-01-01", TODAY).days == 366 * 2


def test_nonsense_falls_back_to_the_default() -> None:
    for preset, start, end in (("bogus", None, None), ("custom", "not-a-date", "2026-01-01"), (None, None, None)):
        r = parse_range(preset, start, end, TODAY)
        assert (r.preset, r.days, r.last_day) == ("30d", 30, TODAY)


def test_yearly_prices_count_a_twelfth_rounded_half_up() -> None:
    assert monthly(2000, "month") == 2000
    assert monthly(19900, "year") == 1658  # 1658.33
    assert monthly(18, "year") == 2  # 1.5 rounds up
    assert monthly(6, "year") == 1  # 0.5 rounds up
