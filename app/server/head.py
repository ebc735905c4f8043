"""``HEAD`` wherever ``GET`` is: the request is routed and handled as a GET, and the body is dropped on the way out.

Wraps the application's ASGI handler (routing included), so no route needs to declare HEAD: the headers, the
status and the Content-Length are exactly the GET's (RFC 9110 §9.3.2), and nothing is sent after them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from litestar.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from litestar import Litestar

HEAD_STATE_KEY = "head_request"


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = cast("dict[str, Any]", scope)
        if raw["type"] != "http" or raw.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return
        raw["method"] = "GET"
        raw.setdefault("state", {})[HEAD_STATE_KEY] = True
        sent_end = False

        async def send_headers_only(message: Message) -> None:
            nonlocal sent_end
            if message["type"] != "http.response.body":
                await send(message)
                return
            if sent_end:
                return
            if not message.get("more_body", False):  # one empty final body frame, whatever the GET streamed
                sent_end = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(scope, receive, send_headers_only)


def install_head_as_get(app: Litestar) -> None:
    """Startup hook: wrap the app's handler (built in ``Litestar.__init__``, which plugins cannot reach)."""
    if not isinstance(app.asgi_handler, HeadAsGet):
        app.asgi_handler = HeadAsGet(app.asgi_handler)
