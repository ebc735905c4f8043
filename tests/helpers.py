"""Small helpers for talking to the app like a browser does."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from saq import Job, Queue
from saq.job import TERMINAL_STATUSES
from selectolax.lexbor import LexborHTMLParser, LexborNode

CSRF_COOKIE = "cartwright_csrf"


async def csrf_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    """Load a page (as a browser would) and return the CSRF token the next unsafe request must carry."""
    response = await client.get(path)
    assert response.status_code in {200, 410}, response.text
    token = client.cookies.get(CSRF_COOKIE)
    assert token, "the page set no CSRF cookie"
    return token


async def post_form(
    client: httpx.AsyncClient, path: str, data: dict[str, str], *, htmx: bool = False, token: str | None = None
) -> Any:
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


# HTML is read with a real parser (selectolax's Lexbor, as a browser parses it) and CSS selectors, never with
# regular expressions or attribute-order-exact strings: a test then fails on what a user would notice, not on
# a reordered attribute.


def _text(node: LexborNode) -> str:
    return re.sub(r"\s+", " ", node.text(deep=True, separator=" ")).strip()


def text_of(html: str) -> str:
    """The page's text as a reader sees it: tags gone, entities decoded, whitespace collapsed."""
    tree = LexborHTMLParser(html)
    for node in tree.css("script, style, template"):
        node.decompose()
    return _text(tree.root) if tree.root is not None else ""


def select(html: str, css: str) -> list[LexborNode]:
    """Every element of ``html`` matching the CSS selector ``css``."""
    return list(LexborHTMLParser(html).css(css))


def select_one(html: str, css: str) -> LexborNode:
    """The one element matching ``css``; fails the test when there is none."""
    node = LexborHTMLParser(html).css_first(css)
    assert node is not None, f"no element matches {css!r}"
    return node


def texts(html: str, css: str) -> list[str]:
    """The text of each element matching ``css``, whitespace collapsed."""
    return [_text(node) for node in select(html, css)]


async def job_finished(queue: Queue, key: str, timeout: float = 15) -> Job:
    """Wait (on SAQ's own completion notification, not a sleep) until the job with ``key`` has finished."""
    job = await queue.job(key)
    assert job is not None, f"no job with key {key}"
    await until_complete(job, timeout)
    return job


async def until_complete(job: Job, timeout: float) -> None:
    """``job.refresh(until_complete=...)`` without its race: SAQ reads the job, then subscribes to its channel,
    so a job that finishes in between is never announced and the wait runs out. Listen in short turns (a
    missed announcement costs at most 0.25 s) and re-read the stored job after each, until it is done."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(TimeoutError):
            await job.refresh(until_complete=min(0.25, max(0.05, deadline - time.monotonic())))
        await job.refresh()
        if job.status in TERMINAL_STATUSES:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"job {job.key} still {job.status} after {timeout:.0f}s", pytrace=False)


async def until(condition: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> Any:
    """``wait_until`` for conditions that must be awaited (a database row, a job's state in Redis)."""
    deadline = time.monotonic() + timeout
    while not (result := await condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f}s for {what}", pytrace=False)
        await asyncio.sleep(0.05)
    return result
