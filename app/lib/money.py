"""Money is integer minor units plus an ISO 4217 code; formatting happens only at the edge (templates)."""

from __future__ import annotations

from decimal import Decimal

# Currencies without minor units (Stripe's list of zero-decimal currencies, the ones we may meet).
ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"})
SYMBOLS = {"CAD": "$", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def format_money(amount: int, currency: str = "CAD") -> str:
    code = currency.upper()
    exponent = 0 if code in ZERO_DECIMAL else 2
    value = Decimal(amount).scaleb(-exponent)
    sign = "-" if value < 0 else ""
    number = f"{abs(value):,.{exponent}f}"
    symbol = SYMBOLS.get(code, "")
    return f"{sign}{symbol}{number} {code}" if symbol else f"{sign}{number} {code}"


def parse_money(text: str, currency: str = "CAD") -> int:
    """Parse a human amount ("12.50") into minor units; raises ValueError on nonsense."""
    exponent = 0 if currency.upper() in ZERO_DECIMAL else 2
    try:
        minor = Decimal(text.strip().replace(",", "").lstrip("$")).scaleb(exponent)
    except ArithmeticError as exc:  # not a number, or beyond Decimal's range ("1e999999")
        raise ValueError("not an amount") from exc
    # "Infinity" and "NaN" parse as Decimals; int() of the first would raise OverflowError in the caller's form.
    if not minor.is_finite():
        raise ValueError("not an amount")
    if minor != minor.to_integral_value():
        raise ValueError("too many decimal places")
    return int(minor)


def plain_amount(amount: int, currency: str = "CAD") -> str:
    """Minor units as a plain decimal amount ("12.50", "-0.05"), for exports and machine-readable output.

    Integer arithmetic, not Decimal: a 100k-order CSV export calls this half a million times."""
    if currency.upper() in ZERO_DECIMAL:
        return str(amount)
    sign = "-" if amount < 0 else ""
    units, cents = divmod(abs(amount), 100)
    return f"{sign}{units}.{cents:02d}"
