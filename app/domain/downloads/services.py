"""Purchased-file downloads: entitlements granted and revoked with their order, signed expiring links, counted
downloads and fresh links by email.

A link is ``/downloads/<token>``; the token carries the entitlement id and an expiry, signed with HMAC-SHA256 under
``SECRET_KEY``. Possession of a valid link is the credential (guests have no account), so nothing about the link
is stored: the entitlement row holds the limit, the count and the revocation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import mimetypes
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, cast
from uuid import UUID

import structlog
from redis.asyncio import Redis
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.notifications.services import EmailService
from app.lib.email_address import normalise_email
from app.lib.exceptions import ApplicationError, NotFoundError, NotYoursError
from app.lib.settings import Settings
from app.lib.shop_settings import current_shop_settings
from app.lib.storage import (
    ObjectMissingError,
    Storage,
    StorageKeyError,
    StorageUnavailableError,
    StoredObject,
)

log = structlog.get_logger()

DEFAULT_LINK_TTL = timedelta(hours=24)  # a fresh shop's default; the shop settings' link lifetime rules
DOWNLOAD_PATH = "/downloads"
RESEND_PATH = "/downloads/resend"
RESEND_LIMIT = 3  # fresh-link emails per address
RESEND_WINDOW_SECONDS = 60 * 60

# Token layout (before base64url): 16-byte entitlement id | 8-byte expiry (Unix seconds) | 32-byte HMAC-SHA256.
_TOKEN_CONTEXT = b"cartwright:download-link:v1:"  # domain separation from anything else signed with SECRET_KEY
_ID_LEN, _EXPIRY_LEN, _MAC_LEN = 16, 8, 32
_TOKEN_LEN = 75  # len(base64url(56 bytes)) without padding

# Compressed archives: mimetypes reports ("application/x-tar", "gzip") for .tar.gz. Sending that as a
# Content-Encoding would make the browser unpack it and save a .tar under a .tar.gz name, so describe the file itself.
_ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


class DownloadStatus(StrEnum):
    AVAILABLE = "available"
    USED_UP = "used-up"
    REFUNDED = "refunded"
    SUSPENDED = "suspended"

    @property
    def label(self) -> str:
        return {
            DownloadStatus.AVAILABLE: "Available",
            DownloadStatus.USED_UP: "Used up",
            DownloadStatus.REFUNDED: "Refunded",
            DownloadStatus.SUSPENDED: "Suspended",
        }[self]


def status_of(entitlement: m.Entitlement) -> DownloadStatus:
    if entitlement.revoked_at is not None:
        return DownloadStatus.REFUNDED
    if entitlement.suspended_at is not None:
        return DownloadStatus.SUSPENDED
    if entitlement.downloads_left <= 0:
        return DownloadStatus.USED_UP
    return DownloadStatus.AVAILABLE


class RefusalReason(StrEnum):
    EXPIRED = "expired"
    USED_UP = "used-up"
    REFUNDED = "refunded"
    SUSPENDED = "suspended"  # the payment is disputed with the bank (open, or lost)
    UNAVAILABLE = "unavailable"  # our fault: the file is missing or its storage key is unusable


_REFUSAL_STATUS = {
    RefusalReason.EXPIRED: 410,
    RefusalReason.USED_UP: 403,
    RefusalReason.REFUNDED: 410,
    RefusalReason.SUSPENDED: 403,
    RefusalReason.UNAVAILABLE: 500,
}


class DownloadRefusedError(ApplicationError):
    """A genuine link that cannot be honoured; the controller shows a page that says why and what to do next."""

    def __init__(self, reason: RefusalReason, entitlement: m.Entitlement) -> None:
        messages = {
            RefusalReason.EXPIRED: "This link has expired",
            RefusalReason.USED_UP: f"You've used all {entitlement.download_limit} downloads",
            RefusalReason.REFUNDED: "This purchase was refunded",
            RefusalReason.SUSPENDED: "Downloads for this purchase are suspended",
            RefusalReason.UNAVAILABLE: "This file isn't available right now",
        }
        super().__init__(messages[reason])
        self.reason = reason
        self.entitlement = entitlement
        self.status_code = _REFUSAL_STATUS[reason]


@dataclass(frozen=True)
class DownloadFile:
    """What to send: the stored object, opened (so it exists), and how to present it."""

    stored: StoredObject
    filename: str
    media_type: str


@dataclass(frozen=True)
class DownloadItem:
    """One row of "Your downloads": the entitlement, its order number, its status and a fresh link if usable."""

    entitlement: m.Entitlement
    order_number: str
    status: DownloadStatus
    url: str | None


def media_type_for(filename: str) -> str:
    media_type, encoding = mimetypes.guess_type(filename, strict=False)
    if encoding is not None:
        return _ENCODED_TYPES.get(encoding, "application/octet-stream")
    return media_type or "application/octet-stream"


def support_address(settings: Settings) -> str:
    return parseaddr(settings.mail_from)[1] or settings.mail_from


class ResendThrottle:
    """At most ``limit`` fresh-link emails per address per window, counted in Redis under a hashed key."""

    def __init__(self, redis: Redis, *, limit: int = RESEND_LIMIT, window: int = RESEND_WINDOW_SECONDS) -> None:
        self.redis = redis
        self.limit = limit
        self.window = window

    @staticmethod
    def _key(email: str) -> str:
        # Hashed so the keyspace holds no email addresses.
        return f"cartwright:download-resend:{hashlib.sha256(email.encode()).hexdigest()[:32]}"

    async def allow(self, email: str) -> bool:
        key = self._key(normalise_email(email))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=self.window, nx=True)  # the window starts at the first request, it does not slide
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count) <= self.limit


class DownloadService:
    """Entitlements and download links.

    ``grant_for_order`` and ``revoke_for_order`` run inside the caller's transaction (fulfilment, refunds): they add
    and flush but never commit. ``consume`` and ``email_fresh_links`` serve a request of their own and commit.
    """

    def __init__(self, db: AsyncSession, settings: Settings, storage: Storage | None = None) -> None:
        self.db = db
        self.settings = settings
        self.storage = storage  # only sending a file needs it (the runtime's): granting and linking do not

    # --- granting and revoking (called by fulfilment and refunds) -----------------------------------------------------

    async def grant_for_order(self, order: m.Order) -> list[m.Entitlement]:
        """One entitlement per downloadable line of ``order``, in line order. Idempotent and safe to race.

        An existing entitlement for a line is returned as it is (count and revocation untouched). Two fulfilments
        racing insert with ``ON CONFLICT DO NOTHING`` on the unique ``order_line_id``, so neither fails.
        """
        lines = list(
            await self.db.scalars(
                select(m.OrderLine)
                .where(m.OrderLine.order_id == order.id, m.OrderLine.has_download.is_(True))
                .order_by(m.OrderLine.position, m.OrderLine.id)
            )
        )
        if not lines:
            return []
        insert = postgres_insert if self.db.get_bind().dialect.name == "postgresql" else sqlite_insert
        rows = [
            {
                "order_id": order.id,
                "order_line_id": line.id,
                "product_id": line.product_id,
                "user_id": order.user_id,
                "email": order.email,
                "product_name": line.product_name,
                "download_limit": line.download_limit,
            }
            for line in lines
        ]
        await self.db.execute(insert(m.Entitlement).on_conflict_do_nothing(index_elements=["order_line_id"]), rows)
        granted = await self.db.scalars(
            select(m.Entitlement).where(m.Entitlement.order_line_id.in_([line.id for line in lines]))
        )
        by_line = {entitlement.order_line_id: entitlement for entitlement in granted}
        return [by_line[line.id] for line in lines]

    async def revoke_for_order(self, order: m.Order) -> int:
        """Revoke every entitlement of ``order`` (refund). Returns how many were newly revoked; 0 when run again."""
        result = await self.db.execute(
            update(m.Entitlement)
            .where(m.Entitlement.order_id == order.id, m.Entitlement.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        return cast("CursorResult[Any]", result).rowcount

    async def restore_for_order(self, order: m.Order, *, revoked_since: datetime) -> int:
        """Undo a refund's revocation (the refund failed): entitlements revoked at or after ``revoked_since``."""
        result = await self.db.execute(
            update(m.Entitlement)
            .where(m.Entitlement.order_id == order.id, m.Entitlement.revoked_at >= revoked_since)
            .values(revoked_at=None)
        )
        return cast("CursorResult[Any]", result).rowcount

    # --- signed links -------------------------------------------------------------------------------------------------

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.settings.secret_key.encode(), _TOKEN_CONTEXT + payload, hashlib.sha256).digest()

    def make_token(self, entitlement_id: UUID, expires_at: datetime) -> str:
        payload = entitlement_id.bytes + int(expires_at.timestamp()).to_bytes(_EXPIRY_LEN, "big")
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def read_token(self, token: str) -> tuple[UUID, datetime] | None:
        """``(entitlement_id, expires_at)`` for a token we signed, expired or not; ``None`` for anything else."""
        if len(token) != _TOKEN_LEN:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=")
        except (ValueError, binascii.Error):
            return None
        # Only the canonical spelling: base64 decoders tolerate junk that would give one link many names.
        if len(raw) != _ID_LEN + _EXPIRY_LEN + _MAC_LEN or base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode():
            return None
        payload, mac = raw[: _ID_LEN + _EXPIRY_LEN], raw[_ID_LEN + _EXPIRY_LEN :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        expires_at = datetime.fromtimestamp(int.from_bytes(payload[_ID_LEN:], "big"), UTC)
        return UUID(bytes=payload[:_ID_LEN]), expires_at

    def signed_url(self, entitlement: m.Entitlement, *, ttl: timedelta | None = None) -> str:
        """Absolute link to download ``entitlement``'s file, valid for ``ttl`` (the shop settings' link lifetime)."""
        token = self.make_token(entitlement.id, datetime.now(UTC) + (ttl or current_shop_settings().link_lifetime))
        return f"{self.settings.base_url}{DOWNLOAD_PATH}/{token}"

    # --- the customer's list ------------------------------------------------------------------------------------------

    async def for_user(self, user: m.User) -> list[m.Entitlement]:
        """The user's entitlements, newest first (only rows tied to the account, never matched by email)."""
        return [item.entitlement for item in await self.items_for_user(user, with_links=False)]

    async def items_for_user(self, user: m.User, *, with_links: bool = True) -> list[DownloadItem]:
        rows = await self.db.execute(
            select(m.Entitlement, m.Order.number)
            .join(m.Order, m.Order.id == m.Entitlement.order_id)
            .where(m.Entitlement.user_id == user.id)
            .order_by(m.Entitlement.created_at.desc(), m.Entitlement.id.desc())
        )
        return [self._item(entitlement, number, with_link=with_links) for entitlement, number in rows]

    async def item_for_user(self, entitlement_id: UUID, user: m.User) -> DownloadItem | None:
        """One of the user's entitlements with a fresh link; ``None`` if it is not theirs (callers answer 404)."""
        row = (
            await self.db.execute(
                select(m.Entitlement, m.Order.number)
                .join(m.Order, m.Order.id == m.Entitlement.order_id)
                .where(m.Entitlement.id == entitlement_id, m.Entitlement.user_id == user.id)
            )
        ).first()
        if row is None:
            return None
        return self._item(row[0], row[1], with_link=True)

    def _item(self, entitlement: m.Entitlement, order_number: int, *, with_link: bool) -> DownloadItem:
        status = status_of(entitlement)
        url = self.signed_url(entitlement) if with_link and status is DownloadStatus.AVAILABLE else None
        return DownloadItem(entitlement=entitlement, order_number=f"#{order_number}", status=status, url=url)

    # --- downloading --------------------------------------------------------------------------------------------------

    async def consume(self, token: str, *, user: m.User | None) -> DownloadFile:
        """Check the link, count one download and return the file to stream. Commits the count.

        Raises ``NotFoundError`` for a link we did not sign, or one that belongs to another signed-in customer
        (no hint that it exists); ``DownloadRefusedError`` for an expired, used-up, refunded or missing-file link.
        The count is taken with one conditional UPDATE, so concurrent clicks on the last download cannot both win.
        """
        parsed = self.read_token(token)
        if parsed is None:
            raise NotFoundError("That download link isn't valid. Check that you copied all of it.")
        entitlement_id, expires_at = parsed
        entitlement = await self.db.get(m.Entitlement, entitlement_id)
        if entitlement is None:
            raise NotFoundError("That download link isn't valid. Check that you copied all of it.")
        # Anyone holding the link may use it (guests have no account), but a signed-in customer never gets
        # another customer's purchase: to them it does not exist.
        if user is not None and entitlement.user_id is not None and entitlement.user_id != user.id:
            raise NotYoursError(
                "That download link isn't valid. Check that you copied all of it.",
                resource="entitlement",
                object_id=entitlement.id,
            )
        if expires_at <= datetime.now(UTC):
            raise DownloadRefusedError(RefusalReason.EXPIRED, entitlement)
        if entitlement.revoked_at is not None:
            raise DownloadRefusedError(RefusalReason.REFUNDED, entitlement)
        if entitlement.suspended_at is not None:
            raise DownloadRefusedError(RefusalReason.SUSPENDED, entitlement)
        if entitlement.downloads_left <= 0:
            raise DownloadRefusedError(RefusalReason.USED_UP, entitlement)
        # Opened before counting: our missing file must not cost the customer a download.
        file = await self._file_for(entitlement)

        now = datetime.now(UTC)
        result = await self.db.execute(
            update(m.Entitlement)
            .where(
                m.Entitlement.id == entitlement.id,
                m.Entitlement.revoked_at.is_(None),
                m.Entitlement.suspended_at.is_(None),
                m.Entitlement.download_count < m.Entitlement.download_limit,
            )
            .values(download_count=m.Entitlement.download_count + 1, last_downloaded_at=now)
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", result).rowcount != 1:
            await self.db.rollback()  # lost the race for the last download, or refunded or disputed meanwhile
            await self.db.refresh(entitlement)  # so the page shows the current count
            state = (
                await self.db.execute(
                    select(m.Entitlement.revoked_at, m.Entitlement.suspended_at).where(
                        m.Entitlement.id == entitlement.id
                    )
                )
            ).one()
            if state.revoked_at is not None:
                reason = RefusalReason.REFUNDED
            elif state.suspended_at is not None:
                reason = RefusalReason.SUSPENDED
            else:
                reason = RefusalReason.USED_UP
            raise DownloadRefusedError(reason, entitlement)
        await self.db.commit()
        log.info("downloads.counted", entitlement_id=str(entitlement.id), count=entitlement.download_count + 1)
        return file

    async def _file_for(self, entitlement: m.Entitlement) -> DownloadFile:
        product = entitlement.product
        key = product.digital_file if product is not None else None
        if not key:
            log.error("downloads.no_file", entitlement_id=str(entitlement.id), product_id=str(entitlement.product_id))
            raise DownloadRefusedError(RefusalReason.UNAVAILABLE, entitlement)
        assert self.storage is not None, "DownloadService needs the runtime's storage to send a file"
        try:
            stored = await self.storage.open(key)
        except StorageKeyError as exc:
            log.error("downloads.bad_storage_key", entitlement_id=str(entitlement.id), key=key, error=str(exc))
            raise DownloadRefusedError(RefusalReason.UNAVAILABLE, entitlement) from exc
        except ObjectMissingError as exc:
            log.error("downloads.file_missing", entitlement_id=str(entitlement.id), key=key, storage=self.storage.url)
            raise DownloadRefusedError(RefusalReason.UNAVAILABLE, entitlement) from exc
        except StorageUnavailableError as exc:
            log.error("downloads.storage_unavailable", entitlement_id=str(entitlement.id), error=str(exc))
            raise DownloadRefusedError(RefusalReason.UNAVAILABLE, entitlement) from exc
        # An uploaded file keeps the name and type it was uploaded with; a seeded one is named by its key.
        filename = (product.digital_file_name if product is not None else "") or PurePosixPath(key).name
        media_type = (product.digital_file_content_type if product is not None else "") or media_type_for(filename)
        if media_type == "application/octet-stream" or "/" not in media_type:
            media_type = media_type_for(filename)
        return DownloadFile(stored=stored, filename=filename, media_type=media_type)

    # --- fresh links by email (guests) --------------------------------------------------------------------------------

    async def email_fresh_links(self, email: str, *, emails: EmailService, throttle: ResendThrottle) -> bool:
        """Email fresh links for every usable entitlement bought with ``email``. Commits (through ``emails``).

        Returns whether an email was sent; callers must not show it: the page says the same either way, so the form
        reveals nothing about who bought what. Throttled per address before the look-up, for the same reason.
        """
        address = normalise_email(email)
        if not await throttle.allow(address):
            log.info("downloads.resend_throttled")
            return False
        rows = await self.db.execute(
            select(m.Entitlement, m.Order.number)
            .join(m.Order, m.Order.id == m.Entitlement.order_id)
            .where(
                func.lower(m.Entitlement.email) == address,
                m.Entitlement.revoked_at.is_(None),
                m.Entitlement.suspended_at.is_(None),
                m.Entitlement.download_count < m.Entitlement.download_limit,
            )
            .order_by(m.Entitlement.created_at.desc(), m.Entitlement.id.desc())
            .limit(100)
        )
        items = [self._item(entitlement, number, with_link=True) for entitlement, number in rows]
        if not items:
            return False
        await self._send_links(address, items, emails)
        return True

    async def reissue_for_order(self, order: m.Order, *, emails: EmailService) -> list[m.Entitlement]:
        """Support's "fresh links": every download of the order not revoked gets its full allowance back, and the
        buyer an email with new links. Commits (through ``emails``). Returns the entitlements reissued."""
        entitlements = list(
            await self.db.scalars(
                select(m.Entitlement)
                .where(
                    m.Entitlement.order_id == order.id,
                    m.Entitlement.revoked_at.is_(None),
                    m.Entitlement.suspended_at.is_(None),
                )
                .order_by(m.Entitlement.created_at)
            )
        )
        if not entitlements:
            return []
        for entitlement in entitlements:
            entitlement.download_count = 0
        await self.db.flush()
        items = [self._item(e, order.number, with_link=True) for e in entitlements]
        await self._send_links(order.email, items, emails)
        return entitlements

    async def _send_links(self, address: str, items: list[DownloadItem], emails: EmailService) -> None:
        await emails.send(
            "download_links",
            address,
            {
                "items": [
                    {
                        "product_name": item.entitlement.product_name,
                        "order_number": item.order_number,
                        "url": item.url,
                        "downloads_left": item.entitlement.downloads_left,
                        "download_limit": item.entitlement.download_limit,
                    }
                    for item in items
                ],
                "valid_hours": current_shop_settings().link_lifetime_hours,
                "resend_url": f"{self.settings.base_url}{RESEND_PATH}",
            },
        )
