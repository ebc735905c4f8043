"""Limited stock held for pending orders: taken when the order is placed, given back or sold exactly once.

``products.stock`` is what anyone can still buy (held units are already taken off it), so the cart and product
pages show available stock without a join. Every move is a conditional ``UPDATE`` whose rowcount decides, so two
checkouts racing for the last unit, two sweeps, or a sweep and a late payment never count a unit twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.catalog.low_stock import rearm_low_stock

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Wanted:
    product_id: UUID
    name: str
    quantity: int


class StockUnavailableError(Exception):
    """A limited product has fewer units free than the order wants (another buyer holds or bought them)."""

    def __init__(self, name: str, available: int) -> None:
        super().__init__(name)
        self.name = name
        self.available = available


async def take(db: AsyncSession, product_id: UUID, quantity: int) -> bool | None:
    """Take ``quantity`` units of a limited product, never below zero. True: taken; False: not enough;
    None: the product is unlimited (or gone), nothing to count."""
    taken = await db.execute(
        update(m.Product)
        .where(m.Product.id == product_id, m.Product.stock.is_not(None), m.Product.stock >= quantity)
        .values(stock=m.Product.stock - quantity)
    )
    if getattr(taken, "rowcount", 0) == 1:
        return True
    stock = await db.scalar(select(m.Product.stock).where(m.Product.id == product_id))
    return None if stock is None else False


async def put_back(db: AsyncSession, product_id: UUID, quantity: int) -> None:
    await db.execute(
        update(m.Product)
        .where(m.Product.id == product_id, m.Product.stock.is_not(None))
        .values(stock=m.Product.stock + quantity)
    )
    await rearm_low_stock(db, [product_id])  # back above the threshold: its next crossing alerts again


async def hold_for_order(
    db: AsyncSession, order_id: UUID, wanted: Iterable[Wanted], *, hold_for: timedelta, now: datetime | None = None
) -> bool:
    """Within the caller's transaction: hold every limited line's units for the order. Raises
    :class:`StockUnavailableError` (the caller rolls back: nothing taken stays taken). True when anything was held."""
    expires = (now or datetime.now(UTC)) + hold_for
    held = False
    for line in wanted:
        outcome = await take(db, line.product_id, line.quantity)
        if outcome is False:
            available = await db.scalar(select(m.Product.stock).where(m.Product.id == line.product_id))
            raise StockUnavailableError(line.name, int(available or 0))
        if outcome:
            held = True
            db.add(
                m.StockHold(order_id=order_id, product_id=line.product_id, quantity=line.quantity, expires_at=expires)
            )
    return held


async def _end(db: AsyncSession, hold: m.StockHold, now: datetime, *, sold: bool) -> bool:
    """End one open hold, once (conditional update); a release puts its units back."""
    values = {"converted_at": now} if sold else {"released_at": now}
    ended = await db.execute(
        update(m.StockHold)
        .where(m.StockHold.id == hold.id, m.StockHold.released_at.is_(None), m.StockHold.converted_at.is_(None))
        .values(**values, updated_at=now)
    )
    if getattr(ended, "rowcount", 0) != 1:
        return False
    if not sold:
        await put_back(db, hold.product_id, hold.quantity)
    return True


async def _open_holds(db: AsyncSession, order_id: UUID) -> list[m.StockHold]:
    return list(
        await db.scalars(
            select(m.StockHold).where(
                m.StockHold.order_id == order_id,
                m.StockHold.released_at.is_(None),
                m.StockHold.converted_at.is_(None),
            )
        )
    )


async def convert_for_order(db: AsyncSession, order_id: UUID, *, now: datetime | None = None) -> set[UUID]:
    """Within the caller's transaction: the order is being fulfilled, its open holds become sales (no second
    decrement). Returns the products whose units were held; the caller takes the others' units now."""
    current = now or datetime.now(UTC)
    sold: set[UUID] = set()
    for hold in await _open_holds(db, order_id):
        if await _end(db, hold, current, sold=True):
            sold.add(hold.product_id)
    return sold


async def release_for_order(db: AsyncSession, order_id: UUID, *, now: datetime | None = None) -> int:
    """Within the caller's transaction: the order's payment failed or it was canceled; give its units back."""
    current = now or datetime.now(UTC)
    released = 0
    for hold in await _open_holds(db, order_id):
        released += int(await _end(db, hold, current, sold=False))
    return released


async def release_expired(db: AsyncSession, *, now: datetime | None = None, limit: int = 500) -> int:
    """Give back the units of holds past their expiry. Commits per hold (a late payment may be converting one)."""
    current = now or datetime.now(UTC)
    expired = list(
        await db.scalars(
            select(m.StockHold)
            .where(
                m.StockHold.released_at.is_(None),
                m.StockHold.converted_at.is_(None),
                m.StockHold.expires_at <= current,
            )
            .order_by(m.StockHold.expires_at)
            .limit(limit)
        )
    )
    released = 0
    for hold in expired:
        try:
            released += int(await _end(db, hold, current, sold=False))
            await db.commit()
        except Exception:
            await db.rollback()
            raise
    if released:
        log.info("stock.holds_released", count=released)
    return released


async def products_on_hold(db: AsyncSession, product_ids: Collection[UUID]) -> set[UUID]:
    """Which of these products have units held for a pending order right now (open, not expired)."""
    now = datetime.now(UTC)
    return set(
        await db.scalars(
            select(m.StockHold.product_id)
            .where(
                m.StockHold.product_id.in_(list(product_ids)),
                m.StockHold.released_at.is_(None),
                m.StockHold.converted_at.is_(None),
                m.StockHold.expires_at > now,
            )
            .distinct()
        )
    )
