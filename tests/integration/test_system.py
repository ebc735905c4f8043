"""Probes, error pages, request logging and the migrated schema."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import httpx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from litestar import Litestar
from sqlalchemy import text

import app.db.models  # noqa: F401
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from tests.conftest import Factory


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).text == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"database": "ok", "redis": "ok", "webhooks": "ok", "service": "full"}


async def test_readyz_keeps_the_webhook_intake_in_rotation_when_redis_is_unreachable(settings: Settings) -> None:
    from app.server.plugin import ApplicationCore

    broken = Runtime(dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0"))
    application = Litestar(plugins=[ApplicationCore(broken)])
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/readyz")
    assert response.status_code == 200  # the database answers: webhooks and the catalog still work
    assert response.json()["database"] == "ok"
    assert response.json()["redis"].startswith("error:")
    assert (response.json()["webhooks"], response.json()["service"]) == ("ok", "degraded")
    await broken.alchemy.get_engine().dispose()


async def test_unknown_page_is_a_friendly_404_and_htmx_gets_a_toast(client: httpx.AsyncClient) -> None:
    page = await client.get("/no/such/page")
    assert page.status_code == 404
    assert "<h1>Page not found</h1>" in page.text
    toast = await client.get("/no/such/page", headers={"HX-Request": "true"})
    assert toast.status_code == 404
    assert toast.headers["hx-retarget"] == "#toasts"
    assert "<html" not in toast.text


async def test_pages_carry_csrf_token_for_htmx_and_load_vendored_htmx(client: httpx.AsyncClient) -> None:
    html = (await client.get("/login")).text
    token = client.cookies["cartwright_csrf"]
    assert f'hx-headers=\'{{"x-csrftoken": "{token}"}}\'' in html
    htmx = re.search(r'src="(/static/vendor/htmx-2\.0\.11\.min\.[0-9a-f]{10}\.js)"', html)
    assert htmx is not None  # fingerprinted by static_url (app/lib/static_assets.py)
    assert 'hx-indicator="#page-progress"' in html
    js = await client.get(htmx.group(1))
    assert js.status_code == 200 and "htmx" in js.text[:2000]


def test_migrations_produce_exactly_the_models_schema(migrated: Settings) -> None:
    """No drift: `alembic upgrade head` yields the schema the models describe (on this leg's database)."""
    from advanced_alchemy.base import metadata_registry

    runtime = Runtime(migrated)

    async def diff() -> list[object]:
        async with runtime.alchemy.get_engine().connect() as conn:

            def compare(sync_conn: object) -> list[object]:
                # SQLite reflects column types by affinity (a GUID comes back as NUMERIC), so types are compared
                # on PostgreSQL only; tables, columns, nullability, indexes and constraints on both.
                opts = {"compare_type": not migrated.is_sqlite}
                context = MigrationContext.configure(sync_conn, opts=opts)  # type: ignore[arg-type]
                return list(compare_metadata(context, metadata_registry.get(None)))

            result = await conn.run_sync(compare)
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            assert version
        await runtime.alchemy.get_engine().dispose()
        return result

    assert asyncio.run(diff()) == []


async def test_cookies_are_secure_when_the_shop_is_served_over_https(migrated: Settings, factory: Factory) -> None:
    from app.server.plugin import ApplicationCore

    await factory.user(email="ann@example.com")
    https_runtime = Runtime(dataclasses.replace(migrated, base_url="https://shop.example"))
    application = Litestar(plugins=[ApplicationCore(https_runtime)])
    async with application.lifespan():
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://shop.example") as client:
            page = await client.get("/login")
            assert "Secure" in page.headers["set-cookie"]  # the CSRF cookie, __Host- prefixed (docs/security.md)
            response = await client.post(
                "/login",
                data={"email": "ann@example.com", "password": "correct horse battery"},
                headers={"x-csrftoken": client.cookies["__Host-cartwright_csrf"]},
            )
            assert response.status_code == 303
            session = next(
                v
                for k, v in response.headers.multi_items()
                if k == "set-cookie" and v.startswith("__Host-cartwright_session=")
            )
            assert "Secure" in session and "HttpOnly" in session
    await https_runtime.close()
