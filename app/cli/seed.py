"""Idempotent demo seed: categories, products (with downloadable files) and the three demo users."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from itertools import zip_longest

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli.seed_data import CATEGORIES, DEMO_USERS, PRODUCTS, ProductSeed
from app.db import models as m
from app.domain.accounts.services import AccountService
from app.domain.notifications.services import EmailService
from app.lib.permissions import Role
from app.lib.settings import Settings


@dataclass
class SeedResult:
    categories: int = 0
    products: int = 0
    users: int = 0


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


async def seed_demo(db: AsyncSession, settings: Settings) -> SeedResult:
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
    files_dir = settings.storage_dir / "products"
    files_dir.mkdir(parents=True, exist_ok=True)
    for data in _interleaved(PRODUCTS):
        slug = data["slug"]
        file_key = f"products/{slug}.zip"
        path = settings.storage_dir / file_key
        if not path.exists():
            path.write_bytes(_demo_file(data["name"], data["summary"]))
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
                email=user["email"], password=user["password"], name=user["name"], role=Role(user["role"])
            )
            result.users += 1
    await db.commit()
    return result
