"""Promo codes in the back office: the table, the create form's rules, and creating/archiving at Stripe.

Creating a code creates a Stripe Coupon (the discount and how long it lasts) and a Promotion Code (the code the
customer types, with its limits); archiving switches the Promotion Code off. Both write an audit row in the same
transaction as the change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal, cast
from uuid import UUID

import stripe
import structlog
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params import CouponCreateParams, PromotionCodeCreateParams, PromotionCodeCreateParamsRestrictions

from app.db import models as m
from app.db.queries import get_or_404
from app.domain.audit.services import Actor, record_audit
from app.domain.plans.stripe_sync import PlanStripeSync
from app.domain.promotions.services import describe, describe_duration, normalize_code, status_of
from app.lib.exceptions import FormError
from app.lib.forms import FormReader
from app.lib.money import plain_amount
from app.lib.stripe_gateway import idempotency_key
from app.lib.tables import Column, Filter, TableSpec, TableState, parse_ids

log = structlog.get_logger()

CODE_PATTERN = re.compile(r"^[A-Z0-9-]{3,40}$")
CURRENCIES = ("CAD",)
MAX_MONTHS = 36

STATUS_LABELS = {"active": "Active", "expired": "Expired or used up", "archived": "Archived"}

PROMO_TABLE = TableSpec(
    dom_id="admin-promo-codes",
    noun="promo codes",
    columns=(
        Column("code", "Code", m.PromoCode.code),
        Column("discount", "Discount"),
        Column("duration", "Duration"),
        Column("redeemed", "Redeemed", m.PromoCode.times_redeemed, numeric=True),
        Column("expires", "Expires (UTC)", m.PromoCode.expires_at),
        Column("status", "Status"),
        Column("created", "Created (UTC)", m.PromoCode.created_at, newest_first=True),
    ),
    default_sort="-created",
    filters=(Filter("status", "Status", tuple(STATUS_LABELS.items()), "Any status"),),
    search_label="Code",
    tiebreak=(m.PromoCode.id.desc(),),
)


def promo_query(state: TableState, now: datetime | None = None) -> Select[Any]:
    now = now or datetime.now(UTC)
    stmt = select(m.PromoCode)
    expired = or_(
        and_(m.PromoCode.expires_at.is_not(None), m.PromoCode.expires_at <= now),
        and_(m.PromoCode.max_redemptions.is_not(None), m.PromoCode.times_redeemed >= m.PromoCode.max_redemptions),
    )
    status = state.filters.get("status")
    if status == "archived":
        stmt = stmt.where(m.PromoCode.archived_at.is_not(None))
    elif status == "expired":
        stmt = stmt.where(m.PromoCode.archived_at.is_(None), expired)
    elif status == "active":
        stmt = stmt.where(m.PromoCode.archived_at.is_(None), ~expired)
    if state.q:
        stmt = stmt.where(m.PromoCode.code.ilike(f"%{normalize_code(state.q)}%"))
    return stmt


PROMO_CSV_HEADER = (
    "code",
    "discount",
    "duration",
    "times_redeemed",
    "max_redemptions",
    "expires_at",
    "minimum_amount",
    "first_order_only",
    "products",
    "plans",
    "status",
    "stripe_promotion_code",
    "created_at",
)


def promo_csv_row(promo: m.PromoCode) -> tuple[Any, ...]:
    return (
        promo.code,
        describe(promo),
        promo.duration + (f" ({promo.duration_in_months} months)" if promo.duration_in_months else ""),
        promo.times_redeemed,
        promo.max_redemptions if promo.max_redemptions is not None else "",
        promo.expires_at.isoformat() if promo.expires_at else "",
        plain_amount(promo.minimum_amount, promo.currency) if promo.minimum_amount is not None else "",
        "yes" if promo.first_order_only else "no",
        "; ".join(p.name for p in promo.products),
        "; ".join(p.name for p in promo.plans),
        status_of(promo),
        promo.stripe_promotion_code_id or "",
        promo.created_at.isoformat(),
    )


@dataclass(frozen=True, slots=True)
class PromoForm:
    code: str
    percent_off_bps: int | None
    amount_off: int | None
    currency: str
    duration: str
    duration_in_months: int | None
    max_redemptions: int | None
    expires_at: datetime | None
    minimum_amount: int | None
    first_order_only: bool
    product_ids: list[UUID]
    plan_ids: list[UUID]
    form_token: str


def parse_promo_form(
    form: dict[str, str], *, product_ids: list[str], plan_ids: list[str], today: date | None = None
) -> PromoForm:
    """Validate the create form; raise :class:`FormError` with every field's problem at once."""
    today = today or datetime.now(UTC).date()
    read = FormReader(form)
    code = normalize_code(form.get("code"))
    if not CODE_PATTERN.match(code):
        read.error("code", "Use 3 to 40 letters A-Z, digits and hyphens, like SPRING-25.")
    currency = read.raw("currency", "CAD").upper()
    if currency not in CURRENCIES:
        read.error("currency", "Codes are in Canadian dollars (CAD).")
    kind = read.choice("kind", {"percent", "amount"}, "Choose a percentage or a fixed amount.", default="percent")
    percent_bps = amount_off = None
    if kind == "percent":
        percent_bps = read.percent_bps(
            "percent_off",
            "Enter a percentage from 1 to 100, like 15 or 12.5.",
            decimals="Use at most two decimals, like 12.5.",
        )
    elif kind == "amount":
        amount_off = read.money(
            "amount_off",
            currency if currency in CURRENCIES else "CAD",
            "Enter an amount such as 5.00.",
            positive="Enter an amount greater than zero.",
            required=True,
        )
    durations = {d.value for d in m.PromoDuration}
    duration = read.choice("duration", durations, "Choose once, forever or a number of months.", default="once")
    months = None
    if duration == m.PromoDuration.REPEATING:
        months = read.integer(
            "duration_in_months",
            f"Enter a number of months from 1 to {MAX_MONTHS}.",
            minimum=1,
            maximum=MAX_MONTHS,
            required=True,
        )
    max_redemptions = read.integer(
        "max_redemptions", "Leave empty for no limit, or enter 1 or more.", minimum=1, maximum=1_000_000
    )
    expiry = read.day(
        "expires_on", "Enter a date like 2027-01-31.", not_before=today, too_early="Choose today or a later date."
    )
    minimum = read.money(
        "minimum_amount",
        "CAD",
        "Enter an amount such as 50.00, or leave it empty.",
        positive="Enter an amount greater than zero, or leave it empty.",
    )
    token = read.form_token("This form has expired: reload the page and try again.")
    read.done()
    return PromoForm(
        code=code,
        percent_off_bps=percent_bps,
        amount_off=amount_off,
        currency=currency,
        duration=duration,
        duration_in_months=months,
        max_redemptions=max_redemptions,
        # The code works through the whole of that day (UTC).
        expires_at=datetime.combine(expiry, time(23, 59, 59), tzinfo=UTC) if expiry else None,
        minimum_amount=minimum,
        first_order_only=read.checkbox("first_order_only"),
        product_ids=parse_ids(product_ids),
        plan_ids=parse_ids(plan_ids),
        form_token=token,
    )


