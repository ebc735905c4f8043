"""The one Jinja environment: used by Litestar for pages and by services and jobs for emails."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from jinja2.runtime import Context

from app.domain.catalog.covers import cover_src
from app.lib.csp import request_nonce
from app.lib.localtime import format_local
from app.lib.money import format_money
from app.lib.permissions import can, is_staff
from app.lib.settings import BASE_DIR, get_settings
from app.lib.static_assets import static_url

TEMPLATE_DIR = BASE_DIR / "templates"


def format_datetime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime(fmt)


class PageTemplate(Template):
    """A template that gives every page rendered for a request its ``csp_nonce`` (for ``<script nonce=…>``).

    Every response is a Template from some controller or error handler; adding the nonce where the context is made
    means none of them can forget it. Emails are rendered without a request and get none.
    """

    def new_context(
        self,
        vars: dict[str, Any] | None = None,
        shared: bool = False,
        locals: Mapping[str, Any] | None = None,
    ) -> Context:
        request = vars.get("request") if vars else None
        if vars is not None and request is not None and "csp_nonce" not in vars:
            vars = {**vars, "csp_nonce": request_nonce(request.scope)}
        return super().new_context(vars, shared, locals)


@lru_cache(maxsize=1)
def get_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(["html", "j2"], default=True),
        undefined=StrictUndefined,  # a typo in a template fails a test instead of rendering blank
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=get_settings().debug,  # a stat() per template per render otherwise
        enable_async=False,
    )
    env.template_class = PageTemplate
    env.filters["money"] = format_money
    env.filters["datetime"] = format_datetime
    env.filters["local_time"] = format_local  # the shop's time zone, with its abbreviation (EST/EDT)
    env.globals["shop_time_zone"] = get_settings().shop_time_zone  # "America/Toronto", for "times are in ..."
    env.globals["can"] = can
    env.globals["is_staff"] = is_staff
    env.globals["cover_src"] = cover_src
    env.globals["static_url"] = static_url
    return env
