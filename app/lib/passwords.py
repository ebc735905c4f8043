"""Password hashing (argon2id) and the password policy.

Policy follows NIST SP 800-63B: length 8..128, no composition rules, reject the most common passwords.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 128

# argon2-cffi's defaults are RFC 9106's "low memory" argon2id profile.
_hasher = PasswordHasher()

# Verified against when the account does not exist, so a login for an unknown email costs the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password-used-for-timing")


_limiter: anyio.CapacityLimiter | None = None


def _hash_limiter() -> anyio.CapacityLimiter:
    """At most PASSWORD_HASH_THREADS hashes at once per process: a burst of sign-ins queues here, off the loop,
    instead of taking every thread (and core) from the pages being served."""
    global _limiter  # noqa: PLW0603 - created lazily: a CapacityLimiter needs a running event loop's backend
    if _limiter is None:
        from app.lib.settings import get_settings

        _limiter = anyio.CapacityLimiter(get_settings().password_hash_threads)
    return _limiter


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` in a worker thread (argon2 costs ~150-250 ms of CPU; the event loop must not wait)."""
    return await anyio.to_thread.run_sync(hash_password, password, limiter=_hash_limiter())


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """:func:`verify_password` in a worker thread, behind the same limiter."""
    return await anyio.to_thread.run_sync(verify_password, password_hash, password, limiter=_hash_limiter())


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        _hasher.verify(password_hash or _DUMMY_HASH, password)  # raises on mismatch
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    path = Path(__file__).parent / "data" / "common-passwords.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip() for line in fh if line.strip())


def password_problem(password: str, *, email: str = "") -> str | None:
    """Return why ``password`` is not acceptable, or ``None`` when it is."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    lowered = password.lower()
    if lowered in _common_passwords():
        return "This password is too common. Choose one that is harder to guess."
    if email and lowered == email.lower():
        return "Your password can't be your email address."
    return None
