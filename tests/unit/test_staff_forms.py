"""The forms read through FormReader beyond the catalog and promo ones (tests/unit/test_forms.py): plans, rooms and
desks, closures, shop settings, credit adjustments, refunds and checkout billing. Good input comes back typed; bad
input names every field in trouble at once, with the form's own words."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from uuid import uuid4

import pytest

from app.db import models as m
from app.domain.accounts.admin_customers import parse_credit_form
from app.domain.bookings.admin_resources import parse_closure, parse_resource_form
from app.domain.checkout.services import parse_billing
from app.domain.orders.refunds import parse_refund_form
from app.domain.plans.admin import parse_plan_form
from app.domain.settings.services import parse_settings_form
from app.lib.exceptions import FormError

TODAY = date(2026, 12, 4)
DESK = m.CreditType(id=uuid4(), code="desk-days", name="Desk days", unit="days")


def problems(read: Callable[[], object]) -> FormError:
    with pytest.raises(FormError) as caught:
        read()
    return caught.value


# --- plans ----------------------------------------------------------------------------------------------------------


def plan(form: dict[str, str], downloads: list[str] | None = None) -> Callable[[], object]:
    product = uuid4()
    return lambda: parse_plan_form(form, download_ids=downloads or [], credit_types=[DESK], product_ids={product})


def test_the_plan_form_reads_prices_credits_and_switches() -> None:
    parsed = parse_plan_form(
        {
            "name": "Resident",
            "price_month_standard": "49",
            "price_month_member": "39.50",
            "features": "Desk\n\n Lockers \n",
            f"credits_{DESK.id}": "4",
            "allow_cancel_now": "on",
        },
        download_ids=[],
        credit_types=[DESK],
        product_ids=set(),
    )
    assert (parsed.slug, parsed.trial_days, parsed.position) == ("resident", 0, 0)  # slug from the name; defaults
    assert parsed.prices == {
        ("month", "standard"): 4900,
        ("year", "standard"): None,
        ("month", "member"): 3950,
        ("year", "member"): None,
    }
    assert parsed.features == ["Desk", "Lockers"]
    assert parsed.credits == {DESK.id: 4}
    assert (parsed.allow_cancel_now, parsed.credits_roll_over) == (True, False)


def test_the_plan_form_names_every_problem() -> None:
    error = problems(
        plan(
            {
                "name": "",
                "slug": "Not A Slug",
                "price_month_standard": "0",
                "price_year_standard": "lots",
                "trial_days": "731",
                "position": "-1",
                f"credits_{DESK.id}": "10001",
            },
            downloads=["not-a-product"],
        )
    )
    assert error.errors == {
        "name": "Enter a name of up to 80 characters, like Resident.",
        "slug": "Use lower-case letters, digits and hyphens, like resident.",
        "price_month_standard": "Enter an amount greater than zero and up to 100,000.00.",
        "price_year_standard": "Enter an amount such as 49.00, or leave it empty.",
        "trial_days": "Enter a number of days from 0 to 730.",
        "position": "Enter a number from 0 to 1000 (lower comes first).",
        f"credits_{DESK.id}": "Enter a whole number from 0 to 10,000, or leave it empty.",
        "download_ids": "Choose products from the list.",
    }


def test_a_plan_nobody_can_subscribe_to_or_with_a_dearer_member_price_is_refused() -> None:
    assert problems(plan({"name": "Resident"})).errors == {
        "price_month_standard": "Enter a monthly or a yearly price: otherwise nobody can subscribe."
    }
    error = problems(plan({"name": "Resident", "price_month_standard": "49", "price_month_member": "50"}))
    assert error.errors == {"price_month_member": "The member price can't be more than the monthly price."}
    error = problems(plan({"name": "Resident", "price_month_standard": "49", "price_year_member": "400"}))
    assert error.errors == {"price_year_member": "A member price needs a yearly price to discount."}


# --- rooms, desks and closures --------------------------------------------------------------------------------------


def test_the_room_form_reads_hours_credits_and_a_card_price() -> None:
    parsed = parse_resource_form(
        {
            "name": "Meeting room B",
            "kind": "room",
            "capacity": "6",
            "credit_type_id": str(DESK.id),
            "credit_cost": "2",
            "price": "25",
            "slot_minutes": "30",
            "hours_0": "09:00-12:00, 13:00-17:00",
            "book_ahead_days": "14",
            "cancel_cutoff_hours": "0",
        },
        {DESK.id},
    )
    assert (parsed.slug, parsed.capacity, parsed.credit_type_id, parsed.credit_cost) == (
        "meeting-room-b",
        6,
        DESK.id,
        2,
    )
    assert (parsed.price, parsed.slot_minutes, parsed.cancel_cutoff_hours) == (2500, 30, 0)
    assert parsed.opening_hours == {"0": [["09:00", "12:00"], ["13:00", "17:00"]]}


def test_the_room_form_names_every_problem() -> None:
    error = problems(
        lambda: parse_resource_form(
            {
                "name": "Desk",
                "kind": "sofa",
                "capacity": "",
                "credit_type_id": str(uuid4()),  # not one of the shop's
                "price": "-1",
                "slot_minutes": "22",
                "hours_1": "17:00-09:00",
                "book_ahead_days": "366",
                "cancel_cutoff_hours": "x",
            },
            {DESK.id},
        )
    )
    assert error.errors == {
        "kind": "Choose a room or a desk.",
        "capacity": "Enter the seats per slot, from 1 to 500.",
        "credit_type_id": "Choose a credit type from the list, or none.",
        "credit_cost": "Enter the credits one slot costs, from 1 to 100.",  # asked for once a type is chosen
        "price": "Enter a price of zero or more.",
        "slot_minutes": "Use a multiple of 5 minutes, like 30 or 60.",
        "hours_1": "17:00\u201309:00: closing time must be after opening time.",
        "book_ahead_days": "Enter a number of days from 1 to 365.",
        "cancel_cutoff_hours": "Enter a number of hours from 0 to 720.",
    }


def test_a_room_nobody_can_book_or_that_never_opens_is_refused() -> None:
    error = problems(
        lambda: parse_resource_form(
            {"name": "Desk", "capacity": "1", "slot_minutes": "60", "book_ahead_days": "7", "cancel_cutoff_hours": "1"},
            set(),
        )
    )
    assert error.errors == {
        "price": "Choose a credit type or enter a card price: otherwise nobody can book it.",
        "hours_0": "Open it on at least one day of the week.",
    }


def test_a_closure_is_one_day_unless_it_says_otherwise_and_never_in_the_past() -> None:
    assert parse_closure({"starts_on": "2026-12-24", "reason": " Holiday "}, today=TODAY) == (
        date(2026, 12, 24),
        date(2026, 12, 24),
        "Holiday",
    )
    assert parse_closure({"starts_on": "2026-12-24", "ends_on": "2027-01-02"}, today=TODAY)[1] == date(2027, 1, 2)
    assert problems(lambda: parse_closure({}, today=TODAY)).errors == {
        "starts_on": "Enter a date like 2026-12-24.",
        "ends_on": "Enter a date like 2026-12-24.",
    }
    assert problems(
        lambda: parse_closure({"starts_on": "2026-12-24", "ends_on": "2026-12-23"}, today=TODAY)
    ).errors == {"ends_on": "The last day must be on or after the first."}
    assert problems(
        lambda: parse_closure({"starts_on": "2026-12-01", "ends_on": "2026-12-03"}, today=TODAY)
    ).errors == {"ends_on": "That is in the past: choose today or later."}


# --- shop settings --------------------------------------------------------------------------------------------------

SETTINGS = {
    "legal_name": "Cartwright Digital Inc.",
    "address": "100 King St W\r\nToronto ON M5X 1A9",
    "support_email": "Help@Cartwright.test",
    "time_zone": "America/Vancouver",
    "download_limit": "7",
    "link_lifetime_hours": "48",
    "low_stock_threshold": "0",
    "alert_recipients": "ops@cartwright.test, owner@cartwright.test\nops@cartwright.test",
}


def test_the_settings_form_keeps_the_shop_address_and_each_recipient_once() -> None:
    parsed = parse_settings_form(SETTINGS)
    assert parsed.address == "100 King St W\nToronto ON M5X 1A9"  # a recipient once overwrote it
    assert parsed.support_email == "help@cartwright.test"
    assert parsed.alert_recipients == ("ops@cartwright.test", "owner@cartwright.test")
    assert (parsed.download_limit, parsed.link_lifetime_hours, parsed.low_stock_threshold) == (7, 48, 0)


def test_the_settings_form_names_every_problem() -> None:
    error = problems(
        lambda: parse_settings_form(
            {
                **SETTINGS,
                "qst_number": "1" * 41,
                "time_zone": "Mars/Olympus",
                "download_limit": "",
                "link_lifetime_hours": "721",
                "low_stock_threshold": "-1",
                "alert_recipients": "ops@cartwright.test\nnope",
            }
        )
    )
    assert error.errors == {
        "qst_number": "Keep the QST number under 40 characters.",
        "time_zone": "“Mars/Olympus” is not a time zone: use an IANA name such as America/Toronto.",
        "download_limit": "Enter how many downloads a buyer gets, from 1 to 1000.",
        "link_lifetime_hours": "Enter a number of hours from 1 to 720.",
        "low_stock_threshold": "Enter a whole number of units, 0 or more.",
        "alert_recipients": "“nope” is not an email address: one address per line.",
    }


# --- money forms with a one-use token -------------------------------------------------------------------------------


def test_a_credit_adjustment_reads_a_signed_amount_and_a_tidy_reason() -> None:
    parsed = parse_credit_form(
        {"credit_type_id": str(DESK.id), "amount": "-2", "reason": "  booked   twice ", "form_token": "t1"}, [DESK]
    )
    assert (parsed.credit_type_id, parsed.amount, parsed.reason, parsed.form_token) == (
        DESK.id,
        -2,
        "booked twice",
        "t1",
    )
    error = problems(lambda: parse_credit_form({"amount": "0", "form_token": "t1"}, [DESK]))
    assert error.errors == {
        "credit_type_id": "Choose a credit type.",
        "amount": "Enter a number of credits other than zero.",
        "reason": "Say why: the customer sees this reason in their credit history.",
    }


def refund(form: dict[str, str]) -> Callable[[], object]:
    return lambda: parse_refund_form(
        form,
        refundable=1500,
        currency="CAD",
        too_much="At most {limit} is left to refund.",
        kept_in="on the order",
        what="order",
        page="order",
    )


def test_a_refund_is_all_that_is_left_unless_an_amount_is_given() -> None:
    parsed = refund({"reason": "Asked", "form_token": "t"})()
    assert parsed == parse_refund_form(  # the same, typed
        {"amount": "15.00", "reason": "Asked", "form_token": "t", "stripe_reason": "requested_by_customer"},
        refundable=1500,
        currency="CAD",
        too_much="",
        kept_in="",
        what="",
        page="",
    )
    error = problems(refund({"amount": "15.01", "stripe_reason": "bored", "form_token": "t"}))
    assert error.errors == {
        "amount": "At most $15.00 CAD is left to refund.",
        "reason": "Say why the order is refunded (kept on the order).",
        "stripe_reason": "Choose one of the listed reasons.",
    }
    assert problems(refund({"amount": "0", "reason": "x", "form_token": "t"})).errors == {
        "amount": "Enter an amount greater than zero."
    }


def test_a_money_form_without_its_token_has_expired_and_still_names_its_field_errors() -> None:
    error = problems(refund({"amount": "abc", "reason": "x"}))
    assert error.message == "This form has expired: check the order and try again."
    assert error.errors == {"amount": "Enter an amount such as 12.50."}
    error = problems(lambda: parse_credit_form({"amount": "1", "reason": "x", "form_token": "t" * 65}, [DESK]))
    assert error.message == "This form has expired: reload the page and try again."


# --- checkout billing -----------------------------------------------------------------------------------------------


def test_billing_details_are_tidied_and_checked_against_the_province() -> None:
    parsed = parse_billing(
        {
            "email": "Ada@Example.com",
            "name": " Ada  Lovelace ",
            "country": "ca",
            "region": "on",
            "postal_code": "m5v3l9",
        },
        account_email=None,
    )
    assert (parsed.email, parsed.name, parsed.region, parsed.postal_code) == (
        "ada@example.com",
        "Ada Lovelace",
        "ON",
        "M5V 3L9",
    )
    assert parsed.region_name == "Ontario"
    error = problems(
        lambda: parse_billing(
            {"email": "nope", "name": "", "country": "CA", "region": "BC", "postal_code": "M5V 3L9"}, account_email=None
        )
    )
    assert error.errors == {
        "email": "Enter the email address your receipt and downloads should go to.",
        "name": "Enter the name on the bill.",
        "postal_code": "That postal code is not in British Columbia.",
    }


def test_a_signed_in_customer_is_billed_at_their_account_address() -> None:
    parsed = parse_billing(
        {"email": "someone-else@example.com", "name": "Ada", "country": "US", "region": "ny", "postal_code": "10001"},
        account_email="ada@example.com",
    )
    assert (parsed.email, parsed.country, parsed.region) == ("ada@example.com", "US", "NY")


def test_opening_hours_are_kept_as_local_times() -> None:
    parsed = parse_resource_form(
        {
            "name": "Desk",
            "credit_type_id": str(DESK.id),
            "credit_cost": "1",
            "capacity": "1",
            "slot_minutes": "60",
            "hours_6": "10:00-14:00",
            "book_ahead_days": "7",
            "cancel_cutoff_hours": "1",
        },
        {DESK.id},
    )
    assert parsed.price == 0  # credits only: no card price
    assert parsed.opening_hours == {"6": [["10:00", "14:00"]]}
