"""The promo discount arithmetic: one rounding for the whole discount, largest-remainder allocation per line."""

from __future__ import annotations

import random

import pytest

from app.domain.promotions.allocation import allocate, discount_for, percent_of


def test_percentages_round_half_up_once() -> None:
    assert percent_of(5000, 1500) == 750
    assert percent_of(999, 1250) == 125  # 124.875
    assert percent_of(10, 500) == 1  # 0.5 rounds up
    assert discount_for(5000, percent_off_bps=10_000, amount_off=None) == 5000
    assert discount_for(300, percent_off_bps=None, amount_off=500) == 300  # never more than the subtotal
    assert discount_for(0, percent_off_bps=None, amount_off=500) == 0


def test_the_worked_example() -> None:
    # docs/promo-codes.md: 750 over 1999 and 3001 -> 299.85 and 450.15 -> the spare cent to the .85
    assert allocate(750, [1999, 3001]) == [300, 450]


def test_skipped_lines_get_nothing_and_ties_go_to_the_earlier_line() -> None:
    assert allocate(100, [1000, 0, 1000]) == [50, 0, 50]
    assert allocate(1, [500, 500]) == [1, 0]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]


def test_allocation_always_adds_up_and_never_exceeds_a_line() -> None:
    rng = random.Random(6)
    for _ in range(2000):
        weights = [rng.choice([0, rng.randint(1, 50_000)]) for _ in range(rng.randint(1, 8))]
        discount = rng.randint(0, sum(weights))
        shares = allocate(discount, weights)
        assert sum(shares) == (discount if sum(weights) else 0)
        assert all(0 <= s <= w for s, w in zip(shares, weights, strict=True))


def test_a_discount_larger_than_its_lines_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        allocate(101, [100])
