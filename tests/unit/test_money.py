"""Money: what a customer reads (format_money), what an admin types (parse_money), what an export writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.lib.money import format_money, parse_money, plain_amount


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1, "CAD", "$0.01 CAD"),
        (-1, "CAD", "-$0.01 CAD"),
        (99_999, "usd", "$999.99 USD"),  # the code is shown upper case
        (100_000, "EUR", "€1,000.00 EUR"),
        (-123_456, "GBP", "-£1,234.56 GBP"),
        (-1000, "JPY", "-¥1,000 JPY"),
        (5, "KRW", "5 KRW"),  # zero-decimal, no symbol of ours
    ],
)
def test_format_money_signs_separators_and_decimals(amount: int, currency: str, expected: str) -> None:
    assert format_money(amount, currency) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [(0, "CAD", "0.00"), (5, "CAD", "0.05"), (-5, "CAD", "-0.05"), (123_456, "CAD", "1234.56"), (-7, "JPY", "-7")],
)
def test_plain_amount_for_exports(amount: int, currency: str, expected: str) -> None:
    assert plain_amount(amount, currency) == expected


@pytest.mark.parametrize("text", ["", "abc", "12,50.5.0", "5$", "Infinity", "-inf", "NaN", "sNaN", "1e999999"])
def test_parse_money_refuses_what_is_not_an_amount_with_a_value_error(text: str) -> None:
    # A ValueError is what every form catches to show "Enter an amount such as 12.50"; anything else is a 500.
    with pytest.raises(ValueError, match="not an amount"):
        parse_money(text)


def test_parse_money_refuses_fractions_of_the_smallest_unit() -> None:
    with pytest.raises(ValueError, match="decimal places"):
        parse_money("0.5", "JPY")
    with pytest.raises(ValueError, match="decimal places"):
        parse_money("0.001")
    assert parse_money(" 12.50 ") == 1250
    assert parse_money("1e3") == 100_000  # what Decimal accepts, an admin may type


@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(["CAD", "USD", "JPY"]))
def test_what_we_print_parses_back_to_the_same_amount(amount: int, currency: str) -> None:
    assert parse_money(plain_amount(amount, currency), currency) == amount
    if amount >= 0:
        # The customer-facing text too, minus its currency code (the symbol and separators are accepted).
        shown = format_money(amount, currency).removesuffix(f" {currency}")
        assert parse_money(shown.lstrip("¥"), currency) == amount
