"""``/static/…``: fingerprinted files cached for a year, plain paths for minutes, compressed ahead of time.

Replaces Litestar's static files router: that one reads the file on every request, compresses nothing and sets
no cache header. The bytes come from app.lib.static_assets (read once per process). No cookie is ever set here:
the session, CSRF and rate-limit layers all skip /static/.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from app.lib.exceptions import NotFoundError
from app.lib.static_assets import IMMUTABLE, SHORT, pick_encoding, static_assets


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison: ``W/"x"`` and ``"x"`` match, and ``*`` matches anything."""
    if not if_none_match:
        return False
    bare = etag.removeprefix("W/")
    return any(tag.strip() == "*" or tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


@get("/static/{file_path:path}", name="static", include_in_schema=False, cache_control=None, sync_to_thread=False)
def static_file(request: Request[Any, Any, Any], file_path: FromPath[str]) -> Response[bytes]:
    found = static_assets().find(file_path)
    if found is None:
        raise NotFoundError("No such file.")
    asset, fingerprinted = found
    headers = {
        "Cache-Control": IMMUTABLE if fingerprinted else SHORT,
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
    }
    if etag_matches(request.headers.get("if-none-match"), asset.etag):
        return Response(content=b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    encoding = pick_encoding(asset, request.headers.get("accept-encoding", ""))
    body = asset.body
    if encoding is not None:
        body = asset.encoded[encoding]
        headers["Content-Encoding"] = encoding
    return Response(content=body, media_type=asset.media_type, headers=headers)
