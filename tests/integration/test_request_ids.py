"""Issue #14 item 3: one request id finds everything about a request: the response header, the error page the
person saw ("Reference: …"), the log lines it wrote, and the log lines of the jobs it enqueued."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from saq.worker import Worker
from structlog.testing import capture_logs

from tests.conftest import Factory
from tests.helpers import post_form, until


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Log entries as written, with the context bound for the request or job (``request_id``)."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
            yield entries
    finally:
        structlog.configure(wrapper_class=wrapper)


async def test_an_error_page_shows_the_id_of_the_response_header_and_the_log(
    client: httpx.AsyncClient, logs: list[dict[str, Any]]
) -> None:
    response = await client.get("/products/no-such-product")
    assert response.status_code == 404
    request_id = response.headers["x-request-id"]
    assert f"Reference: {request_id}" in response.text
    [line] = [e for e in logs if e.get("event") == "request" and e.get("status") == 404]
    assert line["request_id"] == request_id


async def test_an_htmx_error_toast_shows_the_id_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/products/no-such-product", headers={"HX-Request": "true"})
    assert response.status_code == 404
    assert f"Reference: {response.headers['x-request-id']}" in response.text


async def test_an_unknown_paths_404_has_an_id_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/no-such-page")  # answered by the router, before any route's middleware
    assert response.status_code == 404
    assert f"Reference: {response.headers['x-request-id']}" in response.text


async def test_an_untrusted_clients_id_is_replaced_on_the_page_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/no-such-page", headers={"X-Request-ID": "forged-id"})
    request_id = response.headers["x-request-id"]
    assert request_id != "forged-id"
    assert "forged-id" not in response.text
    assert f"Reference: {request_id}" in response.text


async def test_a_job_enqueued_by_a_request_logs_under_the_requests_id(
    client: httpx.AsyncClient, factory: Factory, worker: Worker, logs: list[dict[str, Any]]
) -> None:
    await factory.user(email="ann@example.com")
    response = await post_form(client, "/forgot-password", {"email": "ann@example.com"})
    request_id = response.headers["x-request-id"]

    async def sent() -> list[dict[str, Any]]:
        return [e for e in logs if e.get("event") == "email.sent"]

    # The reset email is sent by the worker, in a job of its own: its line carries the request's id.
    found = await until(sent, timeout=15, what="the reset email's job")
    [line] = found
    assert line["request_id"] == request_id
