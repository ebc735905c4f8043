"""Same-site redirects: the one check for every URL that comes from the client (``next``, the Referer, a form)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# Browsers drop tabs and newlines anywhere in a URL and read "\" as "/": "/\t/evil" and "/\evil" both become
# "//evil", another site. Control characters have no business in a path of ours either way.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def same_site_path(url: str | None, default: str = "/") -> str:
    """``url`` when it is a path on this site (``/orders?page=2``), else ``default``.

    Refuses absolute and scheme-relative URLs (``https://evil``, ``//evil``, ``http:evil``, ``javascript:…``),
    backslashes and control characters (which browsers turn into ``//``), and percent-encoded slashes or
    backslashes at the start (``/%2F%2Fevil``, ``/%5Cevil``), which some servers and browsers decode before use.
    """
    if not url or not isinstance(url, str):
        return default
    if _CONTROL.search(url) or "\\" in url:
        return default
    if not url.startswith("/") or url.startswith("//"):
        return default
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return default
    decoded = unquote(parts.path)
    if decoded.startswith("//") or "\\" in decoded or _CONTROL.search(decoded):
        return default
    return url
