"""Fixtures: every integration test runs once on SQLite and once on PostgreSQL, with real Redis and SMTP."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar
from litestar_saq import SAQPlugin
from redis.asyncio import Redis
from saq import Queue, Worker
from sqlalchemy import text

from app.db import models as m
from app.lib import queues
from app.lib.runtime import Runtime
from app.lib.settings import Settings, get_settings
from app.lib.shop_settings import SHOP_SETTINGS
from app.server.saq_worker import GracefulWorker, dequeue_timeout
from app.stripe_emulator.server import EmulatorServer, free_port, run_emulator
from tests.support import (
    Mailbox,
    app_environment,
    create_postgres_database,
    postgres_admin_url,
    redis_test_url,
    smtp_server,
    tcp_reachable,
)

BACKENDS = ["sqlite", "postgres"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()) and "[postgres" in item.nodeid:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def smtp() -> Iterator[tuple[str, Mailbox]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def mailbox(smtp: tuple[str, Mailbox]) -> Mailbox:
    smtp[1].clear()
    return smtp[1]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    if not tcp_reachable(postgres_admin_url(), 5432):
        message = f"PostgreSQL not reachable at {postgres_admin_url()} (set TEST_DATABASE_URL)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing PostgreSQL is a failure, never a silent pass
        pytest.skip(message)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return create_postgres_database(f"cartwright_test_{worker}")


WEBHOOK_SECRET = "whsec_cartwright_tests"


@pytest.fixture(scope="session")
def app_port() -> int:
    """The port the app listens on for real HTTP (the emulator's webhooks); both database legs reuse it."""
    return free_port()


@pytest.fixture(scope="session")
def stripe_emulator(app_port: int) -> Iterator[EmulatorServer]:
    """The offline Stripe, delivering signed webhooks to the app's real HTTP port (see ``app_server``)."""
    with run_emulator(
        webhook_url=f"http://127.0.0.1:{app_port}/webhooks/stripe",
        webhook_secret=WEBHOOK_SECRET,
        retry_base=0.2,
        max_attempts=8,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def test_env(
    database_url: str,
    smtp: tuple[str, Mailbox],
    tmp_path_factory: pytest.TempPathFactory,
    stripe_emulator: EmulatorServer,
) -> Iterator[dict[str, str]]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = 10 + int(worker.removeprefix("gw") or 0) * 2 + (0 if database_url.startswith("sqlite") else 1)
    env = app_environment(
        database_url=database_url,
        redis_url=redis_test_url(index),
        smtp_url=smtp[0],
        var_dir=tmp_path_factory.mktemp("var"),
    )
    env.update(
        {
            "STRIPE_SECRET_KEY": "sk_test_cartwright_tests",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_cartwright_tests",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": stripe_emulator.url,
            "SUBSCRIPTION_CHECKOUT": "both",  # both ways to pay for a plan are under test
        }
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]) -> Settings:
    return get_settings()


def _migrate(settings: Settings) -> None:
    # Alembic's env.py runs its own event loop, so migrate from a thread with a runtime of its own.
    from app.cli.commands import migrate

    migrate(Runtime(settings))


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> Settings:
    await asyncio.to_thread(_migrate, settings)
    return settings


@pytest.fixture(scope="session")
async def app(migrated: Settings) -> AsyncIterator[Litestar]:
    from app.asgi import create_app

    application = create_app()
    # Run startup/shutdown in the tests' own event loop (Litestar's test client would use another loop,
    # which the app's pooled Redis and database connections cannot cross).
    # The lifespan lives in one task of its own because its task group must be exited where it was entered.
    started, stopping = asyncio.Event(), asyncio.Event()

    async def host() -> None:
        async with application.lifespan():
            started.set()
            await stopping.wait()

    task = asyncio.create_task(host())
    await started.wait()
    yield application
    stopping.set()
    await task


@pytest.fixture(scope="session")
async def app_server(app: Litestar, app_port: int) -> AsyncIterator[str]:
    """The same app object also served over real HTTP in the tests' loop, so Stripe's webhooks can reach it."""
    # Listening before serving: connections wait in the backlog, so there is no start-up race to wait out.
    sock = socket.socket()
    # Accepted sockets inherit it. asyncio sets TCP_NODELAY only on proto=IPPROTO_TCP sockets, which this is not,
    # so without it each response's second write waits for a delayed ACK (~40 ms per request).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", app_port))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield f"http://127.0.0.1:{app_port}"
    server.should_exit = True
    await task


@pytest.fixture(scope="session")
def runtime(app: Litestar) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def _tables() -> list[str]:
    """Every table of the models, children first (so SQLite's row-by-row DELETEs respect foreign keys)."""
    from advanced_alchemy.base import orm_registry

    return [t.name for t in reversed(orm_registry.metadata.sorted_tables)]


_TABLES = _tables()


@pytest.fixture(autouse=True)
async def _clean_state(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every table and the Redis database before each test that uses the app."""
    if "runtime" not in request.fixturenames and "client" not in request.fixturenames:
        yield
        return
    runtime: Runtime = request.getfixturevalue("runtime")
    # Drop the previous test's undelivered webhooks first, so none lands in this test's clean database.
    emulator: EmulatorServer = request.getfixturevalue("stripe_emulator")
    await asyncio.to_thread(emulator.reset)
    await asyncio.to_thread(emulator.flush, 10)
    async with runtime.db() as db:
        if runtime.settings.is_sqlite:
            for table in _TABLES:
                await db.execute(text(f"DELETE FROM {table}"))
        else:
            await db.execute(text(f"TRUNCATE {', '.join(_TABLES)} CASCADE"))
        await db.commit()
    await runtime.redis.flushdb()
    SHOP_SETTINGS.forget()  # the previous test's shop settings are gone with its rows
    yield


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client: keeps cookies, does not follow redirects (tests assert them)."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as test_client:
        yield test_client


@pytest.fixture
async def new_browser(app: Litestar) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """Another browser on the same app, with cookies of its own (a second customer, staff, another device), closed
    after the test: ``other = new_browser()``, or ``new_browser(ip="198.51.100.20")`` from another address."""
    opened: list[httpx.AsyncClient] = []

    def make(ip: str = "203.0.113.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(ip, 50000))
        browser = httpx.AsyncClient(transport=transport, base_url="http://testserver.local")
        opened.append(browser)
        return browser

    yield make
    for browser in opened:
        await browser.aclose()


@pytest.fixture
def queue(app: Litestar) -> Queue:
    """The app's queue object: enqueues route to the payments, email or background queue (app/lib/queues.py)."""
    return app.plugins.get(SAQPlugin).get_queue(queues.BACKGROUND)


@pytest.fixture
async def worker(queue: Queue, client: httpx.AsyncClient, runtime: Runtime) -> AsyncIterator[Worker]:
    """Real SAQ workers, one per queue as ``cartwright workers run`` starts them, inside the test's event loop.
    Yields the background queue's worker."""
    from app.server.worker import (
        before_job,
        bind_job_context,
        on_worker_shutdown,
        on_worker_startup,
        record_job,
        tasks_for,
    )

    family = getattr(queue, "family", {queues.BACKGROUND: queue})
    workers = [
        GracefulWorker(  # ours, as `cartwright workers run` builds them: it renews the jobs' heartbeats
            family[name],
            functions=tasks_for(name),
            startup=[on_worker_startup],
            shutdown=[on_worker_shutdown],
            before_process=[bind_job_context, before_job],
            after_process=[record_job],
            concurrency=4,
            timers={"schedule": 1, "sweep": 1, "abort": 1},
            dequeue_timeout=dequeue_timeout(runtime.settings.redis_timeout),  # as the real workers wait
            enable_heartbeat_manager=False,
        )
        for name in queues.NAMES
    ]
    tasks = [asyncio.create_task(w.start()) for w in workers]
    yield workers[queues.NAMES.index(queues.BACKGROUND)]
    for saq_worker in workers:
        await saq_worker.stop()
    for task in tasks:
        task.cancel()


SetLimits = Callable[..., None]


@pytest.fixture
def rate_limits(runtime: Runtime) -> Iterator[SetLimits]:
    """Change rows of the live app's rate-limit table for one test, as ``RATE_LIMITS`` would at start-up:
    ``rate_limits(place_order_ip=(20, 600))``. Tests that make many requests from one client say so with it."""
    from app.lib.ratelimit import configured_policies

    limiter = runtime.rate_limiter
    saved = limiter.policies

    def set_limits(**rows: tuple[int, int]) -> None:
        overrides = tuple((name, limit, window) for name, (limit, window) in rows.items())
        limiter.policies = configured_policies(dataclasses.replace(runtime.settings, rate_limits=overrides))

    yield set_limits
    limiter.policies = saved


@pytest.fixture
async def redis(runtime: Runtime) -> Redis:
    return runtime.redis


# --- data factories -------------------------------------------------------------------------------------------


class Factory:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._n = 0

    async def user(
        self,
        *,
        email: str | None = None,
        password: str = "correct horse battery",
        role: str = "customer",
        name: str = "Test User",
        is_active: bool = True,
        verified: bool = False,
    ) -> m.User:
        from app.lib.passwords import hash_password

        self._n += 1
        user = m.User(
            email=email or f"user{self._n}@example.com",
            name=name,
            password_hash=hash_password(password),
            role=role,
            is_active=is_active,
            email_verified_at=datetime.now(UTC) if verified else None,
        )
        async with self.runtime.db() as db:
            db.add(user)
            await db.commit()
        return user

    async def category(self, *, slug: str = "ebooks", name: str = "E-books") -> m.Category:
        category = m.Category(slug=slug, name=name, description=f"All {name}")
        async with self.runtime.db() as db:
            db.add(category)
            await db.commit()
        return category

    async def product(self, **fields: Any) -> m.Product:
        self._n += 1
        values: dict[str, Any] = {
            "name": f"Product {self._n}",
            "slug": f"product-{self._n}",
            "price": 1000,
            "currency": "CAD",
            "summary": "A product",
            "description": "A useful product.",
            "cover_image": "img/logo.svg",
        }
        values.update(fields)
        product = m.Product(**values)
        async with self.runtime.db() as db:
            db.add(product)
            await db.commit()
        return product


@pytest.fixture
def factory(runtime: Runtime) -> Factory:
    return Factory(runtime)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def var_dir(settings: Settings) -> Path:
    return settings.var_dir
