"""Products in the back office: the table, the product form's rules, and every change (audited, cache invalidated
by the controller after the commit, mirrored to Stripe by app/domain/catalog/stripe_sync.py)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, fields
from typing import Any
from uuid import UUID

from sqlalchemy import Select, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.queries import get_or_404
from app.domain.audit.services import Actor, changes, record_audit
from app.domain.catalog.low_stock import rearm_low_stock
from app.lib.exceptions import FormError
from app.lib.forms import FormReader
from app.lib.money import format_money, plain_amount
from app.lib.shop_settings import current_shop_settings
from app.lib.storage import StoredFile
from app.lib.tables import BulkAction, Column, Filter, TableSpec, TableState

CURRENCY = "CAD"
MAX_PRICE = 100_000_00  # $100,000: anything above is a typo
MAX_DOWNLOAD_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ProductForm:
    """What the product form sets, in the order the audit log shows it."""

    name: str
    slug: str
    summary: str
    description: str
    price: int  # minor units of CURRENCY
    category_id: UUID | None
    stock: int | None  # None: unlimited
    seo_title: str
    seo_description: str
    download_limit: int
    is_active: bool
    is_featured: bool


FIELDS = tuple(f.name for f in fields(ProductForm))
# A change to any of these makes the Stripe mirror stale.
STRIPE_FIELDS = frozenset({"name", "slug", "summary", "price", "is_active"})


def products_table(categories: list[m.Category]) -> TableSpec:
    """The products table; its category filter lists the categories that exist."""
    return TableSpec(
        dom_id="admin-products",
        noun="products",
        columns=(
            Column("name", "Product", m.Product.name),
            Column("category", "Category"),
            Column("price", "Price", m.Product.price, numeric=True),
            Column("stock", "Stock", m.Product.stock, numeric=True),
            Column("status", "Status"),
            Column("created", "Created (UTC)", m.Product.created_at, newest_first=True),
        ),
        default_sort="-created",
        filters=(
            Filter("category", "Category", tuple((c.slug, c.name) for c in categories), "Any category"),
            Filter("status", "Status", (("active", "Active"), ("archived", "Archived")), "Active or archived"),
            Filter(
                "stock",
                "Stock",
                (
                    ("low", f"Low stock (≤ {current_shop_settings().low_stock_threshold})"),
                    ("out", "Sold out"),
                    ("limited", "Limited"),
                    ("unlimited", "Unlimited"),
                ),
                "Any stock",
            ),
        ),
        search_label="Name or slug",
        bulk_actions=(
            BulkAction(
                "admin:products_table_archive", "Archive", "Archive the selected products? They leave the shop."
            ),
            BulkAction("admin:products_table_activate", "Activate"),
        ),
        tiebreak=(m.Product.id.desc(),),
    )


def products_query(state: TableState, categories: list[m.Category]) -> Select[Any]:
    stmt = select(m.Product)
    if slug := state.filters.get("category"):
        ids = [c.id for c in categories if c.slug == slug]
        stmt = stmt.where(m.Product.category_id.in_(ids))
    if status := state.filters.get("status"):
        stmt = stmt.where(m.Product.is_active.is_(status == "active"))
    if stock := state.filters.get("stock"):
        # "Low" is the shop settings' threshold, the one the low-stock email uses (sold out counts as low).
        stmt = stmt.where(m.Product.stock.is_(None) if stock == "unlimited" else m.Product.stock.is_not(None))
        if stock == "low":
            stmt = stmt.where(m.Product.stock <= current_shop_settings().low_stock_threshold)
        elif stock == "out":
            stmt = stmt.where(m.Product.stock == 0)
    if term := state.q:
        like = f"%{term.lower()}%"
        stmt = stmt.where(or_(m.Product.name.ilike(like), m.Product.slug.ilike(like)))
    return stmt


PRODUCTS_CSV_HEADER = (
    "name",
    "slug",
    "category",
    "currency",
    "price",
    "stock",
    "active",
    "featured",
    "download_limit",
    "file",
    "file_sha256",
    "stripe_product_id",
    "stripe_price_id",
    "created_at",
)


def product_csv_row(product: m.Product) -> tuple[Any, ...]:
    return (
        product.name,
        product.slug,
        product.category.name if product.category else "",
        product.currency,
        plain_amount(product.price, product.currency),
        "" if product.stock is None else product.stock,
        "yes" if product.is_active else "no",
        "yes" if product.is_featured else "no",
        product.download_limit,
        product.digital_file_name,
        product.digital_file_sha256,
        product.stripe_product_id or "",
        product.stripe_price_id or "",
        product.created_at.isoformat(),
    )


async def all_categories(db: AsyncSession) -> list[m.Category]:
    return list(await db.scalars(select(m.Category).order_by(m.Category.position, m.Category.name)))


async def get_product(db: AsyncSession, product_id: UUID) -> m.Product:
    return await get_or_404(db, m.Product, product_id, "That product doesn't exist.")


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:160].strip("-")


def form_values(product: m.Product | None) -> dict[str, str]:
    """The form's fields as the admin would type them (prices as "12.50", unlimited stock as blank)."""
    if product is None:
        # A new product starts with the shop's default download limit (shop settings).
        return {"is_active": "on", "download_limit": str(current_shop_settings().download_limit)}
    return {
        "name": product.name,
        "slug": product.slug,
        "summary": product.summary,
        "description": product.description,
        "price": plain_amount(product.price, product.currency),
        "category_id": str(product.category_id or ""),
        "stock": "" if product.stock is None else str(product.stock),
        "seo_title": product.seo_title,
        "seo_description": product.seo_description,
        "download_limit": str(product.download_limit),
        "is_active": "on" if product.is_active else "",
        "is_featured": "on" if product.is_featured else "",
    }


