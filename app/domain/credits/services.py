"""The credit ledger. A balance is the SUM of a user's rows for one credit type, nothing else.

Every row has a signed amount, a kind, a reason and a reference; the unique (user, type, kind, reference) makes each
write idempotent: one allocation per invoice, one usage and one refund per booking, one expiry per allocation.

Expiry ("unspent" credits): spending draws on the soonest-lapsing credits first. So when allocations lapse (their
``expires_at`` has passed and they have no EXPIRY row yet), what is left of them is the balance minus what the user
holds from still-valid grants (allocations not lapsed or never lapsing, positive adjustments), capped at the lapsed
amount and never below zero:  ``expire = clamp(balance - still_valid, 0, lapsed)``. It is split over the lapsed
allocations oldest first, one EXPIRY row each (reference: the allocation's invoice id; no row when nothing is left).
An expiry therefore can never take the balance below zero. An allocation with nothing left is looked at again on
the next run (a credit refunded from it later still lapses).

Concurrency: every debit (spend, negative adjustment, expiry) runs under a per-(user, type) lock. On PostgreSQL
that is ``pg_advisory_xact_lock``, held until the caller's transaction ends. SQLite serialises writers, so the
debit is written first (which takes the database's write lock), the balance is checked inside that same write
transaction, and the row is deleted again if it overdrew.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID, uuid4

from sqlalchemy import CursorResult, case, delete, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.lib.exceptions import ConflictError, FormError

Kind = m.CreditEntryKind


def credit_label(amount: int, credit_type: m.CreditType) -> str:
    """``"1 meeting-room hour"``, ``"3 meeting-room hours"``, ``"1 day pass"``: the type's name, in lower case."""
    name = credit_type.name.lower()
    if abs(amount) == 1:
        if name.endswith("sses"):
            name = name[:-2]
        elif name.endswith("s"):
            name = name[:-1]
    return f"{amount} {name}"


class NotEnoughCreditsError(ConflictError):
    """A debit would take the balance below zero."""

    def __init__(self, balance: int, credit_type: m.CreditType) -> None:
        super().__init__(f"Not enough credits: you have {credit_label(balance, credit_type)}.")
        self.balance = balance
        self.credit_type = credit_type


