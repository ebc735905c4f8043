"""SMTP delivery: the transport only. What to send, and the outbox of what was sent (the ``email_messages``
table, /admin/emails), are app/domain/notifications'.

With ``SMTP_URL`` set the email job sends through aiosmtplib; without it the message stays in the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib


@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://user:pass@host:25`` (STARTTLS when offered), ``smtps://`` (implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
        msg = f"SMTP_URL must look like smtp://user:pass@host:port, got scheme {parts.scheme!r}"
        raise ValueError(msg)
    implicit_tls = parts.scheme == "smtps"
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or (465 if implicit_tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=implicit_tls,
        start_tls=None if not implicit_tls else False,
    )


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    message_id: str  # stable across retries: receiving servers drop a duplicate re-sent after a lost reply
    to_address: str
    subject: str
    text_body: str
    html_body: str


async def deliver_smtp(email: OutgoingEmail, *, smtp_url: str, mail_from: str) -> None:
    target = parse_smtp_url(smtp_url)
    mime = MimeMessage()
    mime["From"] = mail_from
    mime["To"] = email.to_address
    mime["Subject"] = email.subject
    mime["Message-ID"] = f"<{email.message_id}@cartwright>"
    mime.set_content(email.text_body)
    mime.add_alternative(email.html_body, subtype="html")
    await aiosmtplib.send(
        mime,
        hostname=target.hostname,
        port=target.port,
        username=target.username,
        password=target.password,
        use_tls=target.use_tls,
        start_tls=target.start_tls,
        timeout=20,
    )