def parse_product_form(form: dict[str, str], categories: list[m.Category]) -> ProductForm:
    """Validate the product form; raises ``FormError`` with every field's problem at once."""
    read = FormReader(form)
    name = read.text(
        "name", required="Give the product a name.", max_length=(160, "Keep the name under 160 characters.")
    )
    raw_slug = read.raw("slug")
    slug = slugify(raw_slug or name)
    if raw_slug and slug != raw_slug:
        read.error("slug", f"Use lower-case letters, digits and dashes, e.g. “{slug or 'my-product'}”.")
    elif not slug and name:
        read.error("slug", "Enter a slug: lower-case letters, digits and dashes.")
    summary = read.text("summary", max_length=(280, "Keep the summary under 280 characters."))
    description = read.text(
        "description", max_length=(50_000, "Keep the description under 50,000 characters."), multiline=True
    )
    if not read.raw("price"):
        read.error("price", "Enter a price, such as 12.50.")
    price = read.money("price", CURRENCY, "Enter a price such as 12.50 (at most two decimals).")
    if price is not None and price < 0:
        read.error("price", "A price can't be negative.")
    elif price is not None and price > MAX_PRICE:
        read.error("price", f"At most {format_money(MAX_PRICE, CURRENCY)}.")
    category_id = read.one_of("category_id", (c.id for c in categories), "Choose one of the listed categories.")
    stock = read.integer(
        "stock", "Enter a whole number of copies, or leave it blank for unlimited.", minimum=0, maximum=1_000_000
    )
    download_limit = read.integer(
        "download_limit",
        f"Enter how many downloads a buyer gets, from 1 to {MAX_DOWNLOAD_LIMIT}.",
        minimum=1,
        maximum=MAX_DOWNLOAD_LIMIT,
        default=current_shop_settings().download_limit,
    )
    seo_title = read.text("seo_title", max_length=(160, "Keep the SEO title under 160 characters."))
    seo_description = read.text("seo_description", max_length=(320, "Keep the SEO description under 320 characters."))
    read.done()
    return ProductForm(
        name=name,
        slug=slug,
        summary=summary,
        description=description,
        price=price or 0,
        category_id=category_id,
        stock=stock,
        seo_title=seo_title,
        seo_description=seo_description,
        download_limit=download_limit,
        is_active=read.checkbox("is_active"),
        is_featured=read.checkbox("is_featured"),
    )


def snapshot(product: m.Product) -> dict[str, Any]:
    return {field: getattr(product, field) for field in FIELDS}


async def _check_slug(db: AsyncSession, slug: str, product_id: UUID | None) -> None:
    clash = await db.scalar(select(m.Product.id).where(m.Product.slug == slug))
    if clash is not None and clash != product_id:
        raise FormError({"slug": f"Another product already uses the slug “{slug}”: choose another."})


async def _commit(db: AsyncSession, slug: str, *, flush_only: bool = False) -> None:
    try:
        await (db.flush() if flush_only else db.commit())
    except IntegrityError as exc:  # two admins saving the same slug at once
        await db.rollback()
        raise FormError({"slug": f"Another product already uses the slug “{slug}”: choose another."}) from exc


