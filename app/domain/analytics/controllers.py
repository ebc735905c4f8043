"""The dashboard's live feed: ``GET /admin/live``, a Server-Sent Events stream for staff with analytics access."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, MediaType, Request, Response, get
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.response import ServerSentEvent

from app.domain.analytics import feed
from app.domain.analytics.live import live_events
from app.lib.permissions import Access, Resource, can
from app.lib.runtime import Runtime
from app.server.auth import current_user, requires


class AnalyticsLiveController(Controller):
    path = "/admin/live"
    guards = [requires(Resource.ANALYTICS, Access.LIMITED)]

    @get("/", name="admin:live", cache_control=None)
    async def live(
        self,
        request: Request[Any, Any, Any],
        channels: NamedDependency[ChannelsPlugin],
        runtime: NamedDependency[Runtime],
    ) -> Response[Any]:
        if "text/event-stream" not in request.headers.get("accept", ""):
            # Only an EventSource gets the endless stream; a link followed by hand gets a word of explanation.
            return Response("The admin dashboard's live activity feed (Server-Sent Events).", media_type=MediaType.TEXT)
        user = current_user(request)
        stopping: asyncio.Event = request.app.state.analytics_stopping
        return ServerSentEvent(
            live_events(
                channels,
                channel=feed.channel(runtime.redis),
                money=user is not None and can(user.role, Resource.ANALYTICS, Access.FULL),
                order_base=request.app.route_reverse("admin:orders"),
                max_seconds=runtime.settings.analytics_stream_seconds,
                stopping=stopping,
            ),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
