"""Reading a multipart upload in chunks, straight from the request stream, without holding the file in memory.

Litestar's own ``UploadFile`` spools each file part into a ``SpooledTemporaryFile`` (1 MiB in memory, then a temp
file) before the handler runs, so a 200 MB file is written twice and the size limit is only the app-wide
``request_max_body_size``. Upload routes instead set ``request_max_body_size=None`` on the handler, declare no
``data`` parameter, and call ``read_upload``: it feeds ``request.stream()`` to the same push parser Litestar uses
(``multipart``) and hands each chunk of the file part to the caller's ``write`` as it arrives, so the caller can
hash it, count it against its own limit and write it to storage.

One exception: a plain (no-JavaScript) form post carries its CSRF token in the body, so the CSRF middleware has
already parsed the form (spooled as above) by the time the handler runs. ``read_upload`` then reads that spooled
file in chunks instead. HTMX posts send the token in a header, so the middleware leaves the stream alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.datastructures import UploadFile
from litestar.types import Empty
from litestar.utils.scope.state import ScopeState
from multipart import (  # type: ignore[import-untyped]
    MultipartSegment,
    ParserError,
    ParserLimitReached,
    PushMultipartParser,
)

CHUNK_SIZE = 256 * 1024
MAX_TEXT_FIELD = 64 * 1024


class UploadError(ValueError):
    """The request is not a usable multipart upload; the message is safe to show."""


async def read_upload(
    request: Request[Any, Any, Any],
    field: str,
    start: Callable[[str, str], None],
    write: Callable[[bytes], None],
) -> dict[str, str]:
    """Stream the file part ``field`` to ``start(filename, content_type)`` then ``write(chunk)``…; return the text
    fields. Raises ``UploadError`` when there is no file part or the body is not multipart; whatever ``start`` or
    ``write`` raise (a size limit) propagates, and the rest of the body is not read."""
    text: dict[str, str] = {}
    found = False
    form = ScopeState.from_scope(request.scope).form
    if form is not Empty:
        for name, value in dict(form).items():
            if isinstance(value, UploadFile):
                if name == field and value.filename and not found:
                    found = True
                    start(value.filename, value.content_type)
                    while chunk := await value.read(CHUNK_SIZE):
                        write(chunk)
            elif isinstance(value, str):
                text[name] = value
        if not found:
            raise UploadError("Choose a file to upload.")
        return text

    media_type, options = request.content_type
    boundary = options.get("boundary", "")
    if media_type != "multipart/form-data" or not boundary:
        raise UploadError("Upload the file with the form (multipart/form-data).")
    segment: MultipartSegment | None = None
    is_file = False
    buffer = bytearray()
    try:
        with PushMultipartParser(boundary.encode(), max_segment_count=20) as parser:
            async for data in request.stream():
                for event in parser.parse(data):
                    if isinstance(event, MultipartSegment):
                        segment = event
                        is_file = bool(event.filename) and event.name == field and not found
                        buffer = bytearray()
                        if is_file:
                            found = True
                            start(event.filename, event.content_type or "application/octet-stream")
                    elif event:
                        if is_file:
                            write(bytes(event))
                        elif segment is not None and not segment.filename:
                            buffer.extend(event)
                            if len(buffer) > MAX_TEXT_FIELD:
                                raise UploadError("A form field is too long.")
                    elif segment is not None:  # the end of a part
                        if not segment.filename:
                            text[segment.name] = buffer.decode(segment.charset or "utf-8", "replace")
                        segment, is_file = None, False
                if parser.closed:
                    break
    except (ParserError, ParserLimitReached) as exc:
        raise UploadError("The upload was cut short or malformed: try again.") from exc
    if not found:
        raise UploadError("Choose a file to upload.")
    return text
