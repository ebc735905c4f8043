"""Promo codes without a database: the create form's rules, how a code is described, and pricing it on cart lines."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from app.db import models as m
from app.domain.promotions.admin import parse_promo_form
from app.domain.promotions.services import (
    PromoError,
    describe,
    describe_duration,
    normalize_code,
    quote_lines,
    status_of,
)
from app.lib.exceptions import FormError

TODAY = date(2026, 11, 29)
VALID = {"code": "spring-25", "kind": "percent", "percent_off": "12.5", "duration": "once", "form_token": "tok"}


def parse(**changes: str) -> Any:
    return parse_promo_form({**VALID, **changes}, product_ids=[], plan_ids=[], today=TODAY)


def errors_of(**changes: str) -> dict[str, str]:
    with pytest.raises(FormError) as caught:
        parse(**changes)
    return caught.value.errors


def test_a_valid_percentage_code() -> None:
    form = parse(code=" spring - 25 ", max_redemptions="100", first_order_only="on")
    assert (form.code, form.percent_off_bps, form.amount_off, form.currency) == ("SPRING-25", 1250, None, "CAD")
    assert (form.duration, form.duration_in_months, form.max_redemptions, form.first_order_only) == (
        "once",
        None,
        100,
        True,
    )
    assert form.expires_at is None and form.minimum_amount is None


def test_a_valid_amount_code_for_some_months_with_expiry_and_minimum() -> None:
    product = uuid4()
    form = parse_promo_form(
        {
            **VALID,
            "kind": "amount",
            "amount_off": "$5",
            "duration": "repeating",
            "duration_in_months": "3",
            "expires_on": TODAY.isoformat(),
            "minimum_amount": "50.00",
        },
        product_ids=[str(product), "not-a-uuid"],
        plan_ids=[],
        today=TODAY,
    )
    assert (form.amount_off, form.percent_off_bps, form.duration_in_months, form.minimum_amount) == (500, None, 3, 5000)
    # A code expiring today works through the end of today (UTC).
    assert form.expires_at == datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)
    assert form.product_ids == [product]
    assert form.first_order_only is False


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"code": "ab"}, "code", "Use 3 to 40 letters A-Z, digits and hyphens, like SPRING-25."),
        ({"code": "SPRING_25"}, "code", "Use 3 to 40 letters A-Z, digits and hyphens, like SPRING-25."),
        ({"code": "A" * 41}, "code", "Use 3 to 40 letters A-Z, digits and hyphens, like SPRING-25."),
        ({"currency": "usd"}, "currency", "Codes are in Canadian dollars (CAD)."),
        ({"kind": "free"}, "kind", "Choose a percentage or a fixed amount."),
        ({"percent_off": "lots"}, "percent_off", "Enter a percentage from 1 to 100, like 15 or 12.5."),
        ({"percent_off": "0.99"}, "percent_off", "Enter a percentage from 1 to 100, like 15 or 12.5."),
        ({"percent_off": "100.01"}, "percent_off", "Enter a percentage from 1 to 100, like 15 or 12.5."),
        ({"percent_off": "12.345"}, "percent_off", "Use at most two decimals, like 12.5."),
        ({"kind": "amount", "amount_off": "five"}, "amount_off", "Enter an amount such as 5.00."),
        ({"kind": "amount", "amount_off": "0"}, "amount_off", "Enter an amount greater than zero."),
        ({"kind": "amount", "amount_off": "1.001"}, "amount_off", "Enter an amount such as 5.00."),
        ({"duration": "weekly"}, "duration", "Choose once, forever or a number of months."),
        ({"duration": "repeating"}, "duration_in_months", "Enter a number of months from 1 to 36."),
        (
            {"duration": "repeating", "duration_in_months": "37"},
            "duration_in_months",
            "Enter a number of months from 1 to 36.",
        ),
        (
            {"duration": "repeating", "duration_in_months": "0"},
            "duration_in_months",
            "Enter a number of months from 1 to 36.",
        ),
        ({"max_redemptions": "0"}, "max_redemptions", "Leave empty for no limit, or enter 1 or more."),
        ({"max_redemptions": "-3"}, "max_redemptions", "Leave empty for no limit, or enter 1 or more."),
        ({"expires_on": "29/11/2026"}, "expires_on", "Enter a date like 2027-01-31."),
        ({"expires_on": "2026-11-28"}, "expires_on", "Choose today or a later date."),
        ({"minimum_amount": "lots"}, "minimum_amount", "Enter an amount such as 50.00, or leave it empty."),
        ({"minimum_amount": "0"}, "minimum_amount", "Enter an amount greater than zero, or leave it empty."),
    ],
)
def test_each_field_error(changes: dict[str, str], field: str, message: str) -> None:
    assert errors_of(**changes) == {field: message}


def test_boundaries_that_are_allowed() -> None:
    assert parse(percent_off="1").percent_off_bps == 100
    assert parse(percent_off="100%").percent_off_bps == 10_000
    assert parse(duration="repeating", duration_in_months="36").duration_in_months == 36
    assert parse(code="A" * 40).code == "A" * 40


def test_every_problem_is_reported_at_once() -> None:
    assert set(errors_of(code="x", percent_off="0", max_redemptions="none")) == {
        "code",
        "percent_off",
        "max_redemptions",
    }


@pytest.mark.parametrize("token", ["", "x" * 65])
def test_a_missing_or_forged_form_token_says_the_form_expired(token: str) -> None:
    with pytest.raises(FormError, match="This form has expired"):
        parse(form_token=token)


# --- describing a code and pricing it on cart lines -----------------------------------------------------------------


def promo(**fields: Any) -> m.PromoCode:
    values: dict[str, Any] = {
        "code": "SAVE",
        "percent_off_bps": None,
        "amount_off": None,
        "currency": "CAD",
        "duration": "once",
        "duration_in_months": None,
        "max_redemptions": None,
        "times_redeemed": 0,
        "expires_at": None,
        "minimum_amount": None,
        "archived_at": None,
        "products": [],
        "plans": [],
    }
    return m.PromoCode(**{**values, **fields})


def test_codes_are_typed_loosely() -> None:
    assert normalize_code("  spring 25\t") == "SPRING25"
    assert normalize_code(None) == ""


def test_descriptions() -> None:
    assert describe(promo(percent_off_bps=2000)) == "20 % off"
    assert describe(promo(percent_off_bps=1250)) == "12.5 % off"
    assert describe(promo(percent_off_bps=1)) == "0.01 % off"
    assert describe(promo(amount_off=500)) == "$5.00 CAD off"
    assert describe_duration(promo(duration="forever")) == "for as long as you subscribe"
    assert describe_duration(promo(duration="repeating", duration_in_months=1)) == "for 1 month"
    assert describe_duration(promo(duration="repeating", duration_in_months=3)) == "for 3 months"
    assert describe_duration(promo(duration="once")) == "on your first payment"


def test_status() -> None:
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    assert status_of(promo(), now) == "active"
    assert status_of(promo(expires_at=now), now) == "expired"  # expiry is exclusive
    assert status_of(promo(expires_at=datetime(2026, 11, 29, 12, 0, 1, tzinfo=UTC)), now) == "active"
    assert status_of(promo(max_redemptions=5, times_redeemed=5), now) == "expired"
    assert status_of(promo(max_redemptions=5, times_redeemed=4), now) == "active"
    assert status_of(promo(archived_at=now, max_redemptions=1, times_redeemed=1), now) == "archived"


def product(name: str) -> m.Product:
    return m.Product(id=uuid4(), name=name)


def test_a_percentage_is_rounded_once_and_spread_over_the_lines() -> None:
    quote = quote_lines(promo(percent_off_bps=1500), [(None, 1999), (None, 3001)], currency="CAD")
    assert (quote.discount, quote.line_discounts, quote.summary, quote.code) == (750, [300, 450], "15 % off", "SAVE")


def test_a_code_restricted_to_products_discounts_only_those_lines() -> None:
    font = product("Maple Sans")
    other: UUID = uuid4()
    quote = quote_lines(promo(percent_off_bps=5000, products=[font]), [(other, 4000), (font.id, 1000)], currency="CAD")
    assert (quote.discount, quote.line_discounts) == (500, [0, 500])
    with pytest.raises(PromoError, match=r"doesn't apply to anything in your cart: it applies only to Maple Sans\."):
        quote_lines(promo(percent_off_bps=5000, products=[font]), [(other, 4000)], currency="CAD")


def test_an_amount_off_never_exceeds_what_it_applies_to() -> None:
    font = product("Maple Sans")
    quote = quote_lines(promo(amount_off=2500, products=[font]), [(font.id, 1000), (None, 5000)], currency="CAD")
    assert (quote.discount, quote.line_discounts) == (1000, [1000, 0])


def test_a_minimum_order_is_checked_before_tax_and_says_both_amounts() -> None:
    code = promo(percent_off_bps=1000, minimum_amount=5000)
    assert quote_lines(code, [(None, 5000)], currency="CAD").discount == 500  # exactly the minimum is enough
    with pytest.raises(PromoError) as caught:
        quote_lines(code, [(None, 4999)], currency="CAD")
    assert caught.value.message == (
        "The code SAVE needs an order of at least $50.00 CAD before tax; your order is $49.99 CAD."
    )


def test_an_amount_code_in_another_currency_is_refused() -> None:
    with pytest.raises(PromoError, match=r"The code SAVE is for orders in USD\."):
        quote_lines(promo(amount_off=500, currency="USD"), [(None, 5000)], currency="CAD")
    # A percentage has no currency.
    assert quote_lines(promo(percent_off_bps=1000, currency="USD"), [(None, 5000)], currency="cad").discount == 500


def test_an_order_must_still_reach_the_smallest_card_charge() -> None:
    assert quote_lines(promo(amount_off=950), [(None, 1000)], currency="CAD").discount == 950  # 50 cents left
    with pytest.raises(PromoError, match=r"would bring your order below \$0.50 CAD"):
        quote_lines(promo(amount_off=951), [(None, 1000)], currency="CAD")
