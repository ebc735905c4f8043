"""Keep secrets that travel in URLs (reset, verification and download tokens) out of logs and back-office views."""

from __future__ import annotations

import re

REDACTED = "{redacted}"
# Pages whose address carries a bearer secret: no Referer leaves them, and reports about them drop the token.
SECRET_PATH_PREFIXES = ("/downloads/", "/reset-password/", "/verify-email/", "/invoices/")
MASK = "[link hidden: it is the customer's own secret]"

# A path segment this long made only of URL-safe characters is a token or a signature (ours are 32+ characters);
# slugs have dashes between words and are shorter, ids are not secrets but lose little by being hidden.
_TOKEN_SEGMENT = re.compile(r"[A-Za-z0-9_\-.~%=]{24,}")
# Litestar's path templates carry the parameter type: "/reset-password/{token:str}".
_TYPED_PARAM = re.compile(r"\{(\w+):[^}]*\}")
# Links whose last segment is a bearer secret: whoever has the link can use it.
_SECRET_LINK = re.compile(
    r"(?:https?://[^\s\"'<>]*?)?/(?:reset-password|verify-email|verify|confirm-email|downloads|invoices)/"
    r"(?!resend\b)[A-Za-z0-9_\-.~%=]{16,}"
)


def loggable_path(path: str, template: str | None = None) -> str:
    """The path to write in a log line: the route's template when one matched (``/reset-password/{token}``),
    else the path with every token-like segment replaced. Never the query string (callers pass the path only)."""
    if template:
        return _TYPED_PARAM.sub(r"{\1}", template)
    return "/".join(REDACTED if _TOKEN_SEGMENT.fullmatch(part) else part for part in path.split("/"))


def mask_secret_links(text: str) -> str:
    """``text`` with every reset, verification and download link replaced by a notice (HTML or plain text)."""
    return _SECRET_LINK.sub(MASK, text)