async def choices(db: AsyncSession) -> tuple[list[m.Product], list[m.Plan]]:
    """What a code can be restricted to: every product and plan (inactive ones are shown by name too)."""
    products = list((await db.scalars(select(m.Product).order_by(m.Product.name))).unique())
    plans = list((await db.scalars(select(m.Plan).order_by(m.Plan.position, m.Plan.name))).unique())
    return products, plans


def _snapshot(promo: m.PromoCode) -> dict[str, Any]:
    return {
        "code": promo.code,
        "discount": describe(promo),
        "duration": promo.duration,
        "duration_in_months": promo.duration_in_months,
        "max_redemptions": promo.max_redemptions,
        "expires_at": promo.expires_at,
        "minimum_amount": promo.minimum_amount,
        "first_order_only": promo.first_order_only,
        "products": [p.name for p in promo.products],
        "plans": [p.name for p in promo.plans],
        "archived": promo.archived_at is not None,
    }


async def create_promo(db: AsyncSession, client: stripe.StripeClient, form: PromoForm, *, actor: Actor) -> m.PromoCode:
    """Create the code here and at Stripe (Coupon + Promotion Code), with its audit row. Commits.

    Raises :class:`FormError` for a code that exists already; a ``stripe.StripeError`` propagates with nothing
    stored here (the form token makes the retry replay the same Stripe objects).
    """
    if await db.scalar(select(m.PromoCode.id).where(m.PromoCode.code == form.code)) is not None:
        raise FormError({"code": f"The code {form.code} exists already (codes ignore upper/lower case)."})
    products = list((await db.scalars(select(m.Product).where(m.Product.id.in_(form.product_ids)))).unique())
    plans = list((await db.scalars(select(m.Plan).where(m.Plan.id.in_(form.plan_ids)))).unique())
    # Stripe restricts a coupon by Stripe product: plans get theirs from the plan sync (which commits on its own).
    stripe_products: list[str] = []
    for plan in plans:
        await PlanStripeSync(db, client).ensure(plan)
        if plan.stripe_product_id:
            stripe_products.append(plan.stripe_product_id)
    # One-time products may not be synced to Stripe; the checkout enforces their restriction itself.
    stripe_products += [pid for p in products if isinstance(pid := getattr(p, "stripe_product_id", None), str)]

    coupon_params: CouponCreateParams = {
        "duration": cast("Literal['forever', 'once', 'repeating']", form.duration),
        "name": form.code,
        "metadata": {"promo_code": form.code},
    }
    if form.percent_off_bps is not None:
        coupon_params["percent_off"] = form.percent_off_bps / 100
    else:
        assert form.amount_off is not None
        coupon_params["amount_off"] = form.amount_off
        coupon_params["currency"] = form.currency.lower()
    if form.duration_in_months is not None:
        coupon_params["duration_in_months"] = form.duration_in_months
    if (products or plans) and stripe_products:
        coupon_params["applies_to"] = {"products": stripe_products}
    coupon = await client.v1.coupons.create_async(
        coupon_params, {"idempotency_key": idempotency_key("promo-coupon", form.code, form.form_token)}
    )
    promo_params: PromotionCodeCreateParams = {
        "promotion": {"type": "coupon", "coupon": coupon.id},
        "code": form.code,
        "metadata": {"promo_code": form.code},
    }
    if form.max_redemptions is not None:
        promo_params["max_redemptions"] = form.max_redemptions
    if form.expires_at is not None:
        promo_params["expires_at"] = int(form.expires_at.timestamp())
    restrictions: PromotionCodeCreateParamsRestrictions = {}
    if form.minimum_amount is not None:
        restrictions["minimum_amount"] = form.minimum_amount
        restrictions["minimum_amount_currency"] = form.currency.lower()
    if form.first_order_only:
        restrictions["first_time_transaction"] = True
    if restrictions:
        promo_params["restrictions"] = restrictions
    remote = await client.v1.promotion_codes.create_async(
        promo_params, {"idempotency_key": idempotency_key("promo-code", form.code, form.form_token)}
    )
    promo = m.PromoCode(
        code=form.code,
        percent_off_bps=form.percent_off_bps,
        amount_off=form.amount_off,
        currency=form.currency,
        duration=form.duration,
        duration_in_months=form.duration_in_months,
        max_redemptions=form.max_redemptions,
        expires_at=form.expires_at,
        minimum_amount=form.minimum_amount,
        first_order_only=form.first_order_only,
        stripe_coupon_id=coupon.id,
        stripe_promotion_code_id=remote.id,
        created_by_id=actor.user.id if actor.user else None,
    )
    promo.products = products
    promo.plans = plans
    db.add(promo)
    await db.flush()
    await record_audit(
        db,
        actor,
        "promo_code.create",
        target=("promo_code", promo.id, promo.code),
        summary=f"Created {promo.code}: {describe(promo)} {describe_duration(promo)}",
        after=_snapshot(promo),
    )
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise FormError({"code": f"The code {form.code} exists already (codes ignore upper/lower case)."}) from None
    log.info("promo_code.created", code=promo.code, coupon=coupon.id, promotion_code=remote.id)
    return promo


