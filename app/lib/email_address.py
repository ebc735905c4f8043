"""Email addresses: the one place that validates and normalises them (register, sign-in, checkout, resend...).

`email-validator` checks the syntax properly (RFC 5322/6531 as mail servers accept it: no quoted local parts,
no comments, no `( ) ; ,` and friends) and normalises the domain (IDNA, lower case). A loose regex let
``x');document.title='pwned';('@e.co`` through, which then ended up inside an admin page's inline handler.
Deliverability (DNS) checks stay off: there is no network at request time, and the email we send is the
real proof that the address works.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

MAX_LENGTH = 320
INVALID = "Enter an email address like name@example.com."
MISSING = "Enter your email address."


class InvalidEmailError(ValueError):
    """``str(exc)`` is a message for the visitor, ready to show next to the field."""


def clean_email(raw: str) -> str:
    """Return the normalised address (lower case, trimmed) or raise :class:`InvalidEmailError`.

    The local part is lower-cased too: accounts are looked up case-insensitively, as people expect.
    """
    text = raw.strip()
    if not text:
        raise InvalidEmailError(MISSING)
    if len(text) > MAX_LENGTH:
        raise InvalidEmailError(INVALID)
    try:
        # test_environment allows the reserved ".test" domain (seed and demo accounts) and never touches DNS.
        result = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise InvalidEmailError(INVALID) from exc
    return result.normalized.lower()


def email_problem(raw: str) -> str | None:
    """Why ``raw`` is not an acceptable email address, or ``None``."""
    try:
        clean_email(raw)
    except InvalidEmailError as exc:
        return str(exc)
    return None


def normalise_email(raw: str) -> str:
    """The form to look an address up by (sign-in, reset): the validated form when valid, else trimmed lower case.

    Never raises: a sign-in with a malformed address answers like any other wrong credentials.
    """
    try:
        return clean_email(raw)
    except InvalidEmailError:
        return raw.strip().lower()
