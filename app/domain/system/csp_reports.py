"""Content-Security-Policy violation reports: parsed from either browser format, logged, and counted by directive.

Browsers send them unauthenticated, so nothing here trusts the body: it is size-capped by the controller, every
field is cut down, URLs lose their query string and fragment (and the secret segment of a download or reset
link), and the directive that becomes a Redis hash field must look like one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from redis.asyncio import Redis

from app.lib.redact import SECRET_PATH_PREFIXES

MAX_REPORT_BYTES = 8 * 1024
CONTENT_TYPES = frozenset({"application/csp-report", "application/reports+json", "application/json"})
COUNTER_KEY = "cartwright:csp:violations"  # a hash: directive -> violations seen

# Paths whose next segment is a secret (app.server.security_headers sends these pages with no Referer, too).
_SECRET_PATH_PREFIXES = SECRET_PATH_PREFIXES
# Only real directive names become Redis hash fields (a report's text is the sender's to choose).
_DIRECTIVES = frozenset(
    {
        "base-uri", "child-src", "connect-src", "default-src", "fenced-frame-src", "font-src", "form-action",
        "frame-ancestors", "frame-src", "img-src", "manifest-src", "media-src", "object-src",
        "require-trusted-types-for", "script-src", "script-src-attr", "script-src-elem", "style-src",
        "style-src-attr", "style-src-elem", "trusted-types", "worker-src",
    }
)  # fmt: skip


class ReportError(ValueError):
    """The body is not a CSP report we understand (the endpoint answers 400)."""


@dataclass(frozen=True)
class Violation:
    directive: str
    blocked: str
    document: str
    source: str
    line: int | None
    disposition: str


def clean_url(value: object) -> str:
    """Scheme, host and path only (no query, no fragment, no secret path segment); keywords such as ``inline``
    and ``eval`` as they are."""
    text = str(value or "")[:500]
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        return text.split("?", 1)[0].split("#", 1)[0][:100]
    path = parts.path
    for prefix in _SECRET_PATH_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            path = prefix + "…"
    return f"{parts.scheme}://{parts.netloc}{path}"


def _directive(raw: object) -> str:
    # "script-src-elem" as sent, or the first word of an old-style "violated-directive: script-src 'self'".
    word = str(raw or "").strip().split(" ", 1)[0].lower()
    return word if word in _DIRECTIVES else "other"


def _line(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def parse_reports(body: bytes, content_type: str) -> list[Violation]:
    try:
        data: Any = json.loads(body)
    except ValueError as exc:
        raise ReportError("not JSON") from exc
    if content_type == "application/reports+json" or isinstance(data, list):
        # The Reporting API: a list of reports; only the CSP ones concern us.
        items = data if isinstance(data, list) else []
        return [
            Violation(
                directive=_directive(b.get("effectiveDirective")),
                blocked=clean_url(b.get("blockedURL")),
                document=clean_url(b.get("documentURL")),
                source=clean_url(b.get("sourceFile")),
                line=_line(b.get("lineNumber")),
                disposition=str(b.get("disposition") or "enforce")[:10],
            )
            for item in items[:20]
            if isinstance(item, dict)
            and item.get("type") == "csp-violation"
            and isinstance(b := item.get("body"), dict)
        ]
    report = data.get("csp-report") if isinstance(data, dict) else None
    if not isinstance(report, dict):
        raise ReportError("no csp-report object")
    return [
        Violation(
            directive=_directive(report.get("effective-directive") or report.get("violated-directive")),
            blocked=clean_url(report.get("blocked-uri")),
            document=clean_url(report.get("document-uri")),
            source=clean_url(report.get("source-file")),
            line=_line(report.get("line-number")),
            disposition=str(report.get("disposition") or "enforce")[:10],
        )
    ]


async def record(redis: Redis, violations: list[Violation], *, client_ip: str | None) -> None:
    """One structured log line per violation, and the per-directive counters (best effort: Redis may be down)."""
    log = structlog.get_logger("cartwright.csp")
    for v in violations:
        log.warning(
            "csp_violation",
            directive=v.directive,
            blocked=v.blocked,
            document=v.document,
            source=v.source,
            line=v.line,
            disposition=v.disposition,
            client_ip=client_ip,
        )
    if not violations:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for v in violations:
                pipe.hincrby(COUNTER_KEY, v.directive, 1)
            await pipe.execute()
    except Exception as exc:  # a report is worth a log line, never a 500
        log.warning("csp_violation_not_counted", error=type(exc).__name__)


async def counts(redis: Redis) -> dict[str, int]:
    raw = await redis.hgetall(COUNTER_KEY)
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}
