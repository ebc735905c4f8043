"""The per-request Content-Security-Policy nonce: made once per request, on first use, and kept in the scope.

The template that renders first (``csp_nonce`` in every page's context, see app.lib.templating) and the security
headers written when the response starts (app.server.security_headers) both read it from here, so the nonce in
the header is the one on the page's ``<script>`` tags, whichever of the two asks first.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

NONCE_STATE_KEY = "csp_nonce"


def request_nonce(scope: Mapping[str, Any]) -> str:
    state: dict[str, Any] = scope["state"]  # Litestar gives every HTTP scope its state dict
    nonce = state.get(NONCE_STATE_KEY)
    if nonce is None:
        nonce = state[NONCE_STATE_KEY] = secrets.token_urlsafe(16)  # 128 bits, fresh for every request
    return str(nonce)


CSRF_USED_STATE_KEY = "csrf_token_used"


def mark_csrf_used(scope: Mapping[str, Any]) -> None:
    """A page put the CSRF token in its HTML: the browser must hold it as a cookie (app.server.csrf)."""
    scope["state"][CSRF_USED_STATE_KEY] = True


def csrf_used(scope: Mapping[str, Any]) -> bool:
    return bool(scope["state"].get(CSRF_USED_STATE_KEY))
