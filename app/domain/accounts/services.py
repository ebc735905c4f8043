"""Account rules: registration with email verification, sign-in with throttling, password reset and change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.accounts.lockout import LoginThrottle
from app.domain.notifications.services import EmailService
from app.lib.email_address import email_problem, normalise_email
from app.lib.exceptions import FormError
from app.lib.passwords import hash_password_async, needs_rehash, password_problem, verify_password_async
from app.lib.permissions import Role
from app.lib.settings import Settings
from app.lib.tokens import hash_token, new_token

BAD_LOGIN = "Email or password is incorrect."


@dataclass(frozen=True)
class SignIn:
    user: m.User


class AccountService:
    def __init__(self, db: AsyncSession, settings: Settings, emails: EmailService) -> None:
        self.db = db
        self.settings = settings
        self.emails = emails

    async def get_by_email(self, email: str) -> m.User | None:
        return await self.db.scalar(select(m.User).where(m.User.email == normalise_email(email)))

    async def create_user(
        self, *, email: str, password: str, name: str = "", role: Role = Role.CUSTOMER, verified: bool
    ) -> m.User:
        """Create an account after validating email and password; raises FormError with field errors.

        ``verified``: the seed and operators vouch for the address; a sign-up proves it with a link later.
        """
        self._check_new_account(email=email, password=password, name=name)
        email = normalise_email(email)
        if await self.get_by_email(email) is not None:
            raise FormError({"email": "An account with this email already exists."})
        user = await self._insert_user(
            email=email,
            password_hash=await hash_password_async(password),
            name=name,
            role=role,
            verified_at=datetime.now(UTC) if verified else None,
        )
        if user is None:
            raise FormError({"email": "An account with this email already exists."})
        return user

    @staticmethod
    def _check_new_account(*, email: str, password: str, name: str) -> None:
        errors: dict[str, str] = {}
        if problem := email_problem(email):
            errors["email"] = problem
        if problem := password_problem(password, email=normalise_email(email)):
            errors["password"] = problem
        if len(name) > 120:
            errors["name"] = "Use at most 120 characters."
        if errors:
            raise FormError(errors)

    async def _insert_user(
        self,
        *,
        email: str,
        password_hash: str,
        name: str,
        role: Role = Role.CUSTOMER,
        verified_at: datetime | None = None,
    ) -> m.User | None:
        """Insert an account; ``None`` if the address is taken (by a sign-up racing this one, too)."""
        user = m.User(
            email=email,
            name=name.strip(),
            password_hash=password_hash,
            role=role.value,
            email_verified_at=verified_at,
        )
        self.db.add(user)
        try:
            await self.db.flush()
        except IntegrityError:
            await self.db.rollback()
            return None
        return user

    async def register(self, *, email: str, password: str, name: str) -> None:
        """Sign up, answering the same whether or not the address already has an account (no enumeration).

        A new address gets an account and a confirmation link; an address with an account gets an email telling
        its owner someone tried (with the sign-in and reset links). Either way the caller says "check your inbox",
        and the password is hashed either way so the answer takes as long.
        """
        self._check_new_account(email=email, password=password, name=name)
        email = normalise_email(email)
        password_hash = await hash_password_async(password)
        existing = await self.get_by_email(email)
        user = None if existing else await self._insert_user(email=email, password_hash=password_hash, name=name)
        if user is None:
            owner = existing or await self.get_by_email(email)  # taken before us, or by a sign-up racing us
            if owner is not None and owner.is_active:
                await self.emails.send(
                    "account_exists",
                    owner.email,
                    {
                        "name": owner.display_name,
                        "login_url": f"{self.settings.base_url}/login",
                        "reset_url": f"{self.settings.base_url}/forgot-password",
                    },
                )
            return
        await self.send_verification(user, template="welcome")

    async def send_verification(self, user: m.User, *, template: str = "verify_email") -> None:
        """Commit a single-use link for the account's current address and email it."""
        token, token_hash = new_token()
        expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.verify_email_token_seconds)
        self.db.add(
            m.EmailVerificationToken(user_id=user.id, email=user.email, token_hash=token_hash, expires_at=expires_at)
        )
        await self.db.commit()
        await self.emails.send(
            template,
            user.email,
            {
                "name": user.display_name,
                "verify_url": f"{self.settings.base_url}/verify-email/{token}",
                "valid_days": max(1, self.settings.verify_email_token_seconds // 86400),
                "shop_url": self.settings.base_url,
            },
        )

    async def verify_email(self, token: str) -> m.User | None:
        """Open a confirmation link; ``None`` if it is unknown, used or expired, or no longer applies.

        A sign-up's link ("verify") confirms the account's address, if the account still has it. A change link
        ("change") moves the account to the new address its owner has just proved: every other session ends, and
        the old address is told. Single use: a conditional update claims the link."""
        now = datetime.now(UTC)
        row = await self.db.scalar(
            select(m.EmailVerificationToken).where(m.EmailVerificationToken.token_hash == hash_token(token))
        )
        if row is None or row.used_at is not None or row.expires_at <= now:
            return None
        user = await self.db.get(m.User, row.user_id)
        if user is None or not user.is_active:
            return None
        changing = row.purpose == "change"
        if (user.email == row.email) == changing:  # a sign-up link for an old address, or a change already made
            return None
        claimed = await self.db.execute(
            update(m.EmailVerificationToken)
            .where(m.EmailVerificationToken.id == row.id, m.EmailVerificationToken.used_at.is_(None))
            .values(used_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            await self.db.rollback()
            return None
        old_email = user.email
        if changing:
            user.email = row.email
            user.session_epoch += 1  # whoever else was signed in learned the old address, not this one
            await self._void_pending_links(user, purposes=("verify",))  # reset links went to the old address
        if changing or user.email_verified_at is None:
            user.email_verified_at = now
        try:
            await self.db.commit()
        except IntegrityError:  # someone registered the address meanwhile
            await self.db.rollback()
            return None
        if changing:
            await self.emails.send(
                "email_changed",
                old_email,
                {
                    "name": user.display_name,
                    "new_email": user.email,
                    "reset_url": f"{self.settings.base_url}/forgot-password",
                },
            )
        return user

    async def authenticate(self, *, email: str, password: str, ip: str, throttle: LoginThrottle) -> m.User:
        """Check credentials. Same message and same work whether or not the account exists."""
        email = normalise_email(email)
        await throttle.check(email, ip)
        user = await self.get_by_email(email) if email else None
        ok = await verify_password_async(user.password_hash if user else None, password)
        if user is None or not ok or not user.is_active:
            if await throttle.record_failure(email, ip) and user is not None and user.is_active:
                # Someone is guessing this password from many addresses: tell the owner, once an hour at most.
                await self.emails.send(
                    "sign_in_attempts",
                    user.email,
                    {"name": user.display_name, "reset_url": f"{self.settings.base_url}/forgot-password"},
                )
            raise FormError({"password": BAD_LOGIN}, message=BAD_LOGIN)
        await throttle.record_success(email, ip)
        if needs_rehash(user.password_hash):
            user.password_hash = await hash_password_async(password)
        user.last_login_at = datetime.now(UTC)
        await self.db.commit()
        return user

    async def request_password_reset(self, email: str) -> None:
        """Email a single-use link if the account exists; the caller shows the same page either way."""
        user = await self.get_by_email(email)
        if user is None or not user.is_active:
            return
        token, token_hash = new_token()
        expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.reset_token_seconds)
        self.db.add(m.PasswordResetToken(user_id=user.id, token_hash=token_hash, expires_at=expires_at))
        await self.db.commit()
        await self.emails.send(
            "password_reset",
            user.email,
            {
                "name": user.display_name,
                "reset_url": f"{self.settings.base_url}/reset-password/{token}",
                "valid_minutes": self.settings.reset_token_seconds // 60,
            },
        )

    async def valid_reset_token(self, token: str) -> m.PasswordResetToken | None:
        row = await self.db.scalar(
            select(m.PasswordResetToken).where(m.PasswordResetToken.token_hash == hash_token(token))
        )
        if row is None or row.used_at is not None or row.expires_at <= datetime.now(UTC):
            return None
        return row

    async def reset_password(self, token: str, password: str, *, throttle: LoginThrottle) -> m.User | None:
        """Set a new password with a reset token; ``None`` if the link is invalid, used or expired.

        A reset proves the inbox: it lifts every sign-in wait on the account (an attacker's included).
        """
        row = await self.valid_reset_token(token)
        if row is None:
            return None
        user = await self.db.get(m.User, row.user_id)
        if user is None:
            return None
        if problem := password_problem(password, email=user.email):
            raise FormError({"password": problem})
        # Mark the token used with a conditional update so two concurrent submits cannot both succeed.
        claimed = await self.db.execute(
            update(m.PasswordResetToken)
            .where(m.PasswordResetToken.id == row.id, m.PasswordResetToken.used_at.is_(None))
            .values(used_at=datetime.now(UTC))
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            await self.db.rollback()
            return None
        await self._set_password(user, password)
        await self.db.commit()
        await throttle.clear_account(user.email)
        return user

    async def change_password(self, user: m.User, *, current: str, new: str) -> m.User:
        if not await verify_password_async(user.password_hash, current):
            raise FormError({"current_password": "That is not your current password."})
        if problem := password_problem(new, email=user.email):
            raise FormError({"new_password": problem})
        user = await self.db.merge(user)
        await self._set_password(user, new)
        await self.db.commit()
        return user

    async def _set_password(self, user: m.User, password: str) -> None:
        user.password_hash = await hash_password_async(password)
        user.session_epoch += 1  # signs out every other session of this account
        # Whoever knew the old password may have left a way back in: a pending email change, a reset link.
        await self._void_pending_links(user, purposes=("change",))

    async def _void_pending_links(self, user: m.User, *, purposes: tuple[str, ...]) -> None:
        now = datetime.now(UTC)
        await self.db.execute(
            update(m.EmailVerificationToken)
            .where(
                m.EmailVerificationToken.user_id == user.id,
                m.EmailVerificationToken.purpose.in_(purposes),
                m.EmailVerificationToken.used_at.is_(None),
            )
            .values(used_at=now)
        )
        await self.db.execute(
            update(m.PasswordResetToken)
            .where(m.PasswordResetToken.user_id == user.id, m.PasswordResetToken.used_at.is_(None))
            .values(used_at=now)
        )
