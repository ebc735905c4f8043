"""Slot generation from local opening hours across Toronto's DST changes (2026-11-01 and 2027-03-14)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from app.domain.bookings.schedule import format_windows, from_json, parse_windows, slots_for_day, to_json
from app.lib.localtime import day_bounds, format_local
from app.lib.settings import load_settings

TORONTO = ZoneInfo("America/Toronto")
EVERY_DAY_9_TO_5 = {d: [(time(9), time(17))] for d in range(7)}
NIGHT = {d: [(time(0), time(6))] for d in range(7)}  # spans 02:00, where the clock changes


def local_starts(day: date, hours: dict[int, list[tuple[time, time]]], minutes: int = 60) -> list[str]:
    return [format_local(s, "%H:%M %Z", TORONTO) for s, _ in slots_for_day(day, hours, minutes, TORONTO)]


@pytest.mark.parametrize(
    "day",
    [date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2), date(2027, 3, 13), date(2027, 3, 14), date(2027, 3, 15)],
)
def test_a_nine_to_five_day_has_eight_hours_on_both_sides_of_each_change(day: date) -> None:
    slots = slots_for_day(day, EVERY_DAY_9_TO_5, 60, TORONTO)
    assert len(slots) == 8
    assert all((end - start).total_seconds() == 3600 for start, end in slots)
    assert format_local(slots[0][0], "%H:%M", TORONTO) == "09:00"
    assert format_local(slots[-1][1], "%H:%M", TORONTO) == "17:00"


def test_the_utc_instants_move_by_an_hour_across_the_change() -> None:
    before = slots_for_day(date(2026, 10, 30), EVERY_DAY_9_TO_5, 60, TORONTO)[0][0]
    after = slots_for_day(date(2026, 11, 2), EVERY_DAY_9_TO_5, 60, TORONTO)[0][0]
    assert before == datetime(2026, 10, 30, 13, tzinfo=UTC)  # 09:00 EDT
    assert after == datetime(2026, 11, 2, 14, tzinfo=UTC)  # 09:00 EST


def test_march_no_slot_lands_in_the_skipped_hour() -> None:
    day = date(2027, 3, 14)
    assert local_starts(day, NIGHT) == ["00:00 EST", "01:00 EST", "03:00 EDT", "04:00 EDT", "05:00 EDT"]
    assert local_starts(day, NIGHT, 30) == [
        "00:00 EST", "00:30 EST", "01:00 EST", "01:30 EST",
        "03:00 EDT", "03:30 EDT", "04:00 EDT", "04:30 EDT", "05:00 EDT", "05:30 EDT",
    ]  # fmt: skip
    slots = slots_for_day(day, NIGHT, 60, TORONTO)
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(slots))  # no overlap
    assert all((end - start).total_seconds() == 3600 for start, end in slots)


def test_november_the_repeated_hour_is_not_doubled() -> None:
    day = date(2026, 11, 1)
    starts = local_starts(day, NIGHT)
    assert starts == ["00:00 EDT", "01:00 EDT", "02:00 EST", "03:00 EST", "04:00 EST", "05:00 EST"]
    assert starts.count("01:00 EST") == 0
    slots = slots_for_day(day, NIGHT, 60, TORONTO)
    assert all((end - start).total_seconds() == 3600 for start, end in slots)
    assert len({s for s, _ in slots}) == len(slots)


def test_a_slot_that_would_run_past_closing_is_not_offered() -> None:
    hours = {0: [(time(9), time(12)), (time(13), time(17, 30))]}
    expected = ["09:00 EST", "10:30 EST", "13:00 EST", "14:30 EST", "16:00 EST"]
    assert local_starts(date(2026, 11, 2), hours, 90) == expected
    assert local_starts(date(2026, 11, 3), hours, 90) == []  # Tuesday: closed


def test_local_days_are_23_24_and_25_hours_long() -> None:
    def hours(day: date) -> float:
        start, end = day_bounds(day, TORONTO)
        return (end - start).total_seconds() / 3600

    assert (hours(date(2027, 3, 14)), hours(date(2026, 12, 1)), hours(date(2026, 11, 1))) == (23, 24, 25)
    assert day_bounds(date(2026, 12, 1), TORONTO)[0] == datetime(2026, 12, 1, 5, tzinfo=UTC)


def test_opening_hours_text_round_trips_and_refuses_nonsense() -> None:
    windows = parse_windows(" 13:00-17:00, 09:00 - 12:00 ")
    assert windows == [(time(9), time(12)), (time(13), time(17))]
    assert format_windows(windows) == "09:00-12:00, 13:00-17:00"
    assert parse_windows("") == []
    assert from_json(to_json({0: windows, 6: []})) == {0: windows}
    for bad in ("9-5", "17:00-09:00", "09:00-12:00, 11:00-13:00", "25:00-26:00"):
        with pytest.raises(ValueError, match=r"."):
            parse_windows(bad)


def test_shop_time_zone_is_checked_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_TIME_ZONE", "America/Tornto")
    with pytest.raises(ValueError, match="SHOP_TIME_ZONE must be an IANA time zone"):
        load_settings()
    monkeypatch.setenv("SHOP_TIME_ZONE", "Europe/Paris")
    assert load_settings().shop_zone == ZoneInfo("Europe/Paris")
    monkeypatch.delenv("SHOP_TIME_ZONE")
    assert load_settings().shop_time_zone == "America/Toronto"
