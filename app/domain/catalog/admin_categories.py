"""Categories in the back office: list with product counts, create, edit, delete when empty. Every change is audited
and invalidates the public catalog cache (the controller does that after the commit)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.queries import get_or_404
from app.domain.audit.services import Actor, changes, record_audit
from app.domain.catalog.admin_products import slugify
from app.lib.exceptions import ConflictError, FormError
from app.lib.forms import FormReader


@dataclass(frozen=True, slots=True)
class CategoryForm:
    name: str
    slug: str
    description: str
    position: int  # smaller comes first


FIELDS = tuple(f.name for f in fields(CategoryForm))


async def categories_with_counts(db: AsyncSession) -> list[tuple[m.Category, int]]:
    counts = select(func.count()).select_from(m.Product).where(m.Product.category_id == m.Category.id).scalar_subquery()
    rows = await db.execute(select(m.Category, counts).order_by(m.Category.position, m.Category.name))
    return [(category, int(count or 0)) for category, count in rows]


async def get_category(db: AsyncSession, category_id: UUID) -> m.Category:
    return await get_or_404(db, m.Category, category_id, "That category doesn't exist.")


def category_form_values(category: m.Category | None) -> dict[str, str]:
    if category is None:
        return {"position": "0"}
    return {
        "name": category.name,
        "slug": category.slug,
        "description": category.description,
        "position": str(category.position),
    }


def parse_category_form(form: dict[str, str]) -> CategoryForm:
    read = FormReader(form)
    name = read.text(
        "name", required="Give the category a name.", max_length=(80, "Keep the name under 80 characters.")
    )
    raw_slug = read.raw("slug")
    slug = slugify(raw_slug or name)[:80]
    if raw_slug and slug != raw_slug:
        read.error("slug", f"Use lower-case letters, digits and dashes, e.g. “{slug or 'my-category'}”.")
    elif not slug and name:
        read.error("slug", "Enter a slug: lower-case letters, digits and dashes.")
    description = read.text("description", max_length=(2000, "Keep the description under 2,000 characters."))
    position = read.integer(
        "position",
        "Enter a whole number from -1000 to 1000 (smaller comes first).",
        minimum=-1000,
        maximum=1000,
        default=0,
    )
    read.done()
    return CategoryForm(name=name, slug=slug, description=description, position=position)


async def _check_slug(db: AsyncSession, category_id: UUID | None, slug: str) -> None:
    clash = await db.scalar(select(m.Category.id).where(m.Category.slug == slug))
    if clash is not None and clash != category_id:
        raise FormError({"slug": f"Another category already uses the slug “{slug}”: choose another."})


async def _save(db: AsyncSession, slug: str, *, flush_only: bool = False) -> None:
    try:
        await (db.flush() if flush_only else db.commit())
    except IntegrityError as exc:
        await db.rollback()
        raise FormError({"slug": f"Another category already uses the slug “{slug}”: choose another."}) from exc


async def create_category(db: AsyncSession, form: CategoryForm, *, actor: Actor) -> m.Category:
    values = asdict(form)
    await _check_slug(db, None, values["slug"])
    category = m.Category(**values)
    db.add(category)
    await _save(db, values["slug"], flush_only=True)  # a slug taken meanwhile is a form error too
    await record_audit(
        db, actor, "category.create", target=("category", category.id, category.name), summary="Created", after=values
    )
    await _save(db, values["slug"])
    return category


async def update_category(db: AsyncSession, category: m.Category, form: CategoryForm, *, actor: Actor) -> bool:
    values = asdict(form)
    before, after = changes({f: getattr(category, f) for f in FIELDS}, values)
    if not after:
        return False
    await _check_slug(db, category.id, values["slug"])
    for field, value in values.items():
        setattr(category, field, value)
    await record_audit(
        db,
        actor,
        "category.update",
        target=("category", category.id, category.name),
        summary="Changed " + ", ".join(after),
        before=before,
        after=after,
    )
    await _save(db, values["slug"])
    return True


async def delete_category(db: AsyncSession, category: m.Category, *, actor: Actor) -> None:
    """Delete an empty category; one with products (active or archived) is refused with a clear reason."""
    count = await db.scalar(select(func.count()).select_from(m.Product).where(m.Product.category_id == category.id))
    if count:
        raise ConflictError(
            f"“{category.name}” still has {count} product(s), archived ones included: move them to another "
            "category first."
        )
    await record_audit(
        db,
        actor,
        "category.delete",
        target=("category", category.id, category.name),
        summary="Deleted",
        before={f: getattr(category, f) for f in FIELDS},
    )
    await db.delete(category)
    await db.commit()
