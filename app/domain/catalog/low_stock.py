"""Telling the admins a limited product is running out: one email per crossing of the low-stock threshold.

A sale that leaves a product at or below the shop settings' ``low_stock_threshold`` emails the alert recipients,
once: the notice ``low-stock:<product id>`` is claimed in ``sent_notices`` (the first writer's insert wins), so two
fulfilments crossing the line at the same moment, and every later sale below it, send nothing more. When the stock
is back above the threshold (an admin restocked, or held units came back) the notice is deleted: the next crossing
emails again.
"""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

import structlog
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.notifications.services import EmailService, claim_notice
from app.domain.settings.services import alert_recipients
from app.lib.shop_settings import current_shop_settings

log = structlog.get_logger()

NOTICE_KIND = "low_stock"


def notice_key(product_id: UUID) -> str:
    return f"low-stock:{product_id}"


def is_low(stock: int | None, threshold: int | None = None) -> bool:
    """A limited product at or below the threshold (unlimited products never run low)."""
    limit = current_shop_settings().low_stock_threshold if threshold is None else threshold
    return stock is not None and stock <= limit


async def stage_low_stock_alerts(
    db: AsyncSession, mailer: EmailService, product_ids: Collection[UUID], *, base_url: str
) -> list[m.EmailMessage]:
    """Within the caller's transaction, after the stock moved down: claim the notice of every product now at or
    below the threshold and stage one email per alert recipient. Returns the emails to dispatch after the commit
    (a rollback takes the claim back with it)."""
    if not product_ids:
        return []
    threshold = current_shop_settings().low_stock_threshold
    low = list(
        await db.scalars(
            select(m.Product)
            .where(m.Product.id.in_(list(product_ids)), m.Product.stock.is_not(None), m.Product.stock <= threshold)
            .order_by(m.Product.name)
            .execution_options(populate_existing=True)
        )
    )
    emails: list[m.EmailMessage] = []
    recipients: list[str] | None = None
    for product in low:
        if not await claim_notice(db, notice_key(product.id), NOTICE_KIND):
            continue  # told already for this crossing (or another fulfilment is telling them right now)
        recipients = await alert_recipients(db) if recipients is None else recipients
        context = {
            "product": product,
            "stock": product.stock,
            "threshold": threshold,
            "admin_url": f"{base_url}/admin/products/{product.id}",
            "low_stock_url": f"{base_url}/admin/products?stock=low",
        }
        emails += [mailer.stage("low_stock_admin", address, context) for address in recipients]
        log.info("stock.low", product=str(product.id), stock=product.stock, threshold=threshold)
    return emails


async def rearm_low_stock(db: AsyncSession, product_ids: Collection[UUID]) -> None:
    """Within the caller's transaction, after the stock moved up: forget the notice of every product now above the
    threshold (or unlimited), so its next crossing emails again."""
    if not product_ids:
        return
    threshold = current_shop_settings().low_stock_threshold
    above = list(
        await db.scalars(
            select(m.Product.id).where(
                m.Product.id.in_(list(product_ids)), or_(m.Product.stock.is_(None), m.Product.stock > threshold)
            )
        )
    )
    if above:
        await db.execute(delete(m.SentNotice).where(m.SentNotice.key.in_([notice_key(i) for i in above])))
