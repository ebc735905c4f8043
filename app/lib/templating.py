"""The one Jinja environment: used by Litestar for pages and by services and jobs for emails."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from jinja2.runtime import Context
from litestar.utils.scope.state import ScopeState
from markupsafe import escape

from app.lib.csp import mark_csrf_used, request_nonce
from app.lib.localtime import format_local
from app.lib.money import format_money
from app.lib.permissions import can, is_staff
from app.lib.settings import BASE_DIR, get_settings
from app.lib.shop_settings import current_shop_settings
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
            if isinstance(vars.get("csrf_input"), str):
                vars["csrf_input"] = CsrfInput(vars["csrf_input"], request.scope)
        return super().new_context(vars, shared, locals)


class _ShopZoneName:
    """Renders as the shop's current time-zone name: a settings change shows without rebuilding the environment."""

    def __str__(self) -> str:
        return current_shop_settings().zone_name

    def __html__(self) -> str:
        return str(escape(str(self)))


class CsrfInput:
    """Litestar's ``csrf_input`` (a hidden input), noting when a page actually renders it: only such a page makes
    the CSRF middleware set its cookie, so a page without a form sets none (cacheable, #15)."""

    __slots__ = ("_html", "_scope")

    def __init__(self, html: str, scope: Mapping[str, Any]) -> None:
        self._html = html
        self._scope = scope

    def __html__(self) -> str:
        mark_csrf_used(self._scope)
        return self._html

    __str__ = __html__


def csrf_token(context: Mapping[str, Any], /) -> str:
    """The ``csrf_token()`` template callable: the token, noted as used (see ``CsrfInput``)."""
    request = context.get("request")
    if request is None:
        return ""
    mark_csrf_used(request.scope)
    return str(ScopeState.from_scope(request.scope).csrf_token or "")


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
    env.globals["shop_time_zone"] = _ShopZoneName()  # "America/Toronto", for "times are in ..."
    env.globals["shop_settings"] = current_shop_settings  # the seller, the receipt footer, link lifetime
    env.globals["can"] = can
    env.globals["is_staff"] = is_staff
    env.globals["static_url"] = static_url
    return env
