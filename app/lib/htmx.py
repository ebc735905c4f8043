"""Page-or-fragment rendering and redirects, the one way every controller answers HTMX and plain requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_200_OK, HTTP_303_SEE_OTHER

from app.lib.exceptions import ApplicationError, FormError


def wants_fragment(request: Request[Any, Any, Any]) -> bool:
    """A fragment only for a targeted HTMX request: not a boosted navigation and not a history restore."""
    headers = request.headers
    return (
        headers.get("hx-request") == "true"
        and headers.get("hx-boosted") != "true"
        and headers.get("hx-history-restore-request") != "true"
    )


def render(
    request: Request[Any, Any, Any],
    page: str,
    context: dict[str, Any],
    *,
    fragment: str | None = None,
    status_code: int = HTTP_200_OK,
    trigger: str | None = None,
) -> Template:
    """Render the full ``page``, or only ``fragment`` when HTMX asked for it. Always ``Vary: HX-Request``."""
    is_fragment = bool(fragment) and wants_fragment(request)
    name = fragment if is_fragment and fragment else page
    headers = {"Vary": "HX-Request"}
    if trigger:
        headers["HX-Trigger"] = trigger
    context = {**context, "is_fragment": is_fragment}
    return Template(template_name=name, context=context, status_code=status_code, headers=headers)


def render_form(
    request: Request[Any, Any, Any],
    page: str,
    context: Mapping[str, Any],
    *,
    fragment: str | None,
    form: Mapping[str, Any],
    error: ApplicationError | None = None,
    status_code: int | None = None,
) -> Template:
    """A form's page (or its fragment, for HTMX), shown first (200) or again after ``error``, with what was typed.

    The one place a form's errors reach its template: a ``FormError``'s messages go beside their fields
    (``errors``), its summary above them (``message``), with its status (422); another error (a 409 conflict) is
    the summary alone, with its own status. ``status_code`` overrides it (an upload too large: 413)."""
    fields = error.errors if isinstance(error, FormError) else {}
    status = status_code or (error.status_code if error is not None else HTTP_200_OK)
    values = {**context, "form": form, "errors": fields, "message": error.message if error is not None else ""}
    return render(request, page, values, fragment=fragment, status_code=status)


def redirect(request: Request[Any, Any, Any], url: str) -> Response[Any]:
    """POST/Redirect/GET: ``HX-Redirect`` for HTMX (full navigation), 303 otherwise."""
    if request.headers.get("hx-request") == "true":
        return Response(content=b"", status_code=HTTP_200_OK, headers={"HX-Redirect": url})
    return Redirect(path=url, status_code=HTTP_303_SEE_OTHER)


def flash(request: Request[Any, Any, Any], message: str, category: str = "info") -> None:
    """Queue a message for the next rendered page (kept in the session until shown)."""
    session = request.scope.get("session")
    if not isinstance(session, dict):
        session = {}
        request.scope["session"] = session
    messages: list[dict[str, str]] = session.setdefault("_flashes", [])
    messages.append({"message": message, "category": category})


def pop_flashes(request: Request[Any, Any, Any]) -> list[dict[str, str]]:
    session = request.scope.get("session")
    if not isinstance(session, dict) or "_flashes" not in session:
        return []
    messages: list[dict[str, str]] = session.pop("_flashes")
    return messages
