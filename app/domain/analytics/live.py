"""The dashboard's live stream: Server-Sent Events fed by the live feed's channel (Litestar Channels on Redis).

Every connection ends by itself: when the app shuts down (checked each second), after ``max_seconds`` (the
browser's EventSource reconnects, and the htmx extension with it), or when the client goes away (Litestar
cancels the stream). A comment every 15 s keeps proxies from closing an idle connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

from litestar.channels import ChannelsPlugin
from litestar.response import ServerSentEventMessage

from app.lib.templating import get_environment

KEEPALIVE_SECONDS = 15.0
RECONNECT_MS = 3000


def render_item(item: dict[str, Any], *, money: bool, order_base: str) -> str:
    """One feed item as the dashboard's ``<li>``; without its amount unless the viewer may see money."""
    if not money:
        item = {k: v for k, v in item.items() if k != "amount"}
    template = get_environment().get_template("admin/_activity_item.html.j2")
    return template.render(item=item, order_base=order_base)


async def live_events(
    channels: ChannelsPlugin,
    *,
    channel: str,
    money: bool,
    order_base: str,
    max_seconds: float,
    stopping: asyncio.Event,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    received: asyncio.Queue[bytes] = asyncio.Queue(maxsize=200)

    async def on_event(raw: bytes) -> None:
        if not received.full():  # a client that cannot keep up misses items, never the server's memory
            received.put_nowait(raw)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    last_sent = loop.time()
    async with channels.start_subscription([channel]) as subscriber, subscriber.run_in_background(on_event, join=False):
        yield ServerSentEventMessage(comment="connected", retry=RECONNECT_MS)
        while not stopping.is_set() and loop.time() < deadline:
            try:
                raw = await asyncio.wait_for(received.get(), timeout=1.0)
            except TimeoutError:
                if loop.time() - last_sent >= KEEPALIVE_SECONDS:
                    last_sent = loop.time()
                    yield ServerSentEventMessage(comment="keep-alive")
                continue
            last_sent = loop.time()
            html = render_item(json.loads(raw), money=money, order_base=order_base)
            yield ServerSentEventMessage(event="activity", data=html)
