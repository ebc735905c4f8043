"""ASGI entry point: ``granian --interface asgi --factory app.asgi:create_app``."""

from __future__ import annotations

from litestar import Litestar

from app.lib.runtime import Runtime
from app.lib.settings import get_settings
from app.server.plugin import ApplicationCore


def create_app() -> Litestar:
    return Litestar(plugins=[ApplicationCore(Runtime(get_settings()))], openapi_config=None)
