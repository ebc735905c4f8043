"""Domain errors. Services raise these; `app.server.errors` maps them to pages, toasts and status codes."""

from __future__ import annotations


class ApplicationError(Exception):
    """Base of every error a user may be shown. ``message`` is safe to display."""

    status_code = 400

    def __init__(self, message: str = "Something went wrong.") -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(ApplicationError):
    status_code = 404

    def __init__(self, message: str = "We couldn't find that page.") -> None:
        super().__init__(message)


class NotYoursError(NotFoundError):
    """Another person's object: shown as "not found" (no probing), logged as a denial (``access_denied``)."""

    def __init__(self, message: str = "We couldn't find that page.", *, resource: str = "", object_id: object = None):
        super().__init__(message)
        self.resource = resource
        self.object_id = "" if object_id is None else str(object_id)


class PermissionDeniedError(ApplicationError):
    status_code = 403

    def __init__(self, message: str = "You don't have access to that page.") -> None:
        super().__init__(message)


class ConflictError(ApplicationError):
    status_code = 409


class RateLimitedError(ApplicationError):
    """Too many requests: answered 429, with ``Retry-After`` when ``retry_after`` (seconds) is known."""

    status_code = 429

    def __init__(self, message: str = "Too many requests. Please try again later.", *, retry_after: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds, for every 429 (a form that shows the error in place sends it too)."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}


class FormError(ApplicationError):
    """Invalid form input: carries field errors so the form can be re-rendered with them in place."""

    status_code = 422

    def __init__(self, errors: dict[str, str], message: str = "Please correct the errors below.") -> None:
        super().__init__(message)
        self.errors = errors
