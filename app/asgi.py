"""ASGI entry point: ``granian --interface asgi --factory app.asgi:create_app``."""

from __future__ import annotations

import sys

from litestar import Litestar

from app.lib.runtime import Runtime
from app.lib.settings import SettingsError, get_settings
from app.server.plugin import ApplicationCore


def create_app() -> Litestar:
    try:
        settings = get_settings()
    except SettingsError as exc:
        # Web and worker (`cartwright workers run` loads this app too) stop here with the reason, not a traceback.
        print(f"Cartwright cannot start: {exc}", file=sys.stderr)  # noqa: T201 - logging is not configured yet
        raise SystemExit(2) from exc
    runtime = Runtime(settings, redis_timeout=settings.redis_timeout)
    return Litestar(plugins=[ApplicationCore(runtime)], openapi_config=None)
