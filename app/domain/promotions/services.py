"""Whether a promo code applies, what it takes off, and counting its redemptions.

A code is never trusted from the client: the cart stores only the code the shopper typed, and every time the cart,
the checkout summary or a new order is priced, :func:`quote_cart` checks the code against the database again.
What Stripe enforces and what we enforce is written down in ``docs/promo-codes.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.domain.promotions.allocation import allocate, discount_for, percent_of
from app.lib.exceptions import ApplicationError
from app.lib.money import format_money

SESSION_PROMO_KEY = "promo_code"


class QuotedLine(Protocol):
    """A cart line as a code is priced against it (the cart's ``CartLine``; promotions do not import the cart)."""

    @property
    def product(self) -> m.Product: ...

    @property
    def subtotal(self) -> int: ...


class QuotedCart(Protocol):
    """A priced cart as a code sees it (the cart's ``PricedCart``)."""

    @property
    def currency(self) -> str: ...

    @property
    def purchasable(self) -> Sequence[QuotedLine]: ...


# Stripe's smallest card charge (50 cents in CAD and USD): a discounted order must still reach it, or it could
# never be paid. Free orders would need fulfilment without a PaymentIntent; the shop has none of those.
MINIMUM_CHARGE = 50
# One answer for every code that does not exist or no longer works (unknown, deactivated, expired, used up), so
# guessing codes tells nothing about which ones were ever real. Only a live code may say why it does not fit this
# cart (its minimum, its products, its currency): the person who was given it needs that to use it, and the
# promo_apply rate limits keep guessing a live code impractical. See docs/promo-codes.md.
CANT_APPLY = "This code can't be applied. Check it and try again."


class PromoError(ApplicationError):
    """A code that cannot be used here; ``message`` says why, in words a shopper understands."""

    status_code = 422


def normalize_code(raw: str | None) -> str:
    return "".join((raw or "").split()).upper()


def describe(promo: m.PromoCode) -> str:
    """ "20 % off" or "$5.00 CAD off"."""
    if promo.percent_off_bps is not None:
        percent = f"{promo.percent_off_bps / 100:.2f}".rstrip("0").rstrip(".")
        return f"{percent} % off"
    return f"{format_money(promo.amount_off or 0, promo.currency)} off"


def describe_duration(promo: m.PromoCode) -> str:
    """How long a subscription keeps the discount, for the pricing and subscribe pages."""
    if promo.duration == m.PromoDuration.FOREVER:
        return "for as long as you subscribe"
    if promo.duration == m.PromoDuration.REPEATING and promo.duration_in_months:
        months = promo.duration_in_months
        return "for 1 month" if months == 1 else f"for {months} months"
    return "on your first payment"


def status_of(promo: m.PromoCode, now: datetime | None = None) -> str:
    """active | expired (past its date or used up) | archived (deactivated by staff)."""
    now = now or datetime.now(UTC)
    if promo.archived_at is not None:
        return "archived"
    if (promo.expires_at is not None and promo.expires_at <= now) or promo.is_used_up:
        return "expired"
    return "active"


@dataclass(frozen=True, slots=True)
class PromoQuote:
    """A code that applies: the discount and each purchasable line's share of it (same order as the lines)."""

    promo: m.PromoCode
    discount: int
    line_discounts: list[int]

    @property
    def code(self) -> str:
        return self.promo.code

    @property
    def summary(self) -> str:
        return describe(self.promo)


@dataclass(frozen=True, slots=True)
class CartPromo:
    """The code stored in the cart, as it stands now: a quote, or the reason it does not apply."""

    code: str
    quote: PromoQuote | None = None
    error: str = ""

    @property
    def discount(self) -> int:
        return self.quote.discount if self.quote else 0

    def line_discounts(self, count: int) -> list[int]:
        return list(self.quote.line_discounts) if self.quote else [0] * count


@dataclass(frozen=True, slots=True)
class PlanQuote:
    promo: m.PromoCode
    price: m.PlanPrice
    first_discount: int

    @property
    def code(self) -> str:
        return self.promo.code

    @property
    def first_total(self) -> int:
        return self.price.amount - self.first_discount

    @property
    def summary(self) -> str:
        """ "20 % off for 3 months"."""
        return f"{describe(self.promo)} {describe_duration(self.promo)}"


async def find_code(db: AsyncSession, code: str) -> m.PromoCode | None:
    if not code:
        return None
    promo: m.PromoCode | None = await db.scalar(
        select(m.PromoCode).where(m.PromoCode.code == normalize_code(code)).execution_options(populate_existing=True)
    )
    return promo


async def has_ordered_before(db: AsyncSession, *, user: m.User | None, email: str | None) -> bool:
    """A paid order by this account or this email address, or (for an account) any subscription."""
    matches: list[Any] = []
    if user is not None:
        matches.append(m.Order.user_id == user.id)
        matches.append(func.lower(m.Order.email) == user.email.lower())
    if email:
        matches.append(func.lower(m.Order.email) == email.lower())
    if not matches:
        return False
    paid = await db.scalar(select(m.Order.id).where(m.Order.status.in_(m.PAID_ORDER_STATUSES), or_(*matches)).limit(1))
    if paid is not None:
        return True
    if user is not None:
        sub = await db.scalar(select(m.Subscription.id).where(m.Subscription.user_id == user.id).limit(1))
        return sub is not None
    return False


async def _usable(db: AsyncSession, code: str, *, user: m.User | None, email: str | None, now: datetime) -> m.PromoCode:
    """The code if it exists and is live for this customer; otherwise :class:`PromoError` with the reason."""
    promo = await find_code(db, normalize_code(code))
    if promo is None or status_of(promo, now) != "active":
        raise PromoError(CANT_APPLY)
    if promo.first_order_only and await has_ordered_before(db, user=user, email=email):
        # Said plainly only about the signed-in customer's own history: for an email typed at checkout it would
        # tell anyone that this address has bought here.
        own = user is not None and (not email or email.lower() == user.email.lower())
        raise PromoError(
            f"The code {promo.code} is for a first order only, and you have ordered before." if own else CANT_APPLY
        )
    return promo


def quote_lines(promo: m.PromoCode, lines: Sequence[tuple[UUID | None, int]], *, currency: str) -> PromoQuote:
    """Price ``promo`` against ``(product_id, subtotal)`` lines; raises :class:`PromoError` when it can't apply."""
    subtotal = sum(amount for _, amount in lines)
    if promo.minimum_amount is not None and subtotal < promo.minimum_amount:
        raise PromoError(
            f"The code {promo.code} needs an order of at least {format_money(promo.minimum_amount, promo.currency)} "
            f"before tax; your order is {format_money(subtotal, currency)}."
        )
    if promo.amount_off is not None and promo.currency.upper() != currency.upper():
        raise PromoError(f"The code {promo.code} is for orders in {promo.currency}.")
    if promo.is_restricted:
        allowed = {p.id for p in promo.products}
        weights = [amount if product_id in allowed else 0 for product_id, amount in lines]
        if not any(weights):
            names = ", ".join(p.name for p in promo.products)
            where = f"only to {names}" if names else "only to memberships"
            raise PromoError(f"The code {promo.code} doesn't apply to anything in your cart: it applies {where}.")
    else:
        weights = [amount for _, amount in lines]
    discount = discount_for(sum(weights), percent_off_bps=promo.percent_off_bps, amount_off=promo.amount_off)
    if subtotal - discount < MINIMUM_CHARGE:
        raise PromoError(
            f"The code {promo.code} would bring your order below {format_money(MINIMUM_CHARGE, currency)}, the "
            "smallest amount we can charge. Add something to your cart to use it."
        )
    return PromoQuote(promo=promo, discount=discount, line_discounts=allocate(discount, weights))


async def quote_cart(
    db: AsyncSession,
    code: str,
    cart: QuotedCart,
    *,
    user: m.User | None,
    email: str | None = None,
    now: datetime | None = None,
) -> PromoQuote:
    """Check ``code`` against the cart's purchasable lines as they are now. Raises :class:`PromoError`."""
    promo = await _usable(db, code, user=user, email=email, now=now or datetime.now(UTC))
    if not cart.purchasable:
        raise PromoError("Add something to your cart before applying a code.")
    return quote_lines(promo, [(line.product.id, line.subtotal) for line in cart.purchasable], currency=cart.currency)


async def cart_promo(
    db: AsyncSession, session: dict[str, Any], cart: QuotedCart, *, user: m.User | None, email: str | None = None
) -> CartPromo | None:
    """The code kept in the session, re-checked against the cart: None when no code is stored."""
    code = session.get(SESSION_PROMO_KEY)
    if not isinstance(code, str) or not code:
        return None
    try:
        return CartPromo(code=code, quote=await quote_cart(db, code, cart, user=user, email=email))
    except PromoError as exc:
        return CartPromo(code=code, error=exc.message)


async def quote_plan(db: AsyncSession, code: str, plan: m.Plan, price: m.PlanPrice, *, user: m.User) -> PlanQuote:
    """Check ``code`` for subscribing to ``plan`` at ``price`` (what Stripe will check too, said in our words)."""
    promo = await _usable(db, code, user=user, email=user.email, now=datetime.now(UTC))
    if promo.is_restricted and plan.id not in {p.id for p in promo.plans}:
        names = ", ".join(p.name for p in promo.plans)
        where = f"only to {names}" if names else "only to some one-time products"
        raise PromoError(f"The code {promo.code} doesn't apply to the {plan.name} plan: it applies {where}.")
    if promo.minimum_amount is not None and price.amount < promo.minimum_amount:
        raise PromoError(
            f"The code {promo.code} needs a purchase of at least {format_money(promo.minimum_amount, promo.currency)}."
        )
    if promo.amount_off is not None and promo.currency.upper() != price.currency.upper():
        raise PromoError(f"The code {promo.code} is for purchases in {promo.currency}.")
    if not promo.stripe_promotion_code_id:
        raise PromoError(f"The code {promo.code} can't be used for memberships right now.")
    if promo.percent_off_bps is not None:
        first = min(percent_of(price.amount, promo.percent_off_bps), price.amount)
    else:
        first = min(promo.amount_off or 0, price.amount)
    return PlanQuote(promo=promo, price=price, first_discount=first)


# --- redemptions ---------------------------------------------------------------------------------------------


async def _count_one(db: AsyncSession, promo_id: UUID) -> bool:
    """Add one redemption unless the code has run out: one conditional UPDATE, so racing payments can't overshoot.

    On PostgreSQL the second of two concurrent UPDATEs waits for the first to commit, then re-checks the WHERE
    against the new value; SQLite runs one writer at a time. Returns whether it was counted.
    """
    counted = await db.execute(
        update(m.PromoCode)
        .where(
            m.PromoCode.id == promo_id,
            or_(m.PromoCode.max_redemptions.is_(None), m.PromoCode.times_redeemed < m.PromoCode.max_redemptions),
        )
        .values(times_redeemed=m.PromoCode.times_redeemed + 1, updated_at=datetime.now(UTC))
    )
    return getattr(counted, "rowcount", 0) == 1


async def redeem_for_order(db: AsyncSession, order: m.Order) -> m.PromoRedemption | None:
    """Within the fulfilment transaction: count the order's code once. Does not commit.

    Fulfilment itself runs once per order; the unique ``order_id`` makes a second call a no-op anyway. If the code
    ran out between checkout and payment, the paid order keeps its discount (Stripe has taken that amount), the
    counter stays at its maximum, and the redemption is kept with ``counted=False`` and noted on the timeline.
    """
    if order.promo_code_id is None:
        return None
    existing = await db.scalar(select(m.PromoRedemption).where(m.PromoRedemption.order_id == order.id))
    if existing is not None:
        return None
    counted = await _count_one(db, order.promo_code_id)
    redemption = m.PromoRedemption(
        promo_code_id=order.promo_code_id,
        order_id=order.id,
        user_id=order.user_id,
        email=order.email,
        amount=order.discount_total,
        counted=counted,
    )
    db.add(redemption)
    if not counted:
        db.add(
            m.OrderEvent(
                order_id=order.id,
                kind="promo_over_limit",
                message=f"Code {order.promo_code} had reached its redemption limit when this payment arrived; "
                "the paid order keeps its discount.",
            )
        )
    return redemption


async def redeem_for_subscription(
    db: AsyncSession, promo: m.PromoCode, *, user: m.User, stripe_subscription_id: str
) -> None:
    """Count a subscription created with the code (Stripe counts it on its side too). Commits; idempotent.

    Two return pages (two tabs) may both get here: only the one whose redemption row is inserted counts the code.
    """
    inserted = await insert_if_absent(
        db,
        m.PromoRedemption,
        "stripe_subscription_id",
        {
            "promo_code_id": promo.id,
            "stripe_subscription_id": stripe_subscription_id,
            "user_id": user.id,
            "email": user.email,
            "counted": False,
        },
    )
    if inserted and await _count_one(db, promo.id):
        await db.execute(
            update(m.PromoRedemption)
            .where(m.PromoRedemption.stripe_subscription_id == stripe_subscription_id)
            .values(counted=True)
        )
    await db.commit()
