"""Idempotent demo seed: categories, products (with downloadable files), the three demo users, credit types and the
demo membership plans (database only: `cartwright plans sync` or the first subscription creates them in Stripe)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from datetime import date, time, timedelta
from itertools import zip_longest

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli.seed_data import (
    CATEGORIES,
    CREDIT_TYPES,
    DEMO_USERS,
    PLANS,
    PRODUCTS,
    RESOURCES,
    SLOT_DAYS_AHEAD,
    ProductSeed,
)
from app.db import models as m
from app.domain.accounts.services import AccountService
from app.domain.bookings.schedule import slots_for_day, to_json
from app.domain.notifications.services import EmailService
from app.domain.settings.services import load_shop_settings
from app.lib.localtime import local_today, shop_zone
from app.lib.permissions import Role
from app.lib.settings import Settings
from app.lib.shop_settings import SHOP_SETTINGS
from app.lib.storage import Storage


@dataclass
class SeedResult:
    categories: int = 0
    products: int = 0
    users: int = 0
    credit_types: int = 0
    plans: int = 0
    resources: int = 0
    slots: int = 0


def _interleaved(products: list[ProductSeed]) -> list[ProductSeed]:
    """Round-robin over categories, so "Newest" in the demo shows a mix rather than one category."""
    by_category: dict[str, list[ProductSeed]] = {}
    for product in products:
        by_category.setdefault(product["category"], []).append(product)
    rounds = zip_longest(*by_category.values())
    return [product for round_ in rounds for product in round_ if product is not None]


def _demo_file(name: str, summary: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", f"{name}\n\n{summary}\n\nThank you for your purchase from Cartwright.\n")
    return buffer.getvalue()


async def seed_demo(db: AsyncSession, settings: Settings, storage: Storage) -> SeedResult:
    """Insert what is missing; never overwrite what an admin may have edited since."""
    result = SeedResult()
    categories = {c.slug: c for c in await db.scalars(select(m.Category))}
    for position, category_seed in enumerate(CATEGORIES):
        if category_seed["slug"] not in categories:
            category = m.Category(
                slug=category_seed["slug"],
                name=category_seed["name"],
                description=category_seed["description"],
                position=position,
            )
            db.add(category)
            categories[category_seed["slug"]] = category
            result.categories += 1
    await db.flush()

    existing = set(await db.scalars(select(m.Product.slug)))
    for data in _interleaved(PRODUCTS):
        slug = data["slug"]
        file_key = f"products/{slug}.zip"
        if not await storage.exists(file_key):
            await storage.put(file_key, _demo_file(data["name"], data["summary"]), content_type="application/zip")
        if slug in existing:
            continue
        db.add(
            m.Product(
                slug=slug,
                name=data["name"],
                summary=data["summary"],
                description=data["description"],
                price=data["price"],
                currency="CAD",
                category_id=categories[data["category"]].id,
                is_featured=data.get("featured", False),
                stock=data.get("stock"),
                cover_image=f"img/covers/{slug}.svg",
                digital_file=file_key,
                seo_title=f"{data['name']} | Cartwright",
                seo_description=data["summary"],
            )
        )
        result.products += 1

    accounts = AccountService(db, settings, EmailService(db, queue=None))
    for user in DEMO_USERS:
        if await accounts.get_by_email(user["email"]) is None:
            await accounts.create_user(
                email=user["email"],
                password=user["password"],
                name=user["name"],
                role=Role(user["role"]),
                verified=True,
            )
            result.users += 1

    await seed_plans(db, result)
    await seed_resources(db, result)
    await db.commit()
    return result


async def seed_plans(db: AsyncSession, result: SeedResult) -> None:
    """Credit types that are missing, and the demo plans only into an empty plans table (an admin may have
    renamed, repriced or retired them since). No Stripe calls: at `make run` the emulator is not up yet."""
    credit_types = {c.code: c for c in await db.scalars(select(m.CreditType))}
    for credit_seed in CREDIT_TYPES:
        if credit_seed["code"] not in credit_types:
            credit_type = m.CreditType(code=credit_seed["code"], name=credit_seed["name"], unit=credit_seed["unit"])
            db.add(credit_type)
            credit_types[credit_seed["code"]] = credit_type
            result.credit_types += 1
    await db.flush()
    if await db.scalar(select(m.Plan.id).limit(1)) is not None:
        return
    products = {p.slug: p for p in await db.scalars(select(m.Product))}
    for position, plan_seed in enumerate(PLANS):
        plan = m.Plan(
            slug=plan_seed["slug"],
            name=plan_seed["name"],
            description=plan_seed["description"],
            features=list(plan_seed["features"]),
            trial_days=plan_seed["trial_days"],
            allow_cancel_now=plan_seed["allow_cancel_now"],
            position=position,
            prices=[
                m.PlanPrice(interval=interval, tier=tier, amount=amount, currency="CAD")
                for tier, amounts in plan_seed["prices"].items()
                for interval, amount in amounts.items()
            ],
            credits=[
                m.PlanCredit(credit_type_id=credit_types[code].id, amount=amount)
                for code, amount in plan_seed["credits"].items()
            ],
            downloads=[products[slug] for slug in plan_seed["downloads"] if slug in products],
        )
        db.add(plan)
        result.plans += 1


async def seed_resources(
    db: AsyncSession, result: SeedResult, *, today: date | None = None, days: int = SLOT_DAYS_AHEAD
) -> None:
    """Bookable resources that are missing (looked up by slug; credit types by code), and their weekday slots for
    the next ``days`` days that do not exist yet. Existing resources and slots (and their bookings) are left alone."""
    credit_types = {c.code: c for c in await db.scalars(select(m.CreditType))}
    resources = {r.slug: r for r in await db.scalars(select(m.BookableResource))}
    # The CLI serves no request: load the shop settings (their time zone) as the web and the worker do.
    SHOP_SETTINGS.set(await load_shop_settings(db), None)
    zone = shop_zone()
    start = today or local_today(zone=zone)
    for seed in RESOURCES:
        resource = resources.get(seed["slug"])
        if resource is None:
            credit_type = credit_types.get(seed["credit_type"])
            resource = m.BookableResource(
                slug=seed["slug"],
                name=seed["name"],
                description=seed["description"],
                credit_type_id=credit_type.id if credit_type else None,
                credit_cost=seed["credit_cost"],
                price=seed["price"],
                currency="CAD",
                cancel_cutoff_hours=seed["cancel_cutoff_hours"],
                kind=seed["kind"],
                capacity=seed["capacity"],
                slot_minutes=seed["slot_minutes"],
                opening_hours=to_json({d: [(time(seed["opens"]), time(seed["closes"]))] for d in range(5)}),
                book_ahead_days=days,
            )
            db.add(resource)
            await db.flush()
            result.resources += 1
        existing = set(
            await db.scalars(select(m.BookingSlot.starts_at).where(m.BookingSlot.resource_id == resource.id))
        )
        # Opening hours are local wall-clock times: 09:00 in Toronto, whatever the UTC offset that day.
        hours = {weekday: [(time(seed["opens"]), time(seed["closes"]))] for weekday in range(5)}
        for offset in range(days):
            day = start + timedelta(days=offset)
            for starts_at, ends_at in slots_for_day(day, hours, seed["slot_minutes"], zone):
                if starts_at in existing:
                    continue
                db.add(
                    m.BookingSlot(
                        resource_id=resource.id, starts_at=starts_at, ends_at=ends_at, capacity=seed["capacity"]
                    )
                )
                result.slots += 1
    await db.flush()
