"""The promo discount arithmetic: one rounding for the whole discount, largest-remainder allocation per line."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def test_the_spare_unit_goes_to_the_largest_remainder_not_the_first_line() -> None:
    # Exact shares 0.25 and 0.75: the cent goes to the second line.
    assert allocate(1, [1, 3]) == [0, 1]
    assert allocate(2, [3, 1, 3]) == [1, 0, 1]  # 0.857, 0.286, 0.857


def test_nothing_to_allocate_gives_zeros_of_the_same_length() -> None:
    assert allocate(0, [100, 200]) == [0, 0]
    assert allocate(-5, [100]) == [0]
    assert allocate(10, []) == []
    assert allocate(10, [0, 0]) == [0, 0]


def test_a_discount_equal_to_the_lines_takes_each_line_whole() -> None:
    assert allocate(4_000, [1_999, 1, 2_000]) == [1_999, 1, 2_000]


def test_amount_off_and_percent_edges() -> None:
    assert discount_for(-100, percent_off_bps=5000, amount_off=None) == 0
    assert discount_for(1, percent_off_bps=5000, amount_off=None) == 1  # 0.5 rounds up, still within the line
    assert discount_for(1, percent_off_bps=4999, amount_off=None) == 0
    assert discount_for(5000, percent_off_bps=None, amount_off=None) == 0
    assert percent_of(199, 1) == 0  # 0.0199


weights = st.lists(st.integers(min_value=0, max_value=1_000_000), min_size=1, max_size=10)


@given(weights, st.data())
def test_allocation_adds_up_is_within_one_of_the_exact_share_and_never_exceeds_a_line(
    lines: list[int], data: st.DataObject
) -> None:
    total = sum(lines)
    discount = data.draw(st.integers(min_value=0, max_value=total))
    shares = allocate(discount, lines)
    assert shares == allocate(discount, list(lines))  # deterministic
    assert len(shares) == len(lines)
    assert sum(shares) == (discount if total else 0)
    for share, line in zip(shares, lines, strict=True):
        assert 0 <= share <= line
        if total:
            # Largest remainder: each share is its exact share rounded down or up, never further off.
            assert discount * line // total <= share <= -(-discount * line // total)


@given(st.integers(min_value=0, max_value=10**8), st.integers(min_value=0, max_value=10_000))
def test_percent_of_is_half_up_in_integer_arithmetic(amount: int, bps: int) -> None:
    assert percent_of(amount, bps) == (2 * amount * bps + 10_000) // 20_000
