"""Membership plans in the back office: the table, the form's rules, create/edit/archive, and moving subscribers
off archived prices. Audited.

Plans are archived, never deleted (subscriptions and invoices point at them). A price is a Stripe Price and Stripe
Prices are immutable, so a changed amount is a new PlanPrice row (and Price) while the old row is deactivated and
its Price archived: existing subscribers keep paying the old amount until an admin moves them, which Stripe applies
from their next renewal (see ``app/domain/subscriptions/jobs.py``). Every change writes an audit row in the same
transaction; Stripe is brought in line after the commit by ``PlanStripeSync``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import stripe
import structlog
from saq import Queue
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.queries import get_or_404
from app.domain.audit.services import Actor, changes, record_audit
from app.domain.plans.services import PlanService
from app.domain.plans.stripe_sync import PlanStripeSync, PlanSyncResult
from app.lib.exceptions import FormError
from app.lib.forms import FormReader
from app.lib.money import plain_amount
from app.lib.tables import Column, Filter, TableSpec, TableState

log = structlog.get_logger()

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
STATUS_LABELS = {"active": "On sale", "archived": "Archived"}
# The four prices a plan may have: (form field, interval, tier, label).
PRICE_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("price_month_standard", "month", "standard", "Monthly price"),
    ("price_year_standard", "year", "standard", "Yearly price"),
    ("price_month_member", "month", "member", "Monthly member price"),
    ("price_year_member", "year", "member", "Yearly member price"),
)
MAX_FEATURES = 20
MAX_PRICE = 100_000_00  # cents
MOVE_JOB = "move_plan_subscribers"

PLANS_TABLE = TableSpec(
    dom_id="admin-plans",
    noun="plans",
    columns=(
        Column("name", "Name", m.Plan.name),
        Column("monthly", "Monthly"),
        Column("yearly", "Yearly"),
        Column("trial", "Trial days", m.Plan.trial_days, numeric=True),
        Column("position", "Order on /pricing", m.Plan.position, numeric=True),
        Column("status", "Status"),
    ),
    default_sort="position",
    filters=(Filter("status", "Status", tuple(STATUS_LABELS.items()), "Any status"),),
    search_label="Name",
    tiebreak=(m.Plan.name, m.Plan.id),
)


def plans_query(state: TableState) -> Select[Any]:
    stmt = select(m.Plan)
    status = state.filters.get("status")
    if status == "active":
        stmt = stmt.where(m.Plan.is_active.is_(True))
    elif status == "archived":
        stmt = stmt.where(m.Plan.is_active.is_(False))
    if state.q:
        stmt = stmt.where(m.Plan.name.ilike(f"%{state.q}%"))
    return stmt


PLANS_CSV_HEADER = (
    "name",
    "slug",
    *(f"{interval}_{tier}" for _, interval, tier, _ in PRICE_FIELDS),
    "currency",
    "trial_days",
    "credits_per_cycle",
    "credits_roll_over",
    "downloads",
    "allow_end_now",
    "position",
    "status",
    "stripe_product",
)


def plan_csv_row(plan: m.Plan) -> tuple[Any, ...]:
    prices = [current_price(plan, interval, tier) for _, interval, tier, _ in PRICE_FIELDS]
    return (
        plan.name,
        plan.slug,
        *(plain_amount(p.amount, p.currency) if p is not None else "" for p in prices),
        next((p.currency for p in prices if p is not None), "CAD"),
        plan.trial_days,
        "; ".join(f"{c.amount} {c.credit_type.code}" for c in sorted(plan.credits, key=lambda c: c.credit_type.code)),
        "yes" if plan.credits_roll_over else "no",
        "; ".join(sorted(p.name for p in plan.downloads)),
        "yes" if plan.allow_cancel_now else "no",
        plan.position,
        "active" if plan.is_active else "archived",
        plan.stripe_product_id or "",
    )


# --- the form -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanForm:
    name: str
    slug: str
    description: str
    features: list[str]
    prices: dict[tuple[str, str], int | None]  # (interval, tier) -> minor units; None: not sold that way
    trial_days: int
    position: int
    credits: dict[UUID, int]  # credit type -> per paid cycle (only the positive ones)
    download_ids: list[UUID] = field(default_factory=list)
    allow_cancel_now: bool = False
    credits_roll_over: bool = False


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def form_values(plan: m.Plan | None) -> dict[str, str]:
    """The form's fields as text: a new plan's defaults, or an existing plan's current values."""
    if plan is None:
        return {"trial_days": "0", "position": "0"}
    values = {
        "name": plan.name,
        "slug": plan.slug,
        "description": plan.description,
        "features": "\n".join(plan.features or []),
        "trial_days": str(plan.trial_days),
        "position": str(plan.position),
        "allow_cancel_now": "on" if plan.allow_cancel_now else "",
        "credits_roll_over": "on" if plan.credits_roll_over else "",
    }
    for name, interval, tier, _ in PRICE_FIELDS:
        price = current_price(plan, interval, tier)
        values[name] = plain_amount(price.amount, price.currency) if price is not None else ""
    for credit in plan.credits:
        values[f"credits_{credit.credit_type_id}"] = str(credit.amount)
    return values


