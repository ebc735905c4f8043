"""Canadian sales tax: every province, the effective-date change in Nova Scotia, and rounding per line."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.tax.services import PROVINCES, TaxRate, compute_tax, rates_for, tax_on

TODAY = date(2026, 11, 29)

# (province, expected components with their amounts on a $100.00 line)
EXPECTED = {
    "AB": [("GST", 500)],
    "BC": [("GST", 500), ("PST", 700)],
    "MB": [("GST", 500), ("RST", 700)],
    "NB": [("HST", 1500)],
    "NL": [("HST", 1500)],
    "NS": [("HST", 1400)],
    "NT": [("GST", 500)],
    "NU": [("GST", 500)],
    "ON": [("HST", 1300)],
    "PE": [("HST", 1500)],
    "QC": [("GST", 500), ("QST", 998)],
    "SK": [("GST", 500), ("PST", 600)],
    "YT": [("GST", 500)],
}


@pytest.mark.parametrize("province", sorted(PROVINCES))
def test_every_province_charges_its_taxes(province: str) -> None:
    result = compute_tax([10_000], country="CA", region=province, on=TODAY)
    assert [(c.code, c.amount) for c in result.components] == EXPECTED[province]
    assert result.total == sum(amount for _, amount in EXPECTED[province])


def test_every_province_is_covered_by_the_expectations() -> None:
    assert set(EXPECTED) == set(PROVINCES)


def test_nova_scotia_hst_dropped_to_14_percent_on_2025_04_01() -> None:
    assert [r.rate for r in rates_for("CA", "NS", date(2025, 3, 31))] == [Decimal("0.15")]
    assert [r.rate for r in rates_for("CA", "NS", date(2025, 4, 1))] == [Decimal("0.14")]


def test_manitoba_rst_was_8_percent_before_july_2019() -> None:
    assert [r.rate for r in rates_for("CA", "MB", date(2019, 6, 30)) if r.code == "RST"] == [Decimal("0.08")]


def test_no_tax_outside_canada() -> None:
    result = compute_tax([10_000, 2_500], country="US", region="NY", on=TODAY)
    assert result.components == []
    assert result.line_taxes == [0, 0]
    assert result.total == 0


def test_labels_show_the_rate() -> None:
    labels = [c.label for c in compute_tax([100], country="CA", region="QC", on=TODAY).components]
    assert labels == ["GST 5%", "QST 9.975%"]


@pytest.mark.parametrize(
    ("amount", "rate", "expected"),
    [
        (10, "0.05", 1),  # 0.5 rounds half up
        (9, "0.05", 0),  # 0.45 rounds down
        (30, "0.05", 2),  # 1.5 rounds half up
        (1, "0.13", 0),
        (4, "0.13", 1),  # 0.52
        (200, "0.09975", 20),  # 19.95 → 20
        (1_999, "0.09975", 199),  # 199.40 → 199
        (0, "0.15", 0),
    ],
)
def test_rounding_is_half_up_to_the_cent(amount: int, rate: str, expected: int) -> None:
    assert tax_on(amount, Decimal(rate)) == expected


def test_tax_is_rounded_per_line_and_components_sum_the_lines() -> None:
    # Two $0.10 lines in Ontario: 1.3¢ each rounds to 1¢ per line (2¢), where taxing the $0.20 total gives 3¢.
    result = compute_tax([10, 10], country="CA", region="ON", on=TODAY)
    assert result.line_taxes == [1, 1]
    assert result.total == 2
    assert [c.amount for c in result.components] == [2]


def test_quebec_components_and_line_totals_agree() -> None:
    subtotals = [1_999, 4_550, 12_345]
    result = compute_tax(subtotals, country="CA", region="QC", on=TODAY)
    assert sum(c.amount for c in result.components) == result.total == sum(result.line_taxes)


def test_quebec_rounds_each_component_on_its_own() -> None:
    # A $0.10 line: GST 0.5¢ → 1¢ and QST 0.9975¢ → 1¢, so 2¢; one combined 14.975 % rate would give 1.4975¢ → 1¢.
    result = compute_tax([10], country="CA", region="QC", on=TODAY)
    assert [(c.code, c.amount) for c in result.components] == [("GST", 1), ("QST", 1)]
    assert result.line_taxes == [2]


@pytest.mark.parametrize(
    ("province", "day", "expected"),
    [
        ("MB", date(2019, 7, 1), [("GST", "0.05"), ("RST", "0.07")]),  # the first day of the 7 % RST
        ("NS", date(2025, 3, 31), [("HST", "0.15")]),  # the last day of 15 %
        ("PE", date(2016, 10, 1), [("HST", "0.15")]),
        ("SK", date(2017, 3, 23), [("GST", "0.05"), ("PST", "0.06")]),
    ],
)
def test_rates_change_on_their_effective_date(province: str, day: date, expected: list[tuple[str, str]]) -> None:
    assert [(r.code, r.rate) for r in rates_for("CA", province, day)] == [(c, Decimal(r)) for c, r in expected]


def test_hst_replaces_gst_and_federal_tax_comes_first() -> None:
    assert [r.code for r in rates_for("CA", "ON", TODAY)] == ["HST"]
    assert [r.code for r in rates_for("CA", "BC", TODAY)] == ["GST", "PST"]


def test_labels_print_whole_percentages_without_exponents() -> None:
    assert TaxRate("HST", "CA", "ON", Decimal("0.10"), TODAY).label == "HST 10%"  # not "HST 1E+1%"
    assert [c.label for c in compute_tax([100], country="CA", region="NS", on=TODAY).components] == ["HST 14%"]


def test_no_lines_no_tax() -> None:
    result = compute_tax([], country="CA", region="QC", on=TODAY)
    assert result.line_taxes == [] and result.total == 0
    assert [c.amount for c in result.components] == [0, 0]


@given(
    st.sampled_from(sorted(PROVINCES)),
    st.lists(st.integers(min_value=0, max_value=10_000_000), max_size=6),
)
def test_each_line_is_within_half_a_cent_per_component_of_the_exact_tax(province: str, subtotals: list[int]) -> None:
    result = compute_tax(subtotals, country="CA", region=province, on=TODAY)
    rates = rates_for("CA", province, TODAY)
    exact_rate = sum(r.rate for r in rates)
    for subtotal, tax in zip(subtotals, result.line_taxes, strict=True):
        assert abs(Decimal(tax) - subtotal * exact_rate) <= Decimal("0.5") * len(rates)
        assert tax == sum(tax_on(subtotal, r.rate) for r in rates)
    assert sum(c.amount for c in result.components) == result.total


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["0.05", "0.13", "0.14", "0.15", "0.09975"]))
def test_tax_on_is_exact_half_up_in_integer_arithmetic(amount: int, rate: str) -> None:
    # Half-up to the cent, written independently with integers: floor(amount x rate + 1/2).
    numerator, denominator = Decimal(rate).as_integer_ratio()
    assert tax_on(amount, Decimal(rate)) == (2 * amount * numerator + denominator) // (2 * denominator)
