"""One place that turns errors into what a person sees: a full page, or a toast fragment for HTMX requests."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import stripe
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.exceptions.http_exceptions import ValidationException
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from redis.exceptions import RedisError

from app.lib import metrics
from app.lib.breaker import breaker_for
from app.lib.exceptions import ApplicationError, NotYoursError, PermissionDeniedError, RateLimitedError
from app.lib.htmx import wants_fragment
from app.server.auth import NotSignedInError
from app.server.csrf import CROSS_SITE
from app.server.logging import log_denial, request_id_for, request_path

log = structlog.get_logger()

_TITLES = {
    400: "That request didn't look right",
    403: "You don't have access to that page",
    404: "Page not found",
    405: "That action isn't allowed here",
    409: "That conflicts with something else",
    410: "That link has expired",
    402: "The payment did not go through",
    422: "Please check what you entered",
    429: "Too many requests",
    500: "Something went wrong on our side",
    503: "We're briefly unavailable",
}


def _error_response(
    request: Request[Any, Any, Any], status: int, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    title = _TITLES.get(status, "Something went wrong")
    # Printed on the page ("Reference: …") so support can find this request's log lines by the same id.
    request_id = request_id_for(request.scope)
    context = {"status": status, "title": title, "message": message, "request_id": request_id}
    if request.headers.get("hx-request") == "true":
        # htmx is configured to swap error responses; retarget so the toast lands in the page's toast area.
        return Template(
            template_name="errors/_toast.html.j2",
            context=context,
            status_code=status,
            headers={"HX-Retarget": "#toasts", "HX-Reswap": "beforeend", "Vary": "HX-Request", **(headers or {})},
        )
    template = f"errors/{status}.html.j2" if status in {403, 404, 429, 500} else "errors/error.html.j2"
    return Template(
        template_name=template, context=context, status_code=status, headers={"Vary": "HX-Request", **(headers or {})}
    )


def application_error_handler(request: Request[Any, Any, Any], exc: ApplicationError) -> Response[Any]:
    if isinstance(exc, NotYoursError):
        log_denial(request.scope, "not_owner", status=exc.status_code, resource=exc.resource, object_id=exc.object_id)
    elif isinstance(exc, PermissionDeniedError):
        log_denial(request.scope, "forbidden", status=exc.status_code)
    headers = exc.headers if isinstance(exc, RateLimitedError) else None
    return _error_response(request, exc.status_code, exc.message, headers)


def not_signed_in_handler(request: Request[Any, Any, Any], _: NotSignedInError) -> Response[Any]:
    target = f"{request.app.route_reverse('accounts:login')}?{urlencode({'next_url': request.url.path})}"
    if request.headers.get("hx-request") == "true":
        return Response(content=b"", status_code=200, headers={"HX-Redirect": target})
    return Redirect(path=target, status_code=HTTP_303_SEE_OTHER)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, NotAuthorizedException):
        return not_signed_in_handler(request, NotSignedInError())
    if isinstance(exc, NotFoundException):
        message = "We couldn't find that page."
    elif isinstance(exc, PermissionDeniedException):
        # Our CSRF middleware raises this too: say what the person can do about it.
        if "CSRF" in (exc.detail or ""):
            message = "Your form expired. Reload the page and try again."
        elif exc.detail == CROSS_SITE:
            message = "That request came from another website, so we didn't act on it. Use the form on our page."
        else:
            message = "You don't have access to that page."
    elif isinstance(exc, ValidationException):
        message = "Some of what was sent could not be understood."
    else:
        message = exc.detail if status < 500 else "Please try again in a moment."
    if status >= 500:  # Litestar's own 5xx (a template that fails to render, a missing route name): log it
        log.error(
            "request.http_error", path=request_path(request.scope), status=status, detail=exc.detail, exc_info=exc
        )
    return _error_response(request, status, message)


def stripe_error_handler(request: Request[Any, Any, Any], exc: stripe.StripeError) -> Response[Any]:
    """Stripe unreachable, rate-limited or refusing: a clear "try again", never a traceback page."""
    log.warning("request.stripe_error", path=request_path(request.scope), error=type(exc).__name__, code=exc.code)
    if isinstance(exc, stripe.CardError):
        return _error_response(request, 402, exc.user_message or "Your card was declined.")
    return _error_response(request, 503, "We couldn't reach the payment processor. Please try again in a moment.")


RETRY_AFTER = {"Retry-After": "30"}


def redis_unavailable_handler(request: Request[Any, Any, Any], exc: RedisError) -> Response[Any]:
    """Redis down or hung under a signed-in page (sessions live there): a clear 503, never a 500. Anonymous
    browsing does not get here: its Redis uses (caches, rate limits) fall back to the database."""
    runtime = request.app.state.get("runtime")
    if runtime is not None:
        breaker_for(runtime.redis).trip()
    metrics.REDIS_ERRORS.labels("request").inc()
    log.warning("request.redis_unavailable", path=request_path(request.scope), error=type(exc).__name__)
    message = "Signing in, carts and accounts are unavailable for a moment. Browsing the shop still works."
    return _error_response(request, 503, message, RETRY_AFTER)


def database_unavailable_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The database refused, timed out or dropped the connection: 503 with Retry-After, within the timeouts."""
    log.error("request.database_unavailable", path=request_path(request.scope), error=type(exc).__name__)
    return _error_response(request, 503, "We're briefly unavailable. Please try again in a minute.", RETRY_AFTER)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("request.unhandled_error", path=request_path(request.scope), error=type(exc).__name__)
    return _error_response(request, 500, "We've logged the problem. Please try again in a moment.")


__all__ = [
    "application_error_handler",
    "database_unavailable_handler",
    "http_exception_handler",
    "internal_error_handler",
    "not_signed_in_handler",
    "redis_unavailable_handler",
    "stripe_error_handler",
    "wants_fragment",
]
