"""Small helpers for talking to the app like a browser does."""

from __future__ import annotations

import re
from typing import Any

import httpx

CSRF_COOKIE = "cartwright_csrf"


async def csrf_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    """Load a page (as a browser would) and return the CSRF token the next unsafe request must carry."""
    response = await client.get(path)
    assert response.status_code in {200, 410}, response.text
    token = client.cookies.get(CSRF_COOKIE)
    assert token, "the page set no CSRF cookie"
    return token


async def post_form(client: httpx.AsyncClient, path: str, data: dict[str, str], *, htmx: bool = False,
                    token: str | None = None) -> Any:
    token = token or client.cookies.get(CSRF_COOKIE) or await csrf_token(client)
    headers = {"x-csrftoken": token}
    if htmx:
        headers["HX-Request"] = "true"
    return await client.post(path, data=data, headers=headers)


async def sign_in(client: httpx.AsyncClient, email: str, password: str = "correct horse battery") -> Any:
    response = await post_form(client, "/login", {"email": email, "password": password})
    assert response.status_code == 303, response.text
    return response


def session_cookie(client: httpx.AsyncClient) -> str | None:
    return client.cookies.get("cartwright_session")


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()