def parse_plan_form(
    form: dict[str, str], *, download_ids: list[str], credit_types: list[m.CreditType], product_ids: set[UUID]
) -> PlanForm:
    """Validate the whole form; raise :class:`FormError` with every field's problem at once."""
    read = FormReader(form)
    name_message = "Enter a name of up to 80 characters, like Resident."
    name = read.text("name", required=name_message, max_length=(80, name_message))
    slug = read.raw("slug").lower() or slugify(name)
    if not SLUG.match(slug) or len(slug) > 80:
        read.error("slug", "Use lower-case letters, digits and hyphens, like resident.")
    description = read.text("description", max_length=(2000, "Keep the description under 2,000 characters."))
    features = [line.strip() for line in read.raw("features").splitlines() if line.strip()]
    if len(features) > MAX_FEATURES or any(len(f) > 200 for f in features):
        read.error("features", f"Up to {MAX_FEATURES} features of up to 200 characters each, one per line.")
    prices = {(interval, tier): _price(read, field_name) for field_name, interval, tier, _ in PRICE_FIELDS}
    if not read.errors.keys() & {f for f, *_ in PRICE_FIELDS}:
        if prices[("month", "standard")] is None and prices[("year", "standard")] is None:
            read.error("price_month_standard", "Enter a monthly or a yearly price: otherwise nobody can subscribe.")
        for interval, label in (("month", "monthly"), ("year", "yearly")):
            member, standard = prices[(interval, "member")], prices[(interval, "standard")]
            if member is not None and standard is None:
                read.error(f"price_{interval}_member", f"A member price needs a {label} price to discount.")
            elif member is not None and standard is not None and member > standard:
                read.error(f"price_{interval}_member", f"The member price can't be more than the {label} price.")
    trial_days = read.integer("trial_days", "Enter a number of days from 0 to 730.", minimum=0, maximum=730, default=0)
    position = read.integer(
        "position", "Enter a number from 0 to 1000 (lower comes first).", minimum=0, maximum=1000, default=0
    )
    credits: dict[UUID, int] = {}
    for credit_type in credit_types:
        per_cycle = read.integer(
            f"credits_{credit_type.id}",
            "Enter a whole number from 0 to 10,000, or leave it empty.",
            minimum=0,
            maximum=10_000,
        )
        if per_cycle:
            credits[credit_type.id] = per_cycle
    downloads: list[UUID] = []
    for value in download_ids:
        try:
            product_id = UUID(value)
        except ValueError:
            product_id = None
        if product_id is None or product_id not in product_ids:
            read.error("download_ids", "Choose products from the list.")
            break
        downloads.append(product_id)
    read.done()
    return PlanForm(
        name=name,
        slug=slug,
        description=description,
        features=features,
        prices=prices,
        trial_days=trial_days,
        position=position,
        credits=credits,
        download_ids=list(dict.fromkeys(downloads)),
        allow_cancel_now=read.checkbox("allow_cancel_now"),
        credits_roll_over=read.checkbox("credits_roll_over"),
    )


def _price(read: FormReader, name: str) -> int | None:
    """One of the four prices, in cents; empty: the plan is not sold that way."""
    out_of_range = "Enter an amount greater than zero and up to 100,000.00."
    amount = read.money(name, "CAD", "Enter an amount such as 49.00, or leave it empty.", positive=out_of_range)
    if amount is not None and amount > MAX_PRICE:
        read.error(name, out_of_range)
        return None
    return amount


async def choices(db: AsyncSession) -> tuple[list[m.CreditType], list[m.Product]]:
    """What the form offers: every credit type, and the products a plan may include as downloads."""
    types = list(await db.scalars(select(m.CreditType).order_by(m.CreditType.name)))
    products = list((await db.scalars(select(m.Product).order_by(m.Product.name))).unique())
    return types, products


