"""Canadian sales tax: one table of rates with effective dates, and the rounding rule.

Digital products are taxed where the buyer is (the billing province). In HST provinces the single HST replaces
GST; elsewhere GST applies and, in BC, MB, SK and QC, a provincial tax on top (neither compounds since 2013).

Rounding: tax is computed per order line and per tax component, ``line subtotal * rate`` rounded half-up to
the minor unit; the order's tax is the sum of those. That is what a receipt shows line by line, and what
Stripe's own tax rounding does per line item.

Outside Canada no tax is collected: add rows to ``RATES`` to collect elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True, slots=True)
class TaxRate:
    code: str  # GST, HST, PST, QST, RST
    country: str
    region: str  # "" = the whole country
    rate: Decimal
    effective_from: date
    effective_to: date | None = None  # exclusive

    def applies(self, country: str, region: str, on: date) -> bool:
        return (
            self.country == country
            and self.region in {"", region}
            and self.effective_from <= on
            and (self.effective_to is None or on < self.effective_to)
        )

    @property
    def label(self) -> str:
        percent = (self.rate * 100).normalize()
        return f"{self.code} {percent:f}%"


HST_PROVINCES = frozenset({"ON", "NS", "NB", "NL", "PE"})

_GST_FROM = date(2008, 1, 1)
RATES: tuple[TaxRate, ...] = (
    # GST everywhere except where HST replaces it (handled in rates_for).
    TaxRate("GST", "CA", "", Decimal("0.05"), _GST_FROM),
    TaxRate("HST", "CA", "ON", Decimal("0.13"), date(2010, 7, 1)),
    TaxRate("HST", "CA", "NS", Decimal("0.15"), date(2010, 7, 1), date(2025, 4, 1)),
    TaxRate("HST", "CA", "NS", Decimal("0.14"), date(2025, 4, 1)),
    TaxRate("HST", "CA", "NB", Decimal("0.15"), date(2016, 7, 1)),
    TaxRate("HST", "CA", "NL", Decimal("0.15"), date(2016, 7, 1)),
    TaxRate("HST", "CA", "PE", Decimal("0.15"), date(2016, 10, 1)),
    TaxRate("PST", "CA", "BC", Decimal("0.07"), date(2013, 4, 1)),
    TaxRate("RST", "CA", "MB", Decimal("0.08"), date(2013, 7, 1), date(2019, 7, 1)),
    TaxRate("RST", "CA", "MB", Decimal("0.07"), date(2019, 7, 1)),
    TaxRate("PST", "CA", "SK", Decimal("0.06"), date(2017, 3, 23)),
    TaxRate("QST", "CA", "QC", Decimal("0.09975"), date(2013, 1, 1)),
)

PROVINCES: dict[str, str] = {
    "AB": "Alberta",
    "BC": "British Columbia",
    "MB": "Manitoba",
    "NB": "New Brunswick",
    "NL": "Newfoundland and Labrador",
    "NS": "Nova Scotia",
    "NT": "Northwest Territories",
    "NU": "Nunavut",
    "ON": "Ontario",
    "PE": "Prince Edward Island",
    "QC": "Quebec",
    "SK": "Saskatchewan",
    "YT": "Yukon",
}


def rates_for(country: str, region: str, on: date) -> list[TaxRate]:
    """The rates that apply to a sale billed to ``country``/``region`` on ``on``, federal first."""
    applicable = [r for r in RATES if r.applies(country, region, on)]
    if any(r.code == "HST" for r in applicable):
        applicable = [r for r in applicable if r.code != "GST"]
    return sorted(applicable, key=lambda r: (r.region != "", r.code))


def tax_on(amount: int, rate: Decimal) -> int:
    """Tax on ``amount`` minor units, rounded half-up to the minor unit."""
    return int((Decimal(amount) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class TaxComponent:
    code: str
    label: str
    rate: Decimal
    amount: int

    def as_dict(self) -> dict[str, str | int]:
        return {"code": self.code, "label": self.label, "rate": str(self.rate), "amount": self.amount}


@dataclass(frozen=True, slots=True)
class TaxResult:
    line_taxes: list[int]  # one per input line, in order
    components: list[TaxComponent]  # per tax, summed over lines (what the receipt shows)

    @property
    def total(self) -> int:
        return sum(self.line_taxes)


def compute_tax(line_subtotals: Sequence[int], *, country: str, region: str, on: date) -> TaxResult:
    rates = rates_for(country, region, on)
    line_taxes = [sum(tax_on(subtotal, r.rate) for r in rates) for subtotal in line_subtotals]
    components = [
        TaxComponent(r.code, r.label, r.rate, sum(tax_on(subtotal, r.rate) for subtotal in line_subtotals))
        for r in rates
    ]
    return TaxResult(line_taxes=line_taxes, components=components)
