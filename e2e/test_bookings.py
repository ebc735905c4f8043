"""Booking by card: a non-member pays for a meeting room through the Payment Element and finds it in the account."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, register, sign_in, unique_email
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


def test_an_admin_opens_a_room_and_a_customer_books_it_in_local_time(
    browser: Browser, page: Page, base_url: str
) -> None:
    """#16 item 2 + 3: opening hours typed as Toronto wall-clock times come out as Toronto times on the booking page."""
    name = f"Studio {unique_email('room').split('@')[0][-6:]}"
    staff = browser.new_context(base_url=base_url).new_page()
    staff.goto("/login?next_url=/admin/resources/new")
    sign_in(staff, *ADMIN)
    staff.get_by_label("Name", exact=True).fill(name)
    staff.get_by_label("Kind").select_option("room")
    staff.get_by_label("Seats per slot").fill("3")
    staff.get_by_label("Members pay with").select_option(label="No credits (card only)")
    staff.get_by_label("Card price per slot (CAD, before tax)").fill("30.00")
    for weekday in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"):
        staff.get_by_label(weekday).fill("10:00-13:00")
    staff.get_by_label("Slot length (minutes)").fill("60")
    staff.get_by_role("button", name="Create").click()
    expect(staff.get_by_text(f"{name} created: customers can book it now.")).to_be_visible()
    expect(staff.get_by_role("heading", name=name)).to_be_visible()

    register(page, email=unique_email("local-time"), password="a long local-time password", name="Lou Local")
    tomorrow = datetime.now(UTC).astimezone(SHOP_ZONE).date() + timedelta(days=1)
    page.goto(f"/bookings?day={tomorrow.isoformat()}")
    expect(page.get_by_text("Times are local time in America/Toronto.")).to_be_visible()
    room = page.locator("section.booking-resource").filter(has_text=name)
    rows = room.locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text(re.compile(r"10:00\u201311:00 E[SD]T"))
    expect(rows.nth(2)).to_contain_text(re.compile(r"12:00\u201313:00 E[SD]T"))
    expect(rows.nth(1)).to_contain_text("3 of 3")
    rows.nth(1).get_by_role("link", name=re.compile(r"^Pay \$30\.00 CAD by card")).click()

    expect(page.get_by_text(re.compile(r"11:00\u201312:00 E[SD]T: \$30\.00 CAD plus sales tax"))).to_be_visible()
    page.get_by_label("Name on the bill").fill("Lou Local")
    page.get_by_label("Country").select_option("CA")
    page.get_by_label("Province or territory").select_option(label="Ontario")
    page.get_by_label("Postal code").fill("M5V 2T6")
    page.get_by_role("button", name="Continue to payment").click()
    expect(page.get_by_role("button", name="Pay $33.90 CAD")).to_be_enabled()  # $30.00 + 13 % HST
    pay_with(page, "4242 4242 4242 4242")
    expect_paid(page)

    page.goto("/account/bookings")
    row = page.locator("#my-bookings tr").filter(has_text=name)
    expect(row).to_contain_text(re.compile(r"11:00\u201312:00 E[SD]T"))
    expect(row).to_contain_text("Confirmed")
    page.goto(f"/bookings?day={tomorrow.isoformat()}")
    expect(room.locator("tbody tr").nth(1)).to_contain_text("2 of 3")

    # Archive it again: the other journeys find the seeded rooms only.
    staff.once("dialog", lambda dialog: dialog.accept())
    staff.get_by_role("button", name=f"Archive {name}").click()
    expect(staff.get_by_text(re.compile(f"{name} archived"))).to_be_visible()
    staff.context.close()
