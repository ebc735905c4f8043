from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column

from app.lib.permissions import Role


class User(UUIDv7AuditBase):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)  # stored lower-case
    name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.CUSTOMER.value, index=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    # Bumped on password change/reset and deactivation: sessions created under an older epoch stop working.
    session_epoch: Mapped[int] = mapped_column(default=0)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # When the owner proved the inbox (a verification link, or created by the seed or an operator). Unverified
    # accounts can sign in and buy; anything that trusts the address (changing it, for one) waits for this.
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Stripe customer, created once, the first time the user subscribes.
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    # Set by an admin for verified holders/partners: plans offer them their member price tier.
    holder_pricing: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The member's billing province (Canada), chosen when subscribing: it selects the membership's sales tax.
    billing_province: Mapped[str | None] = mapped_column(String(2), default=None)

    @property
    def role_enum(self) -> Role:
        return Role(self.role)

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    @property
    def display_name(self) -> str:
        return self.name or self.email.split("@", 1)[0]


class PasswordResetToken(UUIDv7AuditBase):
    __tablename__ = "password_reset_tokens"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class EmailVerificationToken(UUIDv7AuditBase):
    """A single-use link proving ``email`` belongs to the account: bound to the address it was sent to, so a link
    for an old address cannot verify a new one."""

    __tablename__ = "email_verification_tokens"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    # "verify": prove the account's address; "change": move the account to ``email`` once its owner proves it.
    purpose: Mapped[str] = mapped_column(String(12), default="verify", server_default="verify")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
