"""What a customer can do about their own account: name and email, where they are signed in, their data, and
leaving. Each change that matters is proved (current password, a link to the new address) and told.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import stripe
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.notifications.services import EmailService
from app.lib.email_address import email_problem, normalise_email
from app.lib.exceptions import FormError
from app.lib.passwords import hash_password_async, verify_password_async
from app.lib.settings import Settings
from app.lib.tokens import new_token

log = structlog.get_logger()

SESSIONS_KEY = "cartwright:account-sessions:{user_id}"
SESSION_MARKER_KEY = "device"  # in the session: which entry of the account's list this browser is
CHANGE_SENT = "If that address can be used, we've sent it a link. Your email changes when you open it."


class SelfService:
    def __init__(self, db: AsyncSession, settings: Settings, emails: EmailService) -> None:
        self.db = db
        self.settings = settings
        self.emails = emails

    async def _user(self, user: m.User) -> m.User:
        row = await self.db.get(m.User, user.id)
        assert row is not None
        return row

    async def rename(self, user: m.User, name: str) -> m.User:
        if len(name) > 120:
            raise FormError({"name": "Use at most 120 characters."})
        row = await self._user(user)
        row.name = name.strip()
        await self.db.commit()
        return row

    async def request_email_change(self, user: m.User, *, new_email: str, password: str) -> None:
        """Email a single-use link to ``new_email``; the account moves there only when it is opened.

        Needs the current password and a confirmed current address (an unconfirmed account could otherwise be
        walked to any address). The answer is the same whether or not another account has the address."""
        row = await self._user(user)
        errors: dict[str, str] = {}
        if row.email_verified_at is None:
            errors["email"] = "Confirm your current email first: open the link we sent you, or ask for a new one."
        elif problem := email_problem(new_email):
            errors["email"] = problem
        elif normalise_email(new_email) == row.email:
            errors["email"] = "That is already your email."
        if not await verify_password_async(row.password_hash, password):
            errors["password"] = "That is not your current password."
        if errors:
            raise FormError(errors)
        new_email = normalise_email(new_email)
        # One pending change at a time: an older link must not move the account somewhere else later.
        await self.db.execute(
            delete(m.EmailVerificationToken).where(
                m.EmailVerificationToken.user_id == row.id,
                m.EmailVerificationToken.purpose == "change",
                m.EmailVerificationToken.used_at.is_(None),
            )
        )
        taken = await self.db.scalar(select(m.User.id).where(m.User.email == new_email))
        if taken is not None:
            await self.db.commit()
            return
        token, token_hash = new_token()
        expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.verify_email_token_seconds)
        self.db.add(
            m.EmailVerificationToken(
                user_id=row.id, email=new_email, purpose="change", token_hash=token_hash, expires_at=expires_at
            )
        )
        await self.db.commit()
        await self.emails.send(
            "confirm_new_email",
            new_email,
            {
                "name": row.display_name,
                "verify_url": f"{self.settings.base_url}/verify-email/{token}",
                "valid_days": max(1, self.settings.verify_email_token_seconds // 86400),
            },
        )

    async def export(self, user: m.User) -> bytes:
        """A zip of what we hold about the account: JSON for machines, CSV for spreadsheets."""
        row = await self._user(user)
        orders = list(
            await self.db.scalars(select(m.Order).where(m.Order.user_id == row.id).order_by(m.Order.created_at))
        )
        subscriptions = list(await self.db.scalars(select(m.Subscription).where(m.Subscription.user_id == row.id)))
        credits = list(
            await self.db.scalars(
                select(m.CreditEntry).where(m.CreditEntry.user_id == row.id).order_by(m.CreditEntry.created_at)
            )
        )
        bookings = list(
            await self.db.scalars(select(m.Booking).where(m.Booking.user_id == row.id).order_by(m.Booking.created_at))
        )
        data: dict[str, list[dict[str, Any]]] = {
            "account": [
                {
                    "email": row.email,
                    "name": row.name,
                    "created_at": row.created_at,
                    "email_confirmed_at": row.email_verified_at,
                }
            ],
            "orders": [
                {
                    "number": o.number,
                    "placed_at": o.created_at,
                    "status": o.status,
                    "currency": o.currency,
                    "subtotal": o.subtotal,
                    "discount": o.discount_total,
                    "tax": o.tax_total,
                    "total": o.total,
                    "refunded": o.amount_refunded,
                    "billing_name": o.billing_name,
                    "region": o.region,
                    "items": "; ".join(f"{line.quantity} x {line.product_name}" for line in o.lines),
                }
                for o in orders
            ],
            "subscriptions": [
                {
                    "plan": s.plan.name if s.plan else "",
                    "status": s.status,
                    "started_at": s.created_at,
                    "current_period_end": s.current_period_end,
                    "canceled_at": s.canceled_at,
                }
                for s in subscriptions
            ],
            "credits": [
                {"at": c.created_at, "kind": c.kind, "amount": c.amount, "credit_type_id": c.credit_type_id}
                for c in credits
            ],
            "bookings": [{"booked_at": b.created_at, "status": b.status, "slot_id": b.slot_id} for b in bookings],
        }
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, rows in data.items():
                archive.writestr(f"{name}.json", json.dumps(rows, default=str, indent=2))
                text = io.StringIO()
                if rows:
                    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
                archive.writestr(f"{name}.csv", text.getvalue())
        return buffer.getvalue()

    async def delete_account(self, user: m.User, *, password: str, stripe_client: stripe.StripeClient) -> None:
        """Close the account: subscriptions end now, personal data is anonymised, the records the law requires
        (orders, their tax and invoices) are kept without the person, and nobody can sign in as it again."""
        row = await self._user(user)
        if not await verify_password_async(row.password_hash, password):
            raise FormError({"password": "That is not your current password."})
        subscriptions = list(
            await self.db.scalars(
                select(m.Subscription).where(
                    m.Subscription.user_id == row.id,
                    m.Subscription.status.not_in(["canceled", "incomplete_expired"]),
                )
            )
        )
        for sub in subscriptions:  # Stripe first: if it fails, nothing here has changed
            await stripe_client.v1.subscriptions.cancel_async(
                sub.stripe_subscription_id, options={"idempotency_key": f"close-account:{sub.stripe_subscription_id}"}
            )
        if row.stripe_customer_id:
            await stripe_client.v1.customers.update_async(
                row.stripe_customer_id,
                params={"name": "", "email": "", "phone": "", "description": "Account closed", "metadata": {}},
            )
        gone = f"deleted-{row.id.hex}@invalid"
        await self.db.execute(update(m.Order).where(m.Order.user_id == row.id).values(email=gone))
        await self.db.execute(delete(m.CartItem).where(m.CartItem.user_id == row.id))
        await self.db.execute(delete(m.EmailVerificationToken).where(m.EmailVerificationToken.user_id == row.id))
        await self.db.execute(delete(m.PasswordResetToken).where(m.PasswordResetToken.user_id == row.id))
        row.email = gone
        row.name = ""
        row.password_hash = await hash_password_async(secrets.token_urlsafe(32))  # no password opens it
        row.is_active = False
        row.email_verified_at = None
        row.session_epoch += 1
        await self.db.commit()
        log.info("account.deleted", user=str(row.id))


# --- where the account is signed in ---------------------------------------------------------------------------


async def remember_device(redis: Redis, user_id: UUID, *, ip: str, agent: str, lifetime: int) -> str:
    """Record a sign-in for the account's list of sessions; returns the marker the session keeps."""
    marker = secrets.token_hex(8)
    now = datetime.now(UTC)
    entry = {
        "ip": ip,
        "agent": agent[:200],
        "at": now.isoformat(),
        "until": (now + timedelta(seconds=lifetime)).isoformat(),
    }
    key = SESSIONS_KEY.format(user_id=user_id)
    try:
        await redis.hset(key, marker, json.dumps(entry))
        await redis.expire(key, max(lifetime, 30 * 86400))
    except RedisError:
        log.warning("account_sessions.unavailable")
    return marker


async def devices(redis: Redis, user_id: UUID) -> list[dict[str, Any]]:
    """The account's sessions still within their lifetime, newest first."""
    try:
        raw = await redis.hgetall(SESSIONS_KEY.format(user_id=user_id))
    except RedisError:
        return []
    now = datetime.now(UTC)
    found = []
    for marker, value in raw.items():
        entry = json.loads(value)
        if datetime.fromisoformat(entry["until"]) > now:
            found.append({"marker": marker.decode() if isinstance(marker, bytes) else marker, **entry})
    return sorted(found, key=lambda e: e["at"], reverse=True)


async def sign_out_everywhere(db: AsyncSession, redis: Redis, user: m.User, *, keep: str | None) -> int:
    """End every other session of the account (the epoch every session carries moves on); the caller re-stamps
    its own. Returns the new epoch."""
    row = await db.get(m.User, user.id)
    assert row is not None
    row.session_epoch += 1
    await db.commit()
    key = SESSIONS_KEY.format(user_id=user.id)
    try:
        for marker in await redis.hkeys(key):
            name = marker.decode() if isinstance(marker, bytes) else marker
            if name != keep:
                await redis.hdel(key, name)
    except RedisError:
        log.warning("account_sessions.unavailable")
    return row.session_epoch
