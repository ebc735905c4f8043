"""The ceiling for the catalog bench: a raw ASGI app answering every request with the same 22 KB HTML page.

Served by the same granian, with the same workers, as the shop (``granian --interface asgi bench.ceiling:app``):
what the server, the loop and the load generator cost on this machine without any application work.
"""

from __future__ import annotations

from typing import Any

_ROW = b"<li><a href='/products/some-product'>A product with a fairly long name</a> <span>$39.00</span></li>\n"
BODY = b"<!doctype html><html><head><title>ceiling</title></head><body><ul>\n" + _ROW * 220 + b"</ul></body></html>\n"
HEADERS = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
