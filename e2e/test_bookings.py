"""Booking by card: a non-member pays for a meeting room through the Payment Element and finds it in the account."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import Page, expect

from e2e.conftest import register, unique_email
from e2e.test_purchase import expect_paid, pay_with

SHOP_ZONE = ZoneInfo("America/Toronto")  # SHOP_TIME_ZONE's default, which the e2e server runs with


def second_weekday() -> str:
    """A weekday at least two days ahead: the seed has slots on weekdays, and a day the member journey leaves alone."""
    day: date = datetime.now(UTC).astimezone(SHOP_ZONE).date() + timedelta(days=2)  # the shop's day, not UTC's
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.isoformat()


def test_a_non_member_books_a_meeting_room_by_card(page: Page) -> None:
    register(page, email=unique_email("booker"), password="a long booker password", name="Bea Booker")
    page.goto(f"/bookings?day={second_weekday()}")
    room = page.locator("section.booking-resource").filter(has_text="Meeting room A")
    expect(room.get_by_role("button", name=re.compile(r"^Book \("))).to_have_count(0)  # no credits: not a member
    # The seed opens the room 09:00-17:00 local time: the last slot is 16:00-17:00 in Toronto, whatever UTC says.
    last = room.locator("tbody tr").last
    expect(last).to_contain_text(re.compile(r"16:00\u201317:00 E[SD]T"))
    last.get_by_role("link", name=re.compile(r"^Pay \$25\.00 CAD by card")).click()
    expect(page.get_by_text(re.compile(r"16:00\u201317:00 E[SD]T: \$25\.00 CAD plus sales tax"))).to_be_visible()

    expect(page.get_by_role("heading", name="Pay by card")).to_be_visible()
    page.get_by_label("Name on the bill").fill("Bea Booker")
    page.get_by_label("Country").select_option("CA")
    page.get_by_label("Province or territory").select_option(label="Ontario")
    page.get_by_label("Postal code").fill("M5V 2T6")
    page.get_by_role("button", name="Continue to payment").click()

    expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}/pay$"))
    expect(page.get_by_role("button", name="Pay $28.25 CAD")).to_be_enabled()  # $25.00 + 13 % HST
    pay_with(page, "4242 4242 4242 4242")
    expect_paid(page)

    page.goto("/account/bookings")
    row = page.locator("#my-bookings tr").filter(has_text="Meeting room A")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Paid by card")
    expect(row).to_contain_text("Confirmed")
    expect(row).to_contain_text(re.compile(r"16:00\u201317:00 E[SD]T"))
    expect(row.get_by_role("button", name=re.compile(r"^Cancel"))).to_be_visible()
