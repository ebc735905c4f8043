"""Structured logs: JSON lines in production, readable lines in a terminal (LOG_FORMAT); one line per request.

Our structlog lines and the standard library's (SAQ, Litestar) share one format; SAQ's routine INFO lines (cron
ticks, job starts, sweeps) are demoted to DEBUG.

Every request gets an id (``X-Request-ID`` on the response, ``request_id`` on every log line written while it
runs); an incoming ``X-Request-ID`` is kept only from a trusted proxy. Paths are logged without query strings and
with tokens redacted (``/reset-password/{token}``). Denials (another person's object, CSRF, cross-site posts) get
one ``access_denied`` line each through ``log_denial``.
"""

from __future__ import annotations

import logging
import logging.config
import re
import secrets
import sys
import time
from typing import Any

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.lib.client_ip import Network, client_ip, is_trusted_proxy
from app.lib.redact import loggable_path

REQUEST_ID_HEADER = "X-Request-ID"
_INCOMING_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # what a proxy's id may look like; anything else is replaced


def is_static_path(scope: Scope) -> bool:
    return scope["path"].startswith("/static/")


_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,  # request_id, bound per request and per job
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _renderer(fmt: str) -> structlog.types.Processor:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer()


# Libraries whose INFO lines are routine: SAQ (every cron tick, job start, sweep), the Stripe SDK and httpx (one
# line per API call), uvicorn (the emulator's start-up). They become DEBUG; their warnings and errors keep their level.
ROUTINE_LOGGERS = ("saq", "stripe", "httpx", "httpcore", "uvicorn")


class RoutineSaqFilter(logging.Filter):
    """Routine INFO lines of ``ROUTINE_LOGGERS`` become DEBUG lines, shown only at LOG_LEVEL=DEBUG."""

    def __init__(self, level: str = "INFO") -> None:
        super().__init__()
        self.level = logging.getLevelName(level.upper())

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.split(".", 1)[0] in ROUTINE_LOGGERS:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return bool(self.level <= logging.DEBUG)
        return True


def stdlib_logging_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """Standard-library loggers (SAQ, granian's app logs, Litestar, SQLAlchemy) in the same format as ours."""
    level = level.upper()
    return {
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": [*_SHARED_PROCESSORS, structlog.stdlib.ExtraAdder()],
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _renderer(fmt),
                ],
            }
        },
        "filters": {"routine_saq": {"()": RoutineSaqFilter, "level": level}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "structlog",
                "filters": ["routine_saq"],
            }
        },
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "litestar": {"level": level, "handlers": ["console"], "propagate": False},
            "saq": {"level": level},
        },
    }


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """structlog's own lines: one format (``console`` readable, ``json`` one object a line) on stderr."""
    # The same list object as before, refilled: module-level loggers cached on first use keep a reference to it,
    # so an app built again in the same process (the tests do) still reaches them.
    processors: list[structlog.types.Processor] = structlog.get_config()["processors"]
    processors[:] = [
        *_SHARED_PROCESSORS[:1],
        structlog.processors.add_log_level,
        *_SHARED_PROCESSORS[3:],
        structlog.processors.format_exc_info,
        _renderer(fmt),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Not cached: a module-level logger cached on first use keeps the level filter of that moment, so a later
        # change of level (LOG_LEVEL per app, the tests' log capture) would not reach it. The cost is one small
        # bind per log call; the request log line builds its logger per call anyway.
        cache_logger_on_first_use=False,
    )
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, **stdlib_logging_config(level, fmt)})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def request_path(scope: Scope) -> str:
    """The path as logs may show it: the matched route's template, else with token-like segments redacted."""
    template: str | None = scope.get("path_template")  # absent until Litestar has matched a route
    return loggable_path(scope["path"], template)


def new_request_id() -> str:
    return secrets.token_hex(8)


def request_id_for(scope: Scope) -> str:
    """This request's id; one made now for the router's own answers (an unknown path's 404), which never pass
    through ``RequestLogMiddleware`` (it runs inside a matched route)."""
    state = scope.setdefault("state", {})
    request_id: str = state.setdefault("request_id", new_request_id())
    return request_id


async def request_id_header(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook: the id on every response, the router's own 404/405 included."""
    if message["type"] == "http.response.start" and scope["type"] == ScopeType.HTTP:
        headers = MutableScopeHeaders.from_message(message)
        if REQUEST_ID_HEADER not in headers:
            request_id = (scope.get("state") or {}).get("request_id")
            if request_id:
                headers[REQUEST_ID_HEADER] = request_id


def log_denial(scope: Scope, reason: str, **fields: Any) -> None:
    """One ``access_denied`` line: request id, client IP, account, path (no query string), why. Never a secret."""
    state = scope.get("state") or {}
    user = scope.get("user")
    account = getattr(user, "id", None)
    structlog.get_logger("cartwright.security").warning(
        "access_denied",
        reason=reason,
        request_id=state.get("request_id"),
        ip=state.get("client_ip"),
        account=str(account) if account is not None else None,
        method=scope.get("method"),
        path=request_path(scope),
        **fields,
    )


class RequestLogMiddleware(ASGIMiddleware):
    """Log method, path, status and duration once per request, under a request id."""

    scopes = (ScopeType.HTTP,)
    should_bypass_for_scope = staticmethod(is_static_path)

    def __init__(self, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self.trusted_proxies = trusted_proxies

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        start = time.perf_counter()
        status = 500
        client = scope.get("client")
        peer = client[0] if client else None
        ip = client_ip(peer, _header(scope, b"x-forwarded-for"), self.trusted_proxies)
        # A proxy of ours may pass its own id along (to join its logs to ours); from anybody else it is replaced.
        incoming = _header(scope, b"x-request-id") or ""
        trusted = peer is not None and is_trusted_proxy(peer, self.trusted_proxies)
        request_id = incoming if trusted and _INCOMING_ID.fullmatch(incoming) else new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = ip

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await next_app(scope, receive, send_wrapper)
            finally:
                structlog.get_logger("cartwright.request").info(
                    "request",
                    method=scope.get("method"),
                    path=request_path(scope),
                    status=status,
                    duration_ms=round((time.perf_counter() - start) * 1000, 1),
                    htmx=_header(scope, b"hx-request") is not None,
                )