# --- reading ----------------------------------------------------------------------------------------------------------


def current_price(plan: m.Plan, interval: str, tier: str) -> m.PlanPrice | None:
    """The active price of exactly this interval and tier (no member-to-standard fallback: the form's view)."""
    return next((p for p in plan.prices if p.is_active and p.interval == interval and p.tier == tier), None)


async def get_plan(db: AsyncSession, plan_id: UUID) -> m.Plan:
    return await get_or_404(db, m.Plan, plan_id, "That plan doesn't exist.")


@dataclass(frozen=True)
class OldPriceGroup:
    """Live subscribers still on an archived price of a plan, and the price a move would give them."""

    old: m.PlanPrice
    new: m.PlanPrice | None  # None: the plan no longer sells this interval; nobody can be moved
    subscribers: int


async def old_price_groups(db: AsyncSession, plan: m.Plan) -> list[OldPriceGroup]:
    """Archived prices of ``plan`` that live subscriptions still pay, with their counts."""
    rows = await db.execute(
        select(m.Subscription.plan_price_id, func.count())
        .join(m.PlanPrice, m.PlanPrice.id == m.Subscription.plan_price_id)
        .where(
            m.PlanPrice.plan_id == plan.id,
            m.PlanPrice.is_active.is_(False),
            m.Subscription.status.in_(m.LIVE_SUBSCRIPTION_STATUSES),
        )
        .group_by(m.Subscription.plan_price_id)
    )
    counts = {price_id: int(count) for price_id, count in rows.all()}
    groups = []
    for price in plan.prices:
        if price.id in counts:
            groups.append(OldPriceGroup(price, plan.price_for(price.interval, price.tier), counts[price.id]))
    return sorted(groups, key=lambda g: (g.old.interval, g.old.tier, g.old.amount))


# --- changes ----------------------------------------------------------------------------------------------------------


def _snapshot(plan: m.Plan) -> dict[str, Any]:
    return {
        "name": plan.name,
        "slug": plan.slug,
        "description": plan.description,
        "features": list(plan.features or []),
        "prices": {
            f"{interval}/{tier}": price.amount
            for _, interval, tier, _ in PRICE_FIELDS
            if (price := current_price(plan, interval, tier)) is not None
        },
        "trial_days": plan.trial_days,
        "position": plan.position,
        "credits": {c.credit_type.code: c.amount for c in plan.credits},
        "downloads": sorted(p.name for p in plan.downloads),
        "allow_cancel_now": plan.allow_cancel_now,
        "credits_roll_over": plan.credits_roll_over,
        "archived": not plan.is_active,
    }


async def _slug_taken(db: AsyncSession, slug: str, except_id: UUID | None = None) -> bool:
    stmt = select(m.Plan.id).where(m.Plan.slug == slug)
    if except_id is not None:
        stmt = stmt.where(m.Plan.id != except_id)
    return await db.scalar(stmt) is not None


async def _commit(db: AsyncSession, slug: str) -> None:
    """Commit; two admins saving the same new slug at once: the unique index decides, the loser gets the field error."""
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()
        raise FormError({"slug": f"Another plan uses {slug}: choose another."}) from None


async def _apply(db: AsyncSession, plan: m.Plan, form: PlanForm) -> None:
    """Copy the form onto ``plan``: plain fields, prices (new rows for changed amounts), credits, downloads."""
    plan.name = form.name
    plan.slug = form.slug
    plan.description = form.description
    plan.features = list(form.features)
    plan.trial_days = form.trial_days
    plan.position = form.position
    plan.allow_cancel_now = form.allow_cancel_now
    plan.credits_roll_over = form.credits_roll_over
    plans = PlanService(db)
    for (interval, tier), amount in form.prices.items():
        if amount is not None:
            await plans.change_price(plan, interval, tier, amount)
        elif (current := current_price(plan, interval, tier)) is not None:
            current.is_active = False  # no longer sold this way; its subscribers keep it
    by_type = {c.credit_type_id: c for c in plan.credits}
    for type_id, amount in form.credits.items():
        if type_id in by_type:
            by_type[type_id].amount = amount
        else:
            plan.credits.append(m.PlanCredit(credit_type_id=type_id, amount=amount))
    for type_id, credit in by_type.items():
        if type_id not in form.credits:
            plan.credits.remove(credit)  # future cycles grant none; credits already granted stay in the ledger
    products = list((await db.scalars(select(m.Product).where(m.Product.id.in_(form.download_ids)))).unique())
    plan.downloads = sorted(products, key=lambda p: p.name)
    await db.flush()
    # The relationships loaded once; read them again so the snapshot sees the new credits' types.
    await db.refresh(plan, attribute_names=["prices", "credits", "downloads"])


