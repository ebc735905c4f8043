"""Outgoing email: rendered from templates into the ``email_messages`` table, then delivered by a job.

With ``SMTP_URL`` set the job sends through aiosmtplib; without it the message stays in the outbox,
readable at /admin/emails. Either way the row is the record of what the shop sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from jinja2 import Environment

from app.db import models as m


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


def render_email(env: Environment, kind: str, to_address: str, context: dict[str, Any]) -> m.EmailMessage:
    """Render ``templates/emails/<kind>.{subject.txt,txt,html}.j2`` into an unsent message row."""
    subject = env.get_template(f"emails/{kind}.subject.txt.j2").render(**context).strip()
    return m.EmailMessage(
        kind=kind,
        to_address=to_address,
        subject=subject,
        text_body=env.get_template(f"emails/{kind}.txt.j2").render(**context),
        html_body=env.get_template(f"emails/{kind}.html.j2").render(**context),
    )


async def deliver_smtp(message: m.EmailMessage, *, smtp_url: str, mail_from: str) -> None:
    target = parse_smtp_url(smtp_url)
    mime = MimeMessage()
    mime["From"] = mail_from
    mime["To"] = message.to_address
    mime["Subject"] = message.subject
    # A stable Message-ID lets receiving servers drop a duplicate if a retry re-sends after a lost reply.
    mime["Message-ID"] = f"<{message.id}@cartwright>"
    mime.set_content(message.text_body)
    mime.add_alternative(message.html_body, subtype="html")
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
