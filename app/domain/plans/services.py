"""Plans and their prices: look-ups, the visitor's price (member tier for verified holders), price changes, the
pricing page's offers, and the files any live subscriber may download.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from uuid import UUID

import structlog
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.queries import live_subscription
from app.domain.downloads.services import DownloadFile, media_type_for
from app.domain.plans.tax_rates import membership_tax, valid_province
from app.domain.tax.services import TaxResult
from app.lib.exceptions import ApplicationError, FormError, NotFoundError
from app.lib.settings import Settings
from app.lib.storage import ObjectMissingError, Storage, StorageKeyError, StorageUnavailableError

log = structlog.get_logger()

# Stripe's statuses in which the member keeps access: paying, on trial, or in dunning (Stripe retries the card and
# then cancels or marks it unpaid, which ends access).


def parse_interval(value: str | None) -> m.PriceInterval:
    """Leniently: any shared or hand-typed link still renders (monthly)."""
    try:
        return m.PriceInterval(value or m.PriceInterval.MONTH.value)
    except ValueError:
        return m.PriceInterval.MONTH


def pricing_province(user: m.User | None, province: str | None) -> str:
    """The province whose sales tax the pricing page shows: the one asked for, else the member's billing one."""
    return valid_province(province) or (user.billing_province if user is not None else None) or ""


def tier_for(user: m.User | None) -> m.PriceTier:
    return m.PriceTier.MEMBER if user is not None and user.holder_pricing else m.PriceTier.STANDARD


def credit_phrase(amount: int, name: str) -> str:
    """ "10 meeting-room hours", "1 day pass"."""
    label = name.lower()
    if amount == 1:
        if label.endswith(("sses", "shes", "ches", "xes")):
            label = label[:-2]
        elif label.endswith("s"):
            label = label[:-1]
    return f"{amount} {label}"


@dataclass(frozen=True)
class PlanOffer:
    """One pricing card: what this visitor would pay for ``plan`` at the chosen interval."""

    plan: m.Plan
    price: m.PlanPrice | None  # None: the plan is not sold at this interval
    standard_price: m.PlanPrice | None  # shown struck through when a member price applies
    savings: int  # yearly: twelve monthly payments minus the yearly price (same tier), in minor units
    months_free: int  # savings as whole months, when it is an exact multiple of the monthly price
    credits: list[str]
    is_current: bool  # the visitor's live subscription is on this plan
    tax: TaxResult | None = None  # the sales tax on the price in the page's province (None: no province chosen)

    @property
    def total(self) -> int | None:
        return self.price.amount + self.tax.total if self.price is not None and self.tax is not None else None

    @property
    def is_member_price(self) -> bool:
        return (
            self.price is not None
            and self.standard_price is not None
            and self.price.tier == m.PriceTier.MEMBER
            and self.price.amount < self.standard_price.amount
        )


@dataclass(frozen=True)
class PricingPage:
    interval: m.PriceInterval
    offers: list[PlanOffer]
    subscription: m.Subscription | None
    member_pricing: bool
    province: str = ""  # the billing province whose tax the prices show ("": none chosen)

    @property
    def current_interval(self) -> str | None:
        sub = self.subscription
        return sub.price.interval if sub is not None and sub.price is not None else None


class PlanService:
    """Plans as customers see them. Reads only, except ``change_price``."""

    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def active_plans(self) -> list[m.Plan]:
        rows = await self.db.scalars(
            select(m.Plan).where(m.Plan.is_active.is_(True)).order_by(m.Plan.position, m.Plan.name)
        )
        return list(rows.unique())

    async def by_id(self, plan_id: UUID) -> m.Plan | None:
        return await self.db.get(m.Plan, plan_id)

    async def by_slug(self, slug: str, *, include_inactive: bool = False) -> m.Plan | None:
        stmt = select(m.Plan).where(m.Plan.slug == slug)
        if not include_inactive:
            stmt = stmt.where(m.Plan.is_active.is_(True))
        return await self.db.scalar(stmt)

    def price_for(self, plan: m.Plan, interval: str, user: m.User | None) -> m.PlanPrice | None:
        """The active price ``user`` pays: the member tier for verified holders, else (or lacking one) standard."""
        return plan.price_for(interval, tier_for(user).value)

    async def live_subscription(self, user: m.User | None) -> m.Subscription | None:
        """The user's newest subscription that still gives access (active, trialing or past_due)."""
        if user is None:
            return None
        return await live_subscription(self.db, user.id)

    async def change_price(self, plan: m.Plan, interval: str, tier: str, amount: int) -> m.PlanPrice:
        """A new price for new subscribers: adds a PlanPrice row and deactivates the current one, which existing
        subscriptions keep pointing to. Flushes; the caller commits (``PlanStripeSync.ensure`` commits, creates the
        new Stripe Price and archives the old one). The same amount again changes nothing.
        """
        interval = m.PriceInterval(interval).value
        tier = m.PriceTier(tier).value
        if amount < 0:
            raise FormError({"amount": "A price can't be negative."})
        current = next(
            (p for p in plan.prices if p.is_active and p.interval == interval and p.tier == tier),
            None,
        )
        if current is not None and current.amount == amount:
            return current
        if current is not None:
            current.is_active = False
        new = m.PlanPrice(
            plan_id=plan.id,
            interval=interval,
            tier=tier,
            amount=amount,
            currency=current.currency if current is not None else "CAD",
        )
        plan.prices.append(new)
        await self.db.flush()
        log.info("plans.price_changed", plan=plan.slug, interval=interval, tier=tier, amount=amount)
        return new

    async def pricing(self, interval: m.PriceInterval, user: m.User | None, province: str | None = None) -> PricingPage:
        """The public pricing page for ``user`` (or a visitor) at ``interval``, with the sales tax of ``province``
        (else the member's billing province; a visitor without one sees "plus tax")."""
        subscription = await self.live_subscription(user)
        chosen = pricing_province(user, province)
        offers = [self._offer(plan, interval, user, subscription, chosen) for plan in await self.active_plans()]
        return PricingPage(
            interval=interval,
            offers=offers,
            subscription=subscription,
            member_pricing=tier_for(user) == m.PriceTier.MEMBER,
            province=chosen,
        )

    def _offer(
        self,
        plan: m.Plan,
        interval: m.PriceInterval,
        user: m.User | None,
        subscription: m.Subscription | None,
        province: str,
    ) -> PlanOffer:
        price = self.price_for(plan, interval, user)
        standard = plan.price_for(interval, m.PriceTier.STANDARD.value)
        savings = months_free = 0
        if interval == m.PriceInterval.YEAR and price is not None:
            # Compare with the monthly price of the same tier, so a member's saving is a member's saving.
            monthly = plan.price_for(m.PriceInterval.MONTH.value, price.tier)
            if monthly is not None and monthly.amount > 0 and monthly.currency == price.currency:
                savings = max(0, monthly.amount * 12 - price.amount)
                if savings and savings % monthly.amount == 0:
                    months_free = savings // monthly.amount
        credits = [
            credit_phrase(credit.amount, credit.credit_type.name)
            for credit in sorted(plan.credits, key=lambda c: c.credit_type.name)
        ]
        return PlanOffer(
            plan=plan,
            price=price,
            standard_price=standard,
            savings=savings,
            months_free=months_free,
            credits=credits,
            is_current=subscription is not None and subscription.plan_id == plan.id,
            tax=membership_tax(price.amount, province) if price is not None else None,
        )


