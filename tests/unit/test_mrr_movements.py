"""MRR movements: how a customer's paid invoices become new / expansion / contraction / churn / reactivation.

Pure: ``subscription_points`` and ``customer_moves`` read in-memory model objects, never the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from app.db import models as m
from app.domain.analytics.movements import Point, customer_moves, monthly, subscription_points

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SUB_A = UUID(int=1)
SUB_B = UUID(int=2)


def at(days: int) -> datetime:
    return T0 + timedelta(days=days)


def kinds(points: list[Point]) -> list[tuple[str, int, int]]:
    return [(move.kind, move.mrr_delta, move.mrr_after) for move in customer_moves(points)]


def test_first_paid_mrr_is_new_then_up_is_expansion_and_down_is_contraction() -> None:
    points = [
        Point(at(0), SUB_A, 2000, "CAD"),
        Point(at(30), SUB_A, 5000, "CAD"),
        Point(at(60), SUB_A, 3000, "CAD"),
    ]
    assert kinds(points) == [("new", 2000, 2000), ("expansion", 3000, 5000), ("contraction", -2000, 3000)]


def test_down_to_zero_is_churn_and_back_above_zero_is_reactivation_not_new() -> None:
    points = [
        Point(at(0), SUB_A, 2000, "CAD"),
        Point(at(30), SUB_A, 0, "CAD"),
        Point(at(90), SUB_B, 1500, "CAD"),
    ]
    assert kinds(points) == [("new", 2000, 2000), ("churn", -2000, 0), ("reactivation", 1500, 1500)]


def test_a_trial_at_zero_is_not_a_churn_and_the_first_paid_cycle_is_new() -> None:
    points = [Point(at(0), SUB_A, 0, "CAD"), Point(at(14), SUB_A, 2000, "CAD")]
    assert kinds(points) == [("new", 2000, 2000)]


def test_an_unchanged_level_is_no_movement() -> None:
    points = [Point(at(day), SUB_A, 2000, "CAD") for day in (0, 30, 60)]
    assert kinds(points) == [("new", 2000, 2000)]


def test_a_switch_at_the_same_instant_is_netted_into_one_move_caused_by_the_bigger_subscription() -> None:
    points = [
        Point(at(0), SUB_A, 2000, "CAD"),
        # One subscription ends and a dearer one starts at the same instant: one expansion of 1000, not churn + new.
        Point(at(30), SUB_A, 0, "CAD"),
        Point(at(30), SUB_B, 3000, "CAD"),
    ]
    moves = customer_moves(points)
    assert [(mv.kind, mv.mrr_delta, mv.mrr_after) for mv in moves] == [("new", 2000, 2000), ("expansion", 1000, 3000)]
    assert moves[1].subscription_id == SUB_B
    assert [mv.seq for mv in moves] == [0, 1]


def test_two_subscriptions_add_up() -> None:
    points = [Point(at(0), SUB_A, 2000, "CAD"), Point(at(5), SUB_B, 1000, "CAD"), Point(at(40), SUB_A, 0, "CAD")]
    assert kinds(points) == [("new", 2000, 2000), ("expansion", 1000, 3000), ("contraction", -2000, 1000)]


def test_points_are_taken_in_time_order_whatever_order_they_come_in() -> None:
    points = [Point(at(60), SUB_A, 0, "CAD"), Point(at(0), SUB_A, 2000, "CAD")]
    moves = customer_moves(points)
    assert [(mv.kind, mv.occurred_at) for mv in moves] == [("new", at(0)), ("churn", at(60))]


levels = st.lists(st.tuples(st.integers(0, 400), st.sampled_from([SUB_A, SUB_B]), st.integers(0, 50_000)), max_size=25)


@given(levels)
def test_movements_always_add_up_and_each_kind_matches_its_before_and_after(raw: list[tuple[int, UUID, int]]) -> None:
    moves = customer_moves([Point(at(day), sub, mrr, "CAD") for day, sub, mrr in raw])
    before, churned = 0, False
    for move in moves:
        after = before + move.mrr_delta
        assert after == move.mrr_after >= 0
        assert move.mrr_delta != 0
        if before == 0:
            assert move.kind == ("reactivation" if churned else "new")
        elif after == 0:
            assert move.kind == "churn"
            churned = True
        else:
            assert move.kind == ("expansion" if after > before else "contraction")
        before = after
    # The last level equals the sum of each subscription's latest point.
    latest: dict[UUID, int] = {}
    for _, sub, mrr in sorted(raw, key=lambda r: (r[0], str(r[1]))):
        latest[sub] = mrr
    assert before == sum(latest.values())


# --- one subscription's MRR from its invoices ----------------------------------------------------------------------


def subscription(amount: int, interval: str = "month", *, status: str = "active", quantity: int = 1) -> m.Subscription:
    price = m.PlanPrice(id=uuid4(), interval=interval, amount=amount, currency="CAD")
    return m.Subscription(id=SUB_A, user_id=uuid4(), status=status, quantity=quantity, price=price, updated_at=at(365))


def invoice(day: int, amount: int, reason: str = "subscription_cycle", *, status: str = "paid") -> m.Invoice:
    return m.Invoice(
        stripe_invoice_id=f"in_{day:04d}_{reason}",
        status=status,
        billing_reason=reason,
        amount_paid=amount,
        currency="cad",
        stripe_created=at(day),
        created_at=at(day),
    )


def levels_of(sub: m.Subscription, invoices: list[m.Invoice]) -> list[tuple[datetime, int]]:
    return [(p.at, p.mrr) for p in subscription_points(sub, invoices)]


def test_yearly_invoices_count_a_twelfth_per_month() -> None:
    sub = subscription(19900, "year")
    assert levels_of(sub, [invoice(0, 19900, "subscription_create")]) == [(at(0), 1658)]
    assert monthly(19900, "year") == 1658
    assert subscription_points(sub, [invoice(0, 19900, "subscription_create")])[0].currency == "CAD"


def test_the_sales_tax_on_an_invoice_is_not_mrr() -> None:
    """A Quebec member pays $56.34 a month ($49 + GST + QST): MRR is the $49, monthly or yearly."""
    taxed = invoice(0, 5634, "subscription_create")
    taxed.tax = 734
    assert levels_of(subscription(4900), [taxed]) == [(at(0), 4900)]
    yearly = invoice(0, 56338, "subscription_create")
    yearly.tax = 7338
    assert levels_of(subscription(49000, "year"), [yearly]) == [(at(0), 4083)]


def test_a_trial_counts_zero_until_its_first_paid_cycle() -> None:
    sub = subscription(2000)
    invoices = [invoice(0, 0, "subscription_create"), invoice(14, 2000)]
    assert levels_of(sub, invoices) == [(at(0), 0), (at(14), 2000)]


def test_unpaid_and_manual_invoices_do_not_move_mrr() -> None:
    sub = subscription(2000)
    invoices = [invoice(0, 2000, "subscription_create"), invoice(30, 2000, status="open"), invoice(40, 999, "manual")]
    assert levels_of(sub, invoices) == [(at(0), 2000)]


def test_a_switch_moves_to_the_next_cycle_level_or_else_to_the_current_price() -> None:
    sub = subscription(3000, quantity=2)
    with_next_cycle = [
        invoice(0, 2000, "subscription_create"),
        invoice(10, 700, "subscription_update"),
        invoice(30, 5000),
    ]
    assert levels_of(sub, with_next_cycle) == [(at(0), 2000), (at(10), 5000), (at(30), 5000)]
    # No cycle after the switch yet: the subscription's current price x quantity.
    assert levels_of(sub, with_next_cycle[:2]) == [(at(0), 2000), (at(10), 6000)]


def test_an_ended_subscription_drops_to_zero_when_it_ended() -> None:
    sub = subscription(2000, status="canceled")
    sub.canceled_at, sub.ended_at = at(40), at(45)
    assert levels_of(sub, [invoice(0, 2000, "subscription_create")]) == [(at(0), 2000), (at(45), 0)]
    sub.ended_at = None  # then the cancellation time, then its last update
    assert levels_of(sub, [invoice(0, 2000, "subscription_create")])[-1] == (at(40), 0)
    sub.canceled_at = None
    assert levels_of(sub, [invoice(0, 2000, "subscription_create")])[-1] == (at(365), 0)


def test_past_due_still_counts_and_an_end_before_the_last_invoice_is_moved_after_it() -> None:
    past_due = subscription(2000, status="past_due")
    assert levels_of(past_due, [invoice(0, 2000, "subscription_create")]) == [(at(0), 2000)]
    unpaid = subscription(2000, status="unpaid")
    unpaid.ended_at = at(5)
    assert levels_of(unpaid, [invoice(0, 2000, "subscription_create"), invoice(30, 2000)])[-1] == (at(30), 0)


def test_a_subscription_that_never_paid_has_no_points_even_when_ended() -> None:
    sub = subscription(2000, status="incomplete_expired")
    sub.ended_at = at(1)
    assert levels_of(sub, [invoice(0, 2000, "subscription_create", status="open")]) == []