class CreditService:
    """Reads and writes the ledger. Never commits: the caller owns the transaction (a webhook job, a booking)."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    @property
    def _is_postgres(self) -> bool:
        return self.db.get_bind().dialect.name == "postgresql"

    # --- reading --------------------------------------------------------------------------------------------------

    async def balance(self, user_id: UUID, credit_type_id: UUID) -> int:
        """The sum of the user's ledger rows of this type."""
        total = await self.db.scalar(
            select(func.coalesce(func.sum(m.CreditEntry.amount), 0)).where(
                m.CreditEntry.user_id == user_id, m.CreditEntry.credit_type_id == credit_type_id
            )
        )
        return int(total or 0)

    async def balances(self, user_id: UUID) -> list[tuple[m.CreditType, int]]:
        """Every credit type the user has ledger rows for, with its balance, by name."""
        rows = await self.db.execute(
            select(m.CreditType, func.sum(m.CreditEntry.amount))
            .join(m.CreditEntry, m.CreditEntry.credit_type_id == m.CreditType.id)
            .where(m.CreditEntry.user_id == user_id)
            .group_by(m.CreditType.id)
            .order_by(m.CreditType.name)
        )
        return [(credit_type, int(total or 0)) for credit_type, total in rows.all()]

    async def left_this_period(self, user_id: UUID, plan: m.Plan | None) -> list[tuple[m.CreditType, int, int | None]]:
        """``(type, balance, per cycle)`` for "Your plan": the plan's credit types first (``per cycle`` from the plan,
        shown even at 0), then any other type the user holds credits of (``per cycle`` None: granted by staff, or
        left from an earlier plan)."""
        balances = {credit_type.id: (credit_type, balance) for credit_type, balance in await self.balances(user_id)}
        rows: list[tuple[m.CreditType, int, int | None]] = []
        for plan_credit in plan.credits if plan else []:
            _, balance = balances.pop(plan_credit.credit_type_id, (plan_credit.credit_type, 0))
            rows.append((plan_credit.credit_type, balance, plan_credit.amount))
        rows += [(credit_type, balance, None) for credit_type, balance in balances.values() if balance]
        return rows

    async def entries(self, user_id: UUID, *, limit: int = 50) -> list[m.CreditEntry]:
        """The user's newest ledger rows first."""
        return list(
            await self.db.scalars(
                select(m.CreditEntry)
                .where(m.CreditEntry.user_id == user_id)
                .order_by(m.CreditEntry.created_at.desc(), m.CreditEntry.id.desc())
                .limit(limit)
            )
        )

    # --- writing --------------------------------------------------------------------------------------------------

    async def allocate_for_invoice(
        self,
        *,
        user_id: UUID,
        plan: m.Plan,
        invoice_id: str,
        period_end: datetime | None,
        now: datetime | None = None,
    ) -> list[m.CreditEntry]:
        """Grant ``plan``'s credits for one paid invoice: one ALLOCATION row per plan credit, reference the invoice.

        Idempotent: a second call for the same invoice (a replayed or concurrent webhook) inserts nothing and returns
        the same rows. The credits expire at ``period_end`` unless the plan rolls credits over. Allocations of
        earlier cycles that have lapsed by ``now`` are expired first (see the module docstring). Never commits.
        """
        when = now or datetime.now(UTC)
        expires_at = None if plan.credits_roll_over else period_end
        allocated: list[m.CreditEntry] = []
        for plan_credit in plan.credits:
            type_id = plan_credit.credit_type_id
            await self._lock(user_id, type_id)
            # The allocation counts as "still valid" in the expiry formula, so inserting it first changes nothing
            # there, and on SQLite it takes the write lock before the balance is read.
            await self._insert_once(
                user_id=user_id,
                credit_type_id=type_id,
                amount=plan_credit.amount,
                kind=Kind.ALLOCATION,
                reference=invoice_id,
                reason=f"{plan.name} plan: credits for this billing period",
                expires_at=expires_at,
            )
            await self._expire_lapsed(user_id, type_id, when)
            entry = await self._entry(user_id, type_id, Kind.ALLOCATION, invoice_id)
            if entry is not None:
                allocated.append(entry)
        return allocated

    async def expire_lapsed(self, user_id: UUID, credit_type_id: UUID, *, now: datetime | None = None) -> int:
        """Write EXPIRY rows for lapsed allocations' unspent credits; returns how many credits lapsed. Never commits.

        Runs on every allocation and every debit; a periodic job may call it for cancelled members too.
        """
        await self._lock(user_id, credit_type_id)
        return await self._expire_lapsed(user_id, credit_type_id, now or datetime.now(UTC))

    async def spend(
        self, *, user_id: UUID, credit_type_id: UUID, amount: int, reference: str, reason: str
    ) -> m.CreditEntry:
        """Debit ``amount`` credits (a USAGE row) without ever overdrawing, even under concurrency. Never commits.

        Idempotent per ``reference``: spending again for the same booking returns the first row. Raises
        :class:`NotEnoughCreditsError` (409) when the balance is too small.
        """
        if amount <= 0:
            raise ValueError("amount must be positive")
        return await self._debit(
            user_id=user_id,
            credit_type_id=credit_type_id,
            amount=amount,
            kind=Kind.USAGE,
            reference=reference,
            reason=reason,
        )

    async def refund(
        self, *, user_id: UUID, credit_type_id: UUID, amount: int, reference: str, reason: str
    ) -> m.CreditEntry:
        """Give ``amount`` credits back (a REFUND row), once per ``reference``. Never commits."""
        if amount <= 0:
            raise ValueError("amount must be positive")
        await self._insert_once(
            user_id=user_id,
            credit_type_id=credit_type_id,
            amount=amount,
            kind=Kind.REFUND,
            reference=reference,
            reason=reason,
        )
        entry = await self._entry(user_id, credit_type_id, Kind.REFUND, reference)
        assert entry is not None
        return entry

    async def adjust(
        self,
        *,
        user_id: UUID,
        credit_type_id: UUID,
        amount: int,
        reason: str,
        admin_id: UUID,
        reference: str | None = None,
    ) -> m.CreditEntry:
        """An admin's correction (+ grants, - takes back; never below zero). A reason is required. Never commits.

        ``reference`` (default: a new uuid) makes the adjustment idempotent: the same reference again (a form
        submitted twice) returns the first row instead of adjusting twice.
        """
        reason = " ".join(reason.split())
        errors: dict[str, str] = {}
        if not reason:
            errors["reason"] = "Say why: the customer sees this reason in their credit history."
        if amount == 0:
            errors["amount"] = "Enter a number of credits other than zero."
        if errors:
            raise FormError(errors)
        fields: dict[str, Any] = {
            "user_id": user_id,
            "credit_type_id": credit_type_id,
            "kind": Kind.ADJUSTMENT,
            "reference": reference or str(uuid4()),
            "reason": reason,
            "created_by_id": admin_id,
        }
        if amount < 0:
            return await self._debit(amount=-amount, **fields)
        await self._insert_once(amount=amount, **fields)
        entry = await self._entry(user_id, credit_type_id, Kind.ADJUSTMENT, fields["reference"])
        assert entry is not None
        return entry

    # --- internals ------------------------------------------------------------------------------------------------

    async def _lock(self, user_id: UUID, credit_type_id: UUID) -> None:
        """Serialise debits of one user's credits of one type until the transaction ends (PostgreSQL only)."""
        if self._is_postgres:
            await self.db.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"cartwright:credits:{user_id}:{credit_type_id}"},
            )

    async def _insert_once(
        self,
        *,
        user_id: UUID,
        credit_type_id: UUID,
        amount: int,
        kind: m.CreditEntryKind,
        reference: str,
        reason: str,
        expires_at: datetime | None = None,
        created_by_id: UUID | None = None,
    ) -> bool:
        """INSERT … ON CONFLICT DO NOTHING on the ledger's unique key; whether a row was inserted."""
        insert = postgres_insert if self._is_postgres else sqlite_insert
        statement = (
            insert(m.CreditEntry)
            .values(
                user_id=user_id,
                credit_type_id=credit_type_id,
                amount=amount,
                kind=kind.value,
                reference=reference,
                reason=reason,
                expires_at=expires_at,
                created_by_id=created_by_id,
            )
            .on_conflict_do_nothing(index_elements=["user_id", "credit_type_id", "kind", "reference"])
        )
        result = await self.db.execute(statement)
        return cast("CursorResult[Any]", result).rowcount == 1

    async def _entry(
        self, user_id: UUID, credit_type_id: UUID, kind: m.CreditEntryKind, reference: str
    ) -> m.CreditEntry | None:
        entry: m.CreditEntry | None = await self.db.scalar(
            select(m.CreditEntry)
            .where(
                m.CreditEntry.user_id == user_id,
                m.CreditEntry.credit_type_id == credit_type_id,
                m.CreditEntry.kind == kind.value,
                m.CreditEntry.reference == reference,
            )
            .execution_options(populate_existing=True)
        )
        return entry

    async def _debit(
        self,
        *,
        user_id: UUID,
        credit_type_id: UUID,
        amount: int,
        kind: m.CreditEntryKind,
        reference: str,
        reason: str,
        created_by_id: UUID | None = None,
    ) -> m.CreditEntry:
        await self._lock(user_id, credit_type_id)
        inserted = await self._insert_once(
            user_id=user_id,
            credit_type_id=credit_type_id,
            amount=-amount,
            kind=kind,
            reference=reference,
            reason=reason,
            created_by_id=created_by_id,
        )
        entry = await self._entry(user_id, credit_type_id, kind, reference)
        assert entry is not None
        if not inserted:
            return entry  # the same debit again: already applied
        # Credits that lapsed are not spendable: expire them first (inside the lock, before the check).
        await self._expire_lapsed(user_id, credit_type_id, datetime.now(UTC))
        balance = await self.balance(user_id, credit_type_id)
        if balance < 0:
            await self.db.execute(delete(m.CreditEntry).where(m.CreditEntry.id == entry.id))
            self.db.expunge(entry)
            credit_type = await self.db.get_one(m.CreditType, credit_type_id)
            raise NotEnoughCreditsError(balance + amount, credit_type)
        return entry

    async def _expire_lapsed(self, user_id: UUID, credit_type_id: UUID, now: datetime) -> int:
        expired_refs = select(m.CreditEntry.reference).where(
            m.CreditEntry.user_id == user_id,
            m.CreditEntry.credit_type_id == credit_type_id,
            m.CreditEntry.kind == Kind.EXPIRY.value,
        )
        lapsed = list(
            await self.db.scalars(
                select(m.CreditEntry)
                .where(
                    m.CreditEntry.user_id == user_id,
                    m.CreditEntry.credit_type_id == credit_type_id,
                    m.CreditEntry.kind == Kind.ALLOCATION.value,
                    m.CreditEntry.expires_at.is_not(None),
                    m.CreditEntry.expires_at <= now,
                    m.CreditEntry.reference.not_in(expired_refs),
                )
                .order_by(m.CreditEntry.expires_at, m.CreditEntry.id)
            )
        )
        if not lapsed:
            return 0
        lapsed_ids = [entry.id for entry in lapsed]
        still_valid_grant = or_(
            (m.CreditEntry.kind == Kind.ALLOCATION.value)
            & (m.CreditEntry.id.not_in(lapsed_ids))
            & (m.CreditEntry.reference.not_in(expired_refs))
            & (m.CreditEntry.expires_at.is_(None) | (m.CreditEntry.expires_at > now)),
            (m.CreditEntry.kind == Kind.ADJUSTMENT.value) & (m.CreditEntry.amount > 0),
        )
        balance, still_valid = (
            await self.db.execute(
                select(
                    func.coalesce(func.sum(m.CreditEntry.amount), 0),
                    func.coalesce(func.sum(case((still_valid_grant, m.CreditEntry.amount), else_=0)), 0),
                ).where(m.CreditEntry.user_id == user_id, m.CreditEntry.credit_type_id == credit_type_id)
            )
        ).one()
        remaining = max(0, min(int(balance) - int(still_valid), sum(entry.amount for entry in lapsed)))
        total = remaining
        for allocation in lapsed:
            if remaining <= 0:
                break
            take = min(remaining, allocation.amount)
            await self._insert_once(
                user_id=user_id,
                credit_type_id=credit_type_id,
                amount=-take,
                kind=Kind.EXPIRY,
                reference=allocation.reference,
                reason="Unused credits expired at the end of the billing period",
            )
            remaining -= take
        return total