# --- subscriber-only downloads -------------------------------------------------------------------------------------


class MemberRefusal(StrEnum):
    ENDED = "ended"  # had a membership that included the file; it is over
    MEMBERS_ONLY = "members-only"  # never had one that included it
    UNAVAILABLE = "unavailable"  # our fault: the file is missing or its storage key is unusable


class MemberDownloadRefusedError(ApplicationError):
    def __init__(self, reason: MemberRefusal, product: m.Product) -> None:
        messages = {
            MemberRefusal.ENDED: "Your membership has ended",
            MemberRefusal.MEMBERS_ONLY: "This download is for members",
            MemberRefusal.UNAVAILABLE: "This file isn't available right now",
        }
        super().__init__(messages[reason])
        self.reason = reason
        self.product = product
        self.status_code = 503 if reason == MemberRefusal.UNAVAILABLE else 403


class MemberDownloads:
    """Products any live subscriber of a plan may download, for as long as the subscription is live. Not counted
    or time-limited like purchases: access is the subscription itself, checked on every request."""

    def __init__(self, db: AsyncSession, settings: Settings, storage: Storage) -> None:
        self.db = db
        self.settings = settings
        self.storage = storage
        self.plans = PlanService(db)

    async def products_for(self, subscription: m.Subscription | None) -> list[m.Product]:
        if subscription is None or subscription.plan is None:
            return []
        return sorted(subscription.plan.downloads, key=lambda p: p.name)

    async def file_for(self, user: m.User, product_id: UUID) -> tuple[m.Product, DownloadFile]:
        """The file of ``product_id`` if ``user``'s live subscription includes it.

        404 when no plan of theirs (and no plan at all) offers it, so ids cannot be probed; 403 when a plan does but
        their subscription to it is over (or they never had one).
        """
        subscription = await self.plans.live_subscription(user)
        if subscription is not None and subscription.plan is not None:
            product = next((p for p in subscription.plan.downloads if p.id == product_id), None)
            if product is not None:
                return product, await self._file(product)
        offered = exists().where(m.plan_products.c.product_id == product_id)
        product = await self.db.scalar(select(m.Product).where(m.Product.id == product_id, offered))
        if product is None:
            raise NotFoundError
        previous = await self.db.scalar(
            select(m.Subscription.id)
            .join(m.plan_products, m.plan_products.c.plan_id == m.Subscription.plan_id)
            .where(m.Subscription.user_id == user.id, m.plan_products.c.product_id == product_id)
            .limit(1)
        )
        if subscription is not None and previous is None:
            raise NotFoundError  # their live plan doesn't include it: the brief's "not in the plan"
        raise MemberDownloadRefusedError(
            MemberRefusal.ENDED if previous is not None else MemberRefusal.MEMBERS_ONLY, product
        )

    async def _file(self, product: m.Product) -> DownloadFile:
        key = product.digital_file
        try:
            if not key:
                raise StorageKeyError("no file")
            stored = await self.storage.open(key)
        except (StorageKeyError, ObjectMissingError, StorageUnavailableError) as exc:
            log.error("plans.member_file_unavailable", product_id=str(product.id), key=key, error=repr(exc))
            raise MemberDownloadRefusedError(MemberRefusal.UNAVAILABLE, product) from exc
        filename = PurePosixPath(key).name
        return DownloadFile(stored=stored, filename=filename, media_type=media_type_for(filename))
