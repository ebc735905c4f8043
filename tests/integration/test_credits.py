"""The credit ledger: allocation per paid invoice, expiry at period end, spends that never overdraw, refunds,
adjustments, and the ledger sum as the balance (a property)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.db import models as m
from app.domain.credits.services import CreditService, NotEnoughCreditsError, credit_label
from app.lib.exceptions import FormError
from app.lib.runtime import Runtime
from tests.conftest import Factory


async def credit_type(runtime: Runtime, code: str = "room-hours", name: str = "Meeting-room hours") -> m.CreditType:
    async with runtime.db() as db:
        found = await db.scalar(select(m.CreditType).where(m.CreditType.code == code))
        if found is not None:
            return found
        created = m.CreditType(code=code, name=name, unit="hours")
        db.add(created)
        await db.commit()
        return created


async def plan_with_credits(
    runtime: Runtime, credits: dict[UUID, int], *, roll_over: bool = False, name: str = "Resident"
) -> m.Plan:
    async with runtime.db() as db:
        plan = m.Plan(
            name=name,
            slug=f"plan-{uuid4().hex[:10]}",
            credits_roll_over=roll_over,
            credits=[m.PlanCredit(credit_type_id=type_id, amount=amount) for type_id, amount in credits.items()],
        )
        db.add(plan)
        await db.commit()
        loaded = await db.scalar(select(m.Plan).where(m.Plan.id == plan.id))
        assert loaded is not None
        return loaded


async def grant(runtime: Runtime, user_id: UUID, type_id: UUID, amount: int) -> None:
    """A never-expiring grant (an admin adjustment) so a test starts with a known balance."""
    async with runtime.db() as db:
        await CreditService(db).adjust(
            user_id=user_id, credit_type_id=type_id, amount=amount, reason="test grant", admin_id=user_id
        )
        await db.commit()


async def balance_of(runtime: Runtime, user_id: UUID, type_id: UUID) -> int:
    async with runtime.db() as db:
        return await CreditService(db).balance(user_id, type_id)


async def ledger(runtime: Runtime, user_id: UUID, type_id: UUID) -> list[m.CreditEntry]:
    async with runtime.db() as db:
        return list(
            await db.scalars(
                select(m.CreditEntry)
                .where(m.CreditEntry.user_id == user_id, m.CreditEntry.credit_type_id == type_id)
                .order_by(m.CreditEntry.created_at, m.CreditEntry.id)
            )
        )


# --- allocation ------------------------------------------------------------------------------------------------


async def test_allocation_is_idempotent_per_invoice(runtime: Runtime, factory: Factory) -> None:
    user = await factory.user()
    rooms = await credit_type(runtime)
    passes = await credit_type(runtime, "day-passes", "Day passes")
    plan = await plan_with_credits(runtime, {rooms.id: 10, passes.id: 4})
    period_end = datetime.now(UTC) + timedelta(days=30)

    async with runtime.db() as db:
        service = CreditService(db)
        first = await service.allocate_for_invoice(user_id=user.id, plan=plan, invoice_id="in_1", period_end=period_end)
        again = await service.allocate_for_invoice(user_id=user.id, plan=plan, invoice_id="in_1", period_end=period_end)
        await db.commit()
        assert sorted(e.amount for e in first) == [4, 10]
        assert {e.id for e in first} == {e.id for e in again}
        assert all(e.kind == "allocation" and e.reference == "in_1" and e.expires_at == period_end for e in first)
        assert await db.scalar(select(func.count()).select_from(m.CreditEntry)) == 2
        assert await service.balance(user.id, rooms.id) == 10
        balances = {t.code: b for t, b in await service.balances(user.id)}
        assert balances == {"room-hours": 10, "day-passes": 4}

    # The same invoice from a second, concurrent webhook delivery: still one row per type.
    async def deliver() -> None:
        async with runtime.db() as db:
            await CreditService(db).allocate_for_invoice(
                user_id=user.id, plan=plan, invoice_id="in_2", period_end=period_end
            )
            await db.commit()

    await asyncio.gather(*(deliver() for _ in range(4)))
    assert await balance_of(runtime, user.id, rooms.id) == 20
    assert len(await ledger(runtime, user.id, rooms.id)) == 2


async def test_unspent_credits_expire_at_period_end(runtime: Runtime, factory: Factory) -> None:
    user = await factory.user()
    rooms = await credit_type(runtime)
    plan = await plan_with_credits(runtime, {rooms.id: 10})
    start = datetime.now(UTC) - timedelta(days=40)
    first_end = start + timedelta(days=30)  # already past

    async with runtime.db() as db:
        service = CreditService(db)
        await service.allocate_for_invoice(
            user_id=user.id, plan=plan, invoice_id="in_1", period_end=first_end, now=start
        )
        await service.spend(user_id=user.id, credit_type_id=rooms.id, amount=3, reference="b1", reason="booking")
        await db.commit()

    # The spend above ran after first_end, so it already lapsed the 7 unspent credits: nothing spendable is left.
    assert await balance_of(runtime, user.id, rooms.id) == 0
    async with runtime.db() as db:
        service = CreditService(db)
        allocated = await service.allocate_for_invoice(
            user_id=user.id, plan=plan, invoice_id="in_2", period_end=datetime.now(UTC) + timedelta(days=20)
        )
        await db.commit()
        assert [e.amount for e in allocated] == [10]
    rows = await ledger(runtime, user.id, rooms.id)
    assert sorted((e.kind, e.amount, e.reference) for e in rows) == [
        ("allocation", 10, "in_1"),
        ("allocation", 10, "in_2"),
        ("expiry", -7, "in_1"),
        ("usage", -3, "b1"),
    ]
    assert await balance_of(runtime, user.id, rooms.id) == 10


async def test_expiry_on_the_next_cycle_keeps_other_grants_and_never_goes_negative(
    runtime: Runtime, factory: Factory
) -> None:
    user = await factory.user()
    rooms = await credit_type(runtime)
    plan = await plan_with_credits(runtime, {rooms.id: 10})
    now = datetime.now(UTC)
    async with runtime.db() as db:
        service = CreditService(db)
        await service.allocate_for_invoice(
            user_id=user.id, plan=plan, invoice_id="in_1", period_end=now + timedelta(days=1)
        )
        await service.adjust(user_id=user.id, credit_type_id=rooms.id, amount=5, reason="goodwill", admin_id=user.id)
        await service.spend(user_id=user.id, credit_type_id=rooms.id, amount=12, reference="b1", reason="booking")
        await db.commit()
        assert await service.balance(user.id, rooms.id) == 3
        # Next cycle, two days later: the first allocation lapses. Spending drew on it first, so all of it was used
        # and the 3 left are the admin's goodwill credits, which do not expire.
        later = now + timedelta(days=2)
        await service.allocate_for_invoice(
            user_id=user.id, plan=plan, invoice_id="in_2", period_end=later + timedelta(days=30), now=later
        )
        assert await service.expire_lapsed(user.id, rooms.id, now=later) == 0  # nothing more to lapse, run twice
        await db.commit()
        assert await service.balance(user.id, rooms.id) == 13
    kinds = [e.kind for e in await ledger(runtime, user.id, rooms.id)]
    assert "expiry" not in kinds


async def test_credits_roll_over_when_the_plan_says_so(runtime: Runtime, factory: Factory) -> None:
    user = await factory.user()
    rooms = await credit_type(runtime)
    plan = await plan_with_credits(runtime, {rooms.id: 10}, roll_over=True)
    now = datetime.now(UTC)
    async with runtime.db() as db:
        service = CreditService(db)
        [entry] = await service.allocate_for_invoice(
            user_id=user.id, plan=plan, invoice_id="in_1", period_end=now - timedelta(days=1)
        )
        assert entry.expires_at is None
        await service.spend(user_id=user.id, credit_type_id=rooms.id, amount=4, reference="b1", reason="booking")
        await service.allocate_for_invoice(
            user_id=user.id, plan=plan, invoice_id="in_2", period_end=now + timedelta(days=30)
        )
        await db.commit()
        assert await service.balance(user.id, rooms.id) == 16


# --- spending, refunds, adjustments -------------------------------------------------------------------------------


async def test_spend_refuses_to_overdraw_with_a_clear_message(runtime: Runtime, factory: Factory) -> None:
    user = await factory.user()
    rooms = await credit_type(runtime)
    await grant(runtime, user.id, rooms.id, 1)
    async with runtime.db() as db:
        service = CreditService(db)
        with pytest.raises(NotEnoughCreditsError) as refused:
            await service.spend(user_id=user.id, credit_type_id=rooms.id, amount=2, reference="b1", reason="booking")
        await db.rollback()
        assert refused.value.status_code == 409
        assert refused.value.message == "Not enough credits: you have 1 meeting-room hour."
        entry = await service.spend(user_id=user.id, credit_type_id=rooms.id, amount=1, reference="b2", reason="x")
        again = await service.spend(user_id=user.id, credit_type_id=rooms.id, amount=1, reference="b2", reason="x")
        await db.commit()
        assert entry.id == again.id and entry.amount == -1  # idempotent per reference
        assert await service.balance(user.id, rooms.id) == 0
    assert [e.kind for e in await ledger(runtime, user.id, rooms.id)] == ["adjustment", "usage"]
    assert credit_label(3, rooms) == "3 meeting-room hours"
    assert credit_label(1, m.CreditType(code="x", name="Day passes", unit="passes")) == "1 day pass"


async def test_concurrent_spends_never_overdraw(runtime: Runtime, factory: Factory) -> None:
    user = await factory.user()
    rooms = await credit_type(runtime)
    await grant(runtime, user.id, rooms.id, 3)

    async def spend(n: int) -> bool:
        async with runtime.db() as db:
            try:
                await CreditService(db).spend(
                    user_id=user.id, credit_type_id=rooms.id, amount=1, reference=f"b{n}", reason="booking"
                )
                await db.commit()
            except NotEnoughCreditsError:
                await db.rollback()
                return False
            return True

    results = await asyncio.gather(*(spend(n) for n in range(10)))
    assert results.count(True) == 3
    assert await balance_of(runtime, user.id, rooms.id) == 0
    assert sum(e.amount for e in await ledger(runtime, user.id, rooms.id)) == 0


async def test_refund_is_idempotent_per_reference(runtime: Runtime, factory: Factory) -> None:
    user = await factory.user()
    rooms = await credit_type(runtime)
    await grant(runtime, user.id, rooms.id, 2)
    async with runtime.db() as db:
        service = CreditService(db)
        await service.spend(user_id=user.id, credit_type_id=rooms.id, amount=2, reference="b1", reason="booking")
        first = await service.refund(user_id=user.id, credit_type_id=rooms.id, amount=2, reference="b1", reason="r")
        second = await service.refund(user_id=user.id, credit_type_id=rooms.id, amount=2, reference="b1", reason="r")
        await db.commit()
        assert first.id == second.id and first.kind == "refund" and first.amount == 2
        assert await service.balance(user.id, rooms.id) == 2


async def test_adjust_requires_a_reason_and_never_overdraws(runtime: Runtime, factory: Factory) -> None:
    user = await factory.user()
    admin = await factory.user(role="admin")
    rooms = await credit_type(runtime)
    async with runtime.db() as db:
        service = CreditService(db)
        with pytest.raises(FormError) as missing:
            await service.adjust(user_id=user.id, credit_type_id=rooms.id, amount=5, reason="  ", admin_id=admin.id)
        assert "reason" in missing.value.errors
        entry = await service.adjust(
            user_id=user.id, credit_type_id=rooms.id, amount=5, reason="Room was double-booked", admin_id=admin.id
        )
        assert (entry.kind, entry.amount, entry.created_by_id) == ("adjustment", 5, admin.id)
        assert UUID(entry.reference)  # a fresh uuid
        await db.commit()
        with pytest.raises(NotEnoughCreditsError):
            await service.adjust(user_id=user.id, credit_type_id=rooms.id, amount=-6, reason="oops", admin_id=admin.id)
        await db.rollback()
        await service.adjust(user_id=user.id, credit_type_id=rooms.id, amount=-5, reason="take back", admin_id=admin.id)
        await db.commit()
        assert await service.balance(user.id, rooms.id) == 0


# --- the ledger is the balance: a property ------------------------------------------------------------------------

Operation = tuple[str, int]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("allocate"), st.integers(1, 5)),
        st.tuples(st.just("allocate-lapsed"), st.integers(1, 5)),
        st.tuples(st.just("spend"), st.integers(1, 6)),
        st.tuples(st.just("refund"), st.integers(0, 5)),  # refunds the n-th earlier spend (again, sometimes)
        st.tuples(st.just("adjust"), st.integers(-4, 4).filter(bool)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_ledger_sum_is_the_balance_and_never_negative(
    runtime: Runtime, factory: Factory, ops: list[Operation]
) -> None:
    user = await factory.user(email=f"prop-{uuid4().hex[:12]}@example.com")  # a fresh user per example
    rooms = await credit_type(runtime)
    plan = await plan_with_credits(runtime, {rooms.id: 3})
    now = datetime.now(UTC)
    spends: list[tuple[str, int]] = []
    for step, (op, n) in enumerate(ops):
        before = await ledger(runtime, user.id, rooms.id)
        refused: NotEnoughCreditsError | None = None
        async with runtime.db() as db:
            service = CreditService(db)
            try:
                if op == "allocate":
                    await service.allocate_for_invoice(
                        user_id=user.id, plan=plan, invoice_id=f"in_{step}", period_end=now + timedelta(days=n)
                    )
                elif op == "allocate-lapsed":  # a cycle that has already ended: lapses on the next write
                    await service.allocate_for_invoice(
                        user_id=user.id, plan=plan, invoice_id=f"in_{step}", period_end=now - timedelta(days=n)
                    )
                elif op == "spend":
                    await service.spend(
                        user_id=user.id, credit_type_id=rooms.id, amount=n, reference=f"b{step}", reason="booking"
                    )
                    spends.append((f"b{step}", n))
                elif op == "refund" and spends:
                    reference, amount = spends[n % len(spends)]
                    await service.refund(
                        user_id=user.id, credit_type_id=rooms.id, amount=amount, reference=reference, reason="cancel"
                    )
                elif op == "adjust":
                    await service.adjust(
                        user_id=user.id, credit_type_id=rooms.id, amount=n, reason="admin", admin_id=user.id
                    )
                await db.commit()
            except NotEnoughCreditsError as exc:
                await db.rollback()
                refused = exc
        if refused is not None:  # only debits are refused, only for want of credits, and they leave no trace
            assert op in {"spend", "adjust"}
            assert refused.balance < abs(n)
            assert [e.id for e in await ledger(runtime, user.id, rooms.id)] == [e.id for e in before]
        rows = await ledger(runtime, user.id, rooms.id)
        balance = await balance_of(runtime, user.id, rooms.id)
        assert sum(e.amount for e in rows) == balance
        assert balance >= 0
        per_kind_reference = [(e.kind, e.reference) for e in rows]
        assert len(per_kind_reference) == len(set(per_kind_reference))
        allocations = {e.reference: e.amount for e in rows if e.kind == "allocation"}
        for expiry in (e for e in rows if e.kind == "expiry"):
            assert 0 < -expiry.amount <= allocations[expiry.reference]
