"""The shop settings: read through one cached accessor, validated and saved (audited) by admins.

Reading: :func:`shop_settings` (async, refreshes this process's snapshot when another process announced a change)
or ``app.lib.shop_settings.current_shop_settings`` (sync, the snapshot as of this request or job). The web
middleware and the worker refresh once per request and per job, so sync readers (local time, templates) see a
change made on another node by their next request.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.audit.services import Actor, changes, record_audit
from app.lib.email_address import InvalidEmailError, clean_email
from app.lib.forms import FormReader
from app.lib.permissions import Role
from app.lib.runtime import Runtime
from app.lib.shop_settings import SHOP_SETTINGS, UNREAD, ShopSettings, announce_change, current_shop_settings

log = structlog.get_logger()

FIELDS = tuple(f.name for f in fields(ShopSettings))
MAX_DOWNLOAD_LIMIT = 1000  # the product form's bound too
MAX_LINK_LIFETIME_HOURS = 24 * 30
MAX_ALERT_RECIPIENTS = 20


async def load_shop_settings(db: AsyncSession) -> ShopSettings:
    """The settings as stored (defaults when no admin has saved them yet)."""
    row = await db.scalar(select(m.ShopSettingsRow).where(m.ShopSettingsRow.key == m.SHOP_SETTINGS_KEY))
    if row is None:
        return ShopSettings()
    values: dict[str, Any] = {name: getattr(row, name) for name in FIELDS}
    values["alert_recipients"] = tuple(row.alert_recipients or ())
    return ShopSettings(**values)


async def refresh_shop_settings(runtime: Runtime, *, version: object = UNREAD) -> ShopSettings:
    """Bring this process's snapshot up to date (one Redis GET when nothing changed, none when the caller read
    the version already: ``ShopSettingsCache.refresh``). Web middleware and jobs."""

    async def load() -> ShopSettings:
        async with runtime.db() as db:
            return await load_shop_settings(db)

    try:
        return await SHOP_SETTINGS.refresh(runtime.redis, load, version=version)
    except (SQLAlchemyError, OSError) as exc:
        # The database is down: keep serving the last snapshot (/readyz must still answer); the next request retries.
        log.warning("shop_settings.load_failed", error=type(exc).__name__)
        return SHOP_SETTINGS.current()


async def shop_settings(runtime: Runtime) -> ShopSettings:
    """The one cached accessor: the current settings, reloaded only when some process announced a change."""
    return await refresh_shop_settings(runtime)


def settings_form_values(values: ShopSettings) -> dict[str, str]:
    form = {name: str(value) for name, value in asdict(values).items()}
    form["alert_recipients"] = "\n".join(values.alert_recipients)
    return form


def parse_settings_form(form: dict[str, str]) -> ShopSettings:
    """Validate every field at once; raise ``FormError`` with one message per bad field (nothing is saved then)."""
    read = FormReader(form)

    def text(name: str, limit: int, label: str) -> str:
        return read.text(name, max_length=(limit, f"Keep the {label} under {limit:,} characters."), multiline=True)

    legal_name = text("legal_name", 200, "legal name")
    address = text("address", 1000, "address")
    gst_hst_number = text("gst_hst_number", 40, "GST/HST number")
    qst_number = text("qst_number", 40, "QST number")
    receipt_footer = text("receipt_footer", 2000, "receipt footer")
    support_email = read.raw("support_email")
    if support_email:
        try:
            support_email = clean_email(support_email)
        except InvalidEmailError as exc:
            read.error("support_email", str(exc))
    time_zone = read.raw("time_zone")
    if time_zone:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            read.error("time_zone", f"“{time_zone[:64]}” is not a time zone: use an IANA name such as America/Toronto.")
    download_limit = read.integer(
        "download_limit",
        f"Enter how many downloads a buyer gets, from 1 to {MAX_DOWNLOAD_LIMIT}.",
        minimum=1,
        maximum=MAX_DOWNLOAD_LIMIT,
        default=1,
        required=True,
    )
    lifetime = read.integer(
        "link_lifetime_hours",
        f"Enter a number of hours from 1 to {MAX_LINK_LIFETIME_HOURS}.",
        minimum=1,
        maximum=MAX_LINK_LIFETIME_HOURS,
        default=1,
        required=True,
    )
    threshold = read.integer(
        "low_stock_threshold",
        "Enter a whole number of units, 0 or more.",
        minimum=0,
        maximum=1_000_000,
        default=0,
        required=True,
    )
    recipients: list[str] = []
    for line in read.raw("alert_recipients").replace(",", "\n").splitlines():
        if not line.strip():
            continue
        try:
            recipient = clean_email(line)
        except InvalidEmailError:
            read.error("alert_recipients", f"“{line.strip()[:80]}” is not an email address: one address per line.")
            break
        if recipient not in recipients:
            recipients.append(recipient)
    if len(recipients) > MAX_ALERT_RECIPIENTS:
        read.error("alert_recipients", f"List at most {MAX_ALERT_RECIPIENTS} addresses.")
    read.done()
    return ShopSettings(
        legal_name=legal_name,
        address=address,
        gst_hst_number=gst_hst_number,
        qst_number=qst_number,
        support_email=support_email,
        time_zone=time_zone,
        receipt_footer=receipt_footer,
        download_limit=download_limit,
        link_lifetime_hours=lifetime,
        low_stock_threshold=threshold,
        alert_recipients=tuple(recipients),
    )


async def save_shop_settings(db: AsyncSession, redis: Redis | None, values: ShopSettings, *, actor: Actor) -> bool:
    """Store ``values`` with an audit entry in one transaction, then tell every process. False when nothing changed."""
    row = await db.scalar(
        select(m.ShopSettingsRow).where(m.ShopSettingsRow.key == m.SHOP_SETTINGS_KEY).with_for_update()
    )
    before_values = await load_shop_settings(db) if row is not None else ShopSettings()
    before, after = changes(
        {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(before_values).items()},
        {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(values).items()},
    )
    if not after:
        return False
    if row is None:
        row = m.ShopSettingsRow(key=m.SHOP_SETTINGS_KEY)
        db.add(row)
    for name in FIELDS:
        value = getattr(values, name)
        setattr(row, name, list(value) if isinstance(value, tuple) else value)
    await db.flush()
    await record_audit(
        db,
        actor,
        "settings.update",
        target=("settings", m.SHOP_SETTINGS_KEY, "Shop settings"),
        summary="Changed " + ", ".join(after),
        before=before,
        after=after,
    )
    await db.commit()
    await announce_change(redis)
    return True


async def alert_recipients(db: AsyncSession) -> list[str]:
    """Who gets the admin alert emails: the settings' list, or every active admin when it is empty."""
    # The snapshot is fresh: the web middleware and the worker refresh it before any request or job runs.
    configured = list(current_shop_settings().alert_recipients)
    if configured:
        return configured
    admins = await db.scalars(select(m.User.email).where(m.User.role == Role.ADMIN.value, m.User.is_active.is_(True)))
    return list(admins)