async def create_product(db: AsyncSession, form: ProductForm, *, actor: Actor) -> m.Product:
    """Create the product (not yet mirrored to Stripe) and commit."""
    values = asdict(form)
    await _check_slug(db, values["slug"], None)
    product = m.Product(**values, currency=CURRENCY, cover_image="img/logo.svg")
    db.add(product)
    await _commit(db, values["slug"], flush_only=True)  # a slug taken meanwhile is a form error too
    await record_audit(
        db,
        actor,
        "product.create",
        target=("product", product.id, product.name),
        summary=f"Created at {format_money(product.price, product.currency)}",
        after=snapshot(product),
    )
    await _commit(db, values["slug"])
    return product


async def update_product(db: AsyncSession, product: m.Product, form: ProductForm, *, actor: Actor) -> bool:
    """Apply the form's values and commit; returns whether anything changed."""
    values = asdict(form)
    await _check_slug(db, values["slug"], product.id)
    before, after = changes(snapshot(product), values)
    if not after:
        return False
    for field, value in values.items():
        setattr(product, field, value)
    if STRIPE_FIELDS & after.keys():
        product.stripe_synced_at = None
    parts = []
    if "price" in after:
        parts.append(f"price {format_money(before['price'], product.currency)} → {format_money(values['price'])}")
    if "is_active" in after:
        parts.append("activated" if values["is_active"] else "archived")
    other = [k for k in after if k not in {"price", "is_active"}]
    if other:
        parts.append("changed " + ", ".join(other))
    action = "product.archive" if after.get("is_active") is False else "product.update"
    await record_audit(
        db,
        actor,
        action,
        target=("product", product.id, product.name),
        summary="; ".join(parts).capitalize(),
        before=before,
        after=after,
    )
    if "stock" in after:
        await db.flush()
        await rearm_low_stock(db, [product.id])  # restocked above the threshold: the next crossing alerts again
    await _commit(db, values["slug"])
    return True


async def set_active(db: AsyncSession, ids: list[UUID], *, active: bool, actor: Actor) -> list[UUID]:
    """Archive (or activate) the products; archived ones leave the shop, their buyers keep their downloads.
    Returns the ids that changed. Never deletes: orders reference products."""
    products = list(await db.scalars(select(m.Product).where(m.Product.id.in_(ids), m.Product.is_active != active)))
    for product in products:
        await record_audit(
            db,
            actor,
            "product.activate" if active else "product.archive",
            target=("product", product.id, product.name),
            summary="Activated" if active else "Archived",
            before={"is_active": not active},
            after={"is_active": active},
        )
    changed = [p.id for p in products]
    if changed:
        await db.execute(
            update(m.Product).where(m.Product.id.in_(changed)).values(is_active=active, stripe_synced_at=None)
        )
    await db.commit()
    return changed


async def set_cover(db: AsyncSession, product: m.Product, key: str, *, actor: Actor) -> str | None:
    """Point the product at its new cover's thumbnails and commit; returns the previous cover's key."""
    old = product.cover_upload
    await record_audit(
        db,
        actor,
        "product.cover",
        target=("product", product.id, product.name),
        summary="Cover image uploaded",
        before={"cover_upload": old},
        after={"cover_upload": key},
    )
    product.cover_upload = key
    await db.commit()
    return old


@dataclass(frozen=True, slots=True)
class UploadedFile:
    stored: StoredFile
    filename: str
    content_type: str


async def set_digital_file(db: AsyncSession, product: m.Product, upload: UploadedFile, *, actor: Actor) -> str | None:
    """Switch the product to the newly stored file and commit; returns the previous file's key. Buyers' links
    serve whatever file the product has when they click."""
    old = product.digital_file
    before = {
        "file": product.digital_file_name,
        "size": product.digital_file_size,
        "sha256": product.digital_file_sha256,
    }
    product.digital_file = upload.stored.key
    product.digital_file_name = upload.filename
    product.digital_file_content_type = upload.content_type
    product.digital_file_size = upload.stored.size
    product.digital_file_sha256 = upload.stored.sha256
    await record_audit(
        db,
        actor,
        "product.file",
        target=("product", product.id, product.name),
        summary=f"File uploaded: {upload.filename}",
        before=before,
        after={"file": upload.filename, "size": upload.stored.size, "sha256": upload.stored.sha256},
    )
    await db.commit()
    return old
