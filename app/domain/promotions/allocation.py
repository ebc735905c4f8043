"""The discount arithmetic: how much a code takes off, and how that amount is spread over the order's lines.

All amounts are integer minor units. The discount is computed once for the whole applicable subtotal (so a
percentage is rounded once, half-up, not once per line), then allocated to the applicable lines in proportion
to their subtotals with the **largest-remainder method**: every line gets the floor of its exact share, and the
minor units left over go one each to the lines with the largest fractional remainders (ties: the earlier line).
The shares add up to the discount exactly, and no line is discounted below zero. Tax is then computed per line
on ``subtotal - discount`` (``app/domain/tax/services.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal


def percent_of(amount: int, percent_off_bps: int) -> int:
    """``amount`` times a percentage (in basis points: 1250 = 12.5 %), rounded half-up to the minor unit."""
    exact = Decimal(amount) * Decimal(percent_off_bps) / Decimal(10_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def discount_for(applicable_subtotal: int, *, percent_off_bps: int | None, amount_off: int | None) -> int:
    """What a code takes off ``applicable_subtotal``: never more than the subtotal itself."""
    if applicable_subtotal <= 0:
        return 0
    if percent_off_bps is not None:
        return min(percent_of(applicable_subtotal, percent_off_bps), applicable_subtotal)
    return min(amount_off or 0, applicable_subtotal)


def allocate(discount: int, weights: Sequence[int]) -> list[int]:
    """Split ``discount`` over lines weighted by ``weights`` (their subtotals; 0 for lines the code skips).

    Largest remainder: floors first, then the leftover units to the largest remainders, earliest line first
    on a tie. ``sum(result) == discount`` and ``result[i] <= weights[i]`` whenever ``discount <= sum(weights)``.
    """
    total = sum(weights)
    if discount <= 0 or total <= 0:
        return [0 for _ in weights]
    if discount > total:
        raise ValueError("a discount cannot exceed what it applies to")
    shares = [discount * w // total for w in weights]
    remainders = [discount * w % total for w in weights]
    left = discount - sum(shares)
    # Sorted by remainder, largest first; Python's sort is stable, so equal remainders keep line order.
    for index in sorted(range(len(weights)), key=lambda i: -remainders[i])[:left]:
        shares[index] += 1
    return shares