async def get_promo(db: AsyncSession, promo_id: UUID) -> m.PromoCode:
    return await get_or_404(db, m.PromoCode, promo_id, "That promo code doesn't exist.")


async def archive_promo(db: AsyncSession, client: stripe.StripeClient, promo: m.PromoCode, *, actor: Actor) -> bool:
    """Deactivate: the Stripe Promotion Code goes inactive and nobody can apply the code any more. Commits.

    Returns False when it was archived already (a second click). Orders already placed with it are unaffected.
    """
    if promo.archived_at is not None:
        return False
    if promo.stripe_promotion_code_id:
        await client.v1.promotion_codes.update_async(
            promo.stripe_promotion_code_id,
            {"active": False},
            {"idempotency_key": idempotency_key("promo-code-deactivate", promo.stripe_promotion_code_id)},
        )
    before = _snapshot(promo)
    promo.archived_at = datetime.now(UTC)
    await record_audit(
        db,
        actor,
        "promo_code.deactivate",
        target=("promo_code", promo.id, promo.code),
        summary=f"Deactivated {promo.code} (redeemed {promo.times_redeemed} times)",
        before={"archived": before["archived"]},
        after={"archived": True},
    )
    await db.commit()
    log.info("promo_code.archived", code=promo.code)
    return True