async def sync_to_stripe(db: AsyncSession, client: stripe.StripeClient, plan: m.Plan) -> PlanSyncResult | None:
    """Bring Stripe in line after a committed change; None when Stripe could not be reached (the plan is saved,
    and the next subscription or `cartwright plans sync` finishes the job: ``ensure`` is idempotent)."""
    try:
        return await PlanStripeSync(db, client).ensure(plan)
    except stripe.StripeError as exc:
        await db.rollback()
        log.warning("plans.stripe_sync_deferred", plan=plan.slug, error=type(exc).__name__)
        return None


async def create_plan(db: AsyncSession, form: PlanForm, *, actor: Actor) -> m.Plan:
    """A new plan, on sale at once (it shows on /pricing). Commits; the caller then calls ``sync_to_stripe``."""
    if await _slug_taken(db, form.slug):
        raise FormError({"slug": f"Another plan uses {form.slug}: choose another."})
    plan = m.Plan(name=form.name, slug=form.slug, description=form.description, features=[])
    plan.prices = []
    plan.credits = []
    plan.downloads = []
    db.add(plan)
    await db.flush()
    await _apply(db, plan, form)
    await record_audit(
        db,
        actor,
        "plan.create",
        target=("plan", plan.id, plan.name),
        summary=f"Created the plan {plan.name}",
        after=_snapshot(plan),
    )
    await _commit(db, form.slug)
    log.info("plan.created", plan=plan.slug)
    return plan


async def update_plan(db: AsyncSession, plan: m.Plan, form: PlanForm, *, actor: Actor) -> bool:
    """Save the form. A changed amount is a new price for new subscribers; existing ones keep theirs. Commits;
    the caller then calls ``sync_to_stripe``. False when nothing changed."""
    if await _slug_taken(db, form.slug, except_id=plan.id):
        raise FormError({"slug": f"Another plan uses {form.slug}: choose another."})
    before = _snapshot(plan)
    await _apply(db, plan, form)
    old, new = changes(before, _snapshot(plan))
    if not new:
        await db.rollback()
        return False
    await record_audit(
        db,
        actor,
        "plan.update",
        target=("plan", plan.id, plan.name),
        summary=f"Edited {plan.name}: {', '.join(sorted(new))}",
        before=old,
        after=new,
    )
    await _commit(db, form.slug)
    log.info("plan.updated", plan=plan.slug, fields=sorted(new))
    return True


async def set_archived(db: AsyncSession, plan: m.Plan, archived: bool, *, actor: Actor) -> bool:
    """Archive (off /pricing, nobody new can subscribe; subscribers keep it and renew) or bring back. Commits.
    False when it was so already."""
    if plan.is_active is not archived:
        return False
    plan.is_active = not archived
    await record_audit(
        db,
        actor,
        "plan.archive" if archived else "plan.restore",
        target=("plan", plan.id, plan.name),
        summary=f"{'Archived' if archived else 'Put back on sale'} {plan.name}",
        before={"archived": not archived},
        after={"archived": archived},
    )
    await db.commit()
    return True


def move_key_prefix(plan_id: UUID) -> str:
    return f"plan-move:{plan_id}:"


async def request_move(db: AsyncSession, queue: Queue, plan: m.Plan, *, actor: Actor) -> str:
    """Audit the request, commit, then queue the move job (on the background queue). Returns the job's key, which
    the plan page polls for progress. Running it again is harmless: the job skips anyone already moved."""
    groups = await old_price_groups(db, plan)
    waiting = sum(g.subscribers for g in groups if g.new is not None)
    await record_audit(
        db,
        actor,
        "plan.move_subscribers",
        target=("plan", plan.id, plan.name),
        summary=f"Asked to move {waiting} subscribers of {plan.name} to the current prices at their next renewal",
    )
    await db.commit()
    key = f"{move_key_prefix(plan.id)}{uuid4().hex}"
    await queue.enqueue(
        MOVE_JOB,
        key=key,
        plan_id=str(plan.id),
        actor_id=str(actor.user.id) if actor.user else "",
        timeout=600,
        retries=3,
        retry_delay=5.0,
    )
    return key
