"""The form reader (app/lib/forms.py) and the promo and category forms built on it: every field's problem comes
back at once, beside its field, with the form's own words; good input comes back typed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from uuid import uuid4

import pytest

from app.domain.catalog.admin_categories import CategoryForm, parse_category_form
from app.domain.catalog.admin_products import MAX_DOWNLOAD_LIMIT, parse_product_form
from app.domain.promotions.admin import parse_promo_form
from app.lib.exceptions import FormError
from app.lib.forms import FormReader

TODAY = date(2026, 12, 3)


def problems(data: dict[str, str], read: Callable[[dict[str, str]], object]) -> dict[str, str]:
    with pytest.raises(FormError) as caught:
        read(data)
    return caught.value.errors


def test_every_field_in_trouble_is_named_at_once_and_the_first_message_of_a_field_wins() -> None:
    read = FormReader({"name": "", "age": "twelve", "price": "1.234", "when": "31/01/2027", "pct": "12.345"})
    assert read.text("name", required="Give a name.") == ""
    assert read.integer("age", "Enter a whole number.", minimum=0) is None
    assert read.money("price", "CAD", "Enter an amount such as 5.00.") is None
    assert read.day("when", "Enter a date like 2027-01-31.") is None
    assert read.percent_bps("pct", "From 1 to 100.", decimals="Two decimals at most.") is None
    read.error("name", "A second message for the same field.")
    with pytest.raises(FormError) as caught:
        read.done()
    assert caught.value.errors == {
        "name": "Give a name.",
        "age": "Enter a whole number.",
        "price": "Enter an amount such as 5.00.",
        "when": "Enter a date like 2027-01-31.",
        "pct": "Two decimals at most.",
    }
    assert caught.value.message == "Please correct the errors below."


def test_good_input_comes_back_typed_and_done_raises_nothing() -> None:
    read = FormReader({"n": " 42 ", "price": "$1,200.50", "pct": "12.5 %", "day": "2027-01-31", "box": "on"})
    assert read.integer("n", "?", minimum=1, maximum=100) == 42
    assert read.money("price", "CAD", "?") == 120050
    assert read.money("price", "JPY", "?") is None  # yen have no decimals: 1200.50 is not an amount
    assert read.percent_bps("pct", "?", decimals="?") == 1250
    assert read.day("day", "?", not_before=TODAY) == date(2027, 1, 31)
    assert read.checkbox("box") and not read.checkbox("missing")
    assert read.integer("missing", "?", default=7) == 7
    read.errors.pop("price")  # the yen line above
    read.done()


@pytest.mark.parametrize("value", ["0", "101", "NaN", "Infinity", "-5", "abc", ""])
def test_a_percentage_outside_1_to_100_or_not_a_number_is_refused(value: str) -> None:
    read = FormReader({"pct": value})
    assert read.percent_bps("pct", "From 1 to 100.", decimals="?") is None
    assert read.errors == {"pct": "From 1 to 100."}


def test_limits_dates_and_required_amounts() -> None:
    read = FormReader({"long": "x" * 81, "n": "1001", "past": "2026-12-02", "zero": "0.00", "empty": ""})
    read.text("long", max_length=(80, "Under 80, please."))
    read.integer("n", "From -1000 to 1000.", minimum=-1000, maximum=1000)
    read.day("past", "A date.", not_before=TODAY, too_early="Today or later.")
    read.money("zero", "CAD", "An amount.", positive="More than zero.")
    read.money("empty", "CAD", "An amount is needed.", required=True)
    read.choice("missing", {"a", "b"}, "Choose a or b.")
    assert read.errors == {
        "long": "Under 80, please.",
        "n": "From -1000 to 1000.",
        "past": "Today or later.",
        "zero": "More than zero.",
        "empty": "An amount is needed.",
        "missing": "Choose a or b.",
    }


def promo_form(**fields: str) -> dict[str, str]:
    return {
        "code": "spring-25",
        "kind": "percent",
        "percent_off": "15",
        "duration": "once",
        "form_token": "t",
        **fields,
    }


def test_the_promo_form_reads_a_good_code() -> None:
    parsed = parse_promo_form(
        promo_form(expires_on="2027-01-31", minimum_amount="50", first_order_only="on", max_redemptions="100"),
        product_ids=["not-a-uuid"],
        plan_ids=[],
        today=TODAY,
    )
    assert (parsed.code, parsed.percent_off_bps, parsed.amount_off, parsed.currency) == ("SPRING-25", 1500, None, "CAD")
    assert parsed.expires_at == datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC)  # through the whole of that day
    assert (parsed.minimum_amount, parsed.first_order_only, parsed.max_redemptions) == (5000, True, 100)
    assert parsed.product_ids == []  # ids that are not UUIDs are dropped


def test_the_promo_form_names_every_problem_with_its_own_words() -> None:
    errors = problems(
        promo_form(
            code="x",
            kind="amount",
            amount_off="0",
            duration="repeating",
            duration_in_months="99",
            max_redemptions="0",
            expires_on="2026-12-01",
            minimum_amount="lots",
            currency="USD",
        ),
        lambda data: parse_promo_form(data, product_ids=[], plan_ids=[], today=TODAY),
    )
    assert errors == {
        "code": "Use 3 to 40 letters A-Z, digits and hyphens, like SPRING-25.",
        "currency": "Codes are in Canadian dollars (CAD).",
        "amount_off": "Enter an amount greater than zero.",
        "duration_in_months": "Enter a number of months from 1 to 36.",
        "max_redemptions": "Leave empty for no limit, or enter 1 or more.",
        "expires_on": "Choose today or a later date.",
        "minimum_amount": "Enter an amount such as 50.00, or leave it empty.",
    }


def test_a_promo_form_without_its_token_has_expired_whatever_else_it_says() -> None:
    with pytest.raises(FormError) as caught:
        parse_promo_form(promo_form(form_token=""), product_ids=[], plan_ids=[], today=TODAY)
    assert caught.value.message == "This form has expired: reload the page and try again."


def test_the_category_form() -> None:
    assert parse_category_form({"name": " Fonts ", "position": ""}) == CategoryForm(
        name="Fonts", slug="fonts", description="", position=0
    )
    assert problems({"name": "", "slug": "Bad Slug", "position": "x"}, parse_category_form) == {
        "name": "Give the category a name.",
        "slug": "Use lower-case letters, digits and dashes, e.g. “bad-slug”.",
        "position": "Enter a whole number from -1000 to 1000 (smaller comes first).",
    }


def test_the_product_form() -> None:
    good = parse_product_form({"name": "Maple Serif", "price": "39", "stock": "", "is_active": "on"}, [])
    assert (good.slug, good.price, good.stock, good.is_active, good.is_featured) == (
        "maple-serif",
        3900,
        None,
        True,
        False,
    )
    assert good.download_limit >= 1  # the shop's default when left empty
    assert problems({"name": "", "price": ""}, lambda data: parse_product_form(data, [])) == {
        "name": "Give the product a name.",
        "price": "Enter a price, such as 12.50.",
    }
    assert problems(
        {"name": "X", "price": "-1", "stock": "many", "download_limit": "0", "category_id": "nope"},
        lambda data: parse_product_form(data, []),
    ) == {
        "price": "A price can't be negative.",
        "category_id": "Choose one of the listed categories.",
        "stock": "Enter a whole number of copies, or leave it blank for unlimited.",
        "download_limit": f"Enter how many downloads a buyer gets, from 1 to {MAX_DOWNLOAD_LIMIT}.",
    }


def test_an_id_is_one_of_those_offered_and_empty_is_none_unless_required() -> None:
    offered = [uuid4(), uuid4()]
    read = FormReader({"pick": str(offered[1]), "forged": str(uuid4()), "blank": ""})
    assert read.one_of("pick", offered, "Choose one.") == offered[1]
    assert read.one_of("blank", offered, "Choose one.") is None
    assert read.one_of("forged", offered, "Choose one of the listed.") is None
    assert read.one_of("missing", offered, "A choice is needed.", required=True) is None
    assert read.errors == {"forged": "Choose one of the listed.", "missing": "A choice is needed."}
