"""Process-wide dependencies every domain may ask for by name."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from saq import Queue

from app.domain.audit.services import Actor
from app.lib.client_ip import client_ip
from app.lib.runtime import Runtime
from app.lib.settings import Settings


def provide_runtime(state: State) -> Runtime:
    runtime: NamedDependency[Runtime] = state.runtime
    return runtime


def provide_settings(state: State) -> Settings:
    runtime: NamedDependency[Runtime] = state.runtime
    return runtime.settings


def provide_queue(state: State) -> Queue:
    queue: NamedDependency[Queue] = state.queue  # set up once by ApplicationCore
    return queue


def provide_actor(request: Request[Any, Any, Any], state: State) -> Actor:
    """The signed-in user and their address, for the audit log."""
    runtime: NamedDependency[Runtime] = state.runtime
    peer = request.client.host if request.client else None
    ip = client_ip(peer, request.headers.get("x-forwarded-for"), runtime.settings.trusted_proxies)
    return Actor(user=request.scope.get("user"), ip=ip)
